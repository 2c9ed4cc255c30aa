"""The `gdzoo` command, driven in-process through `cli.main`."""

import csv
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image

import keras_gdzoo as gz
from keras_gdzoo import cli
from keras_gdzoo import methods
from keras_gdzoo import problems
from keras_gdzoo.cli import common as cli_common
from keras_gdzoo.cli import compare as cli_compare
from keras_gdzoo.cli import init as cli_init
from keras_gdzoo.cli import output as cli_output
from keras_gdzoo.cli import plots as cli_plots
from keras_gdzoo.cli import trajectories as cli_trajectories
from keras_gdzoo.solvers.base import STOP


def _rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_png(path):
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0  # something was drawn


def _assert_one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.startswith("gdzoo") and "error:" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def _compare(tmp_path, *extra):
    return cli.main(["compare", "--problem", "sin", "--seeds", "1", "--out", str(tmp_path),
                     *extra])


# -- compare ------------------------------------------------------------------
def test_compare_writes_table_csv_json_and_plots(tmp_path, capsys):
    assert _compare(tmp_path, "--methods", "gd,adam", "--epochs", "3", "--seeds", "2") == 0
    out = capsys.readouterr().out
    assert "method" in out and "success" in out and "seconds to goal" in out
    rows = _rows(tmp_path / "compare-sin-runs.csv")
    assert [(r["method"], r["seed"]) for r in rows] == [
        ("gd", "0"), ("gd", "1"), ("adam", "0"), ("adam", "1")]
    summary = _rows(tmp_path / "compare-sin-summary.csv")
    assert [r["method"] for r in summary] == ["gd", "adam"]
    data = json.loads((tmp_path / "compare-sin.json").read_text())
    assert data["goal"] == 0.002 and data["epochs"] == 3 and data["batch_size"] == 41
    for run in data["runs"]:
        assert run["status"] in {"goal", "not reached"}
        assert len(run["losses"]) == len(run["seconds"]) <= 4
        assert run["seconds"] == sorted(run["seconds"])
    for name in ("compare-sin.png", "compare-sin-loss-vs-epochs.png",
                 "compare-sin-loss-vs-seconds.png"):
        _assert_png(tmp_path / name)


def test_compare_records_the_loss_after_each_epoch(tmp_path):
    """The throw-away tracing step is undone: the recorded losses equal those
    of plain full-batch gradient descent from the same initial weights."""
    problem = problems.get("sin")
    run = cli_compare.train_once(problem, "gd", "gd", None, seed=0, epochs=4,
                                 batch_size=problem.n, goal=None)
    assert run.status == "not reached" and run.epochs_run == 4

    model = problem.build_model(0)
    x, y = tf.constant(problem.x_train), tf.constant(problem.y_train)
    learning_rate = methods.METHODS["gd"].learning_rate
    expected = []
    for _ in range(5):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x) - y))
        expected.append(float(loss))
        for variable, gradient in zip(model.trainable_variables,
                                      tape.gradient(loss, model.trainable_variables)):
            variable.assign(variable - learning_rate * gradient)
    np.testing.assert_allclose(run.losses, expected, rtol=1e-5)


def test_compare_solver_state_is_restored_after_tracing():
    """LM's damping changes on the throw-away step; it must start afresh."""
    problem = problems.get("sin")
    run = cli_compare.train_once(problem, "lm", "lm", None, seed=1, epochs=3,
                                 batch_size=problem.n, goal=None)
    trainer = gz.wrap(problem.build_model(1))
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    trainer.fit(problem.x_train, problem.y_train, batch_size=problem.n, epochs=3, verbose=0,
                shuffle=False)
    prediction = trainer.model.predict(problem.x_train, verbose=0)
    np.testing.assert_allclose(run.losses[3], np.mean((prediction - problem.y_train) ** 2),
                               rtol=1e-4)


def test_compare_stops_at_the_goal(tmp_path):
    problem = problems.get("sin")
    loss_0 = float(np.mean((problem.build_model(0)(problem.x_train) - problem.y_train) ** 2))
    goal = 1.5 * loss_0  # met after the first epoch by a method that does not diverge
    assert _compare(tmp_path, "--methods", "gd", "--epochs", "50", "--goal", str(goal)) == 0
    (row,) = _rows(tmp_path / "compare-sin-runs.csv")
    assert row["status"] == "goal" and row["epochs_to_goal"] == "1" and row["epochs_run"] == "1"
    assert float(row["seconds_to_goal"]) > 0


def test_compare_reports_failures_without_stopping(tmp_path, monkeypatch, capsys):
    class GiveUp(gz.Solver):
        stop_message = "it always gives up"

        def step(self, w, state, objective):
            return w, state, {STOP: tf.constant(1.0, w.dtype)}

    monkeypatch.setattr(gz, "GiveUp", GiveUp, raising=False)
    monkeypatch.setitem(methods.METHODS, "lm",
                        methods.Method("LevenbergMarquardt", {"damping": -1.0}))
    monkeypatch.setitem(methods.METHODS, "newton", methods.Method("GiveUp"))
    code = _compare(tmp_path, "--methods", "gd:1e4,lm,newton,gd", "--epochs", "20")
    assert code == 0
    status = {r["method"]: r for r in _rows(tmp_path / "compare-sin-runs.csv")}
    assert status["gd:1e4"]["status"] == "diverged"
    assert status["lm"]["status"] == "error" and "damping" in status["lm"]["message"]
    assert status["newton"]["status"] == "stopped"
    assert "it always gives up" in status["newton"]["message"]
    assert int(status["newton"]["epochs_run"]) < 20
    assert status["gd"]["status"] in {"goal", "not reached"}
    assert "Traceback" not in capsys.readouterr().err


def test_every_method_builds_its_optimizer():
    for name, method in methods.METHODS.items():
        optimizer = method.build()
        assert isinstance(optimizer, keras.optimizers.Optimizer), name
        assert isinstance(optimizer, gz.Solver) == method.is_solver, name
    assert float(methods.METHODS["gd"].build(0.5).learning_rate) == pytest.approx(0.5)
    assert methods.METHODS["rprop"].build().variant == "irprop+"
    assert [m[1:] for m in cli_common.parse_methods("gd:0.5, adam")] == [
        ("gd", 0.5), ("adam", None)]


def test_compare_mnist_through_mocked_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=64):
        code = cli.main(["compare", "--problem", "mnist", "--data-dir", str(tmp_path),
                         "--methods", "adam", "--epochs", "1", "--seeds", "1",
                         "--out", str(tmp_path)])
    assert code == 0
    (row,) = _rows(tmp_path / "compare-mnist-runs.csv")
    assert row["method"] == "adam" and row["epochs_run"] == "1"


def test_compare_missing_mnist_is_a_one_line_error(tmp_path, capsys):
    code = cli.main(["compare", "--problem", "mnist", "--data-dir", str(tmp_path / "none"),
                     "--out", str(tmp_path)])
    assert code == 1
    assert "mnist" in _assert_one_line_error(capsys).lower()


# -- trajectories ---------------------------------------------------------------
def test_trajectories_follow_the_update_equations(tmp_path, capsys):
    code = cli.main(["trajectories", "--function", "quadratic", "--methods", "gd,momentum,lm",
                     "--iterations", "3", "--out", str(tmp_path)])
    assert code == 0
    _assert_png(tmp_path / "trajectories-quadratic.png")
    rows = _rows(tmp_path / "trajectories-quadratic.csv")
    path = {m: np.array([[float(r["x"]), float(r["y"])] for r in rows if r["method"] == m])
            for m in ("gd", "momentum", "lm")}

    def gradient(w):  # E = (x^2 + 10 y^2) / 2
        return np.array([w[0], 10.0 * w[1]])

    start = np.array([-4.0, 1.5])
    rate = methods.METHODS["gd"].trajectory_rates["quadratic"]
    w, expected = start.copy(), [start.copy()]
    for _ in range(3):
        w = w - rate * gradient(w)
        expected.append(w)
    # The optimizers keep the learning rate in float32.
    np.testing.assert_allclose(path["gd"], expected, rtol=1e-6)

    rate, mu = methods.METHODS["momentum"].trajectory_rates["quadratic"], 0.95  # Sutskever's mu
    w, d, expected = start.copy(), np.zeros(2), [start.copy()]
    for _ in range(3):
        d = mu * d - rate * gradient(w)
        w = w + d
        expected.append(w)
    np.testing.assert_allclose(path["momentum"], expected, rtol=1e-6)

    # Gauss-Newton is exact on a quadratic written as residuals: LM lands
    # next to the minimum (0, 0) at once, up to its small damping.
    assert np.linalg.norm(path["lm"][1]) < 1e-2 * np.linalg.norm(start)
    out = capsys.readouterr().out
    assert "distance to minimum" in out


def test_trajectories_skip_lm_on_the_saddle(tmp_path, capsys):
    code = cli.main(["trajectories", "--function", "saddle", "--methods", "adam,lm",
                     "--iterations", "2", "--out", str(tmp_path)])
    assert code == 0
    assert "lm" in capsys.readouterr().out.split("skipped")[0].splitlines()[-1]
    assert {r["method"] for r in _rows(tmp_path / "trajectories-saddle.csv")} == {"adam"}


@pytest.mark.parametrize("function", ["rosenbrock", "beale"])
def test_residual_forms_match_the_functions(function):
    surface = problems.SURFACES[function]
    for w in ([-1.2, 1.0], [0.3, -0.7], [2.0, 0.25]):
        w = tf.constant(w, "float64")
        e = surface.residuals(w).numpy()
        np.testing.assert_allclose(0.5 * np.sum(e**2), float(surface.function(w)), rtol=1e-12)


# -- init -------------------------------------------------------------------------
def test_init_variances_follow_the_lecture(tmp_path):
    """Linear units with sigma^2 = 1/N keep D[y] and D[dL/dh] at 1 per layer."""
    width = 128
    code = cli.main(["init", "--depth", "3", "--width", str(width), "--samples", "500",
                     "--activation", "linear", "--schemes", f"normal:{width ** -0.5},normal:1",
                     "--out", str(tmp_path)])
    assert code == 0
    rows = _rows(tmp_path / "init-linear.csv")
    assert len(rows) == 6
    kept = [r for r in rows if r["scheme"] != "normal:1"]
    for row in kept:
        assert float(row["activation_variance"]) == pytest.approx(1.0, rel=0.25)
        assert float(row["gradient_variance"]) == pytest.approx(1.0, rel=0.25)
    # N sigma^2 = 128 per layer: D[y^3] = 128^3 D[x].
    exploding = [r for r in rows if r["scheme"] == "normal:1"]
    assert float(exploding[2]["activation_variance"]) == pytest.approx(width**3, rel=0.5)
    for kind in ("activations", "gradients", "variance"):
        _assert_png(tmp_path / f"init-linear-{kind}.png")


def test_init_tanh_small_weights_vanish():
    """tanh is linear near 0: with N sigma^2 = 64e-4 the variance shrinks by
    that factor per layer; Xavier's weights keep it of order one."""
    (small, _), (xavier, _) = (
        cli_init.layer_statistics(initializer, 4, 64, "tanh", 200, seed=0)
        for _, initializer in cli_init.parse_schemes("normal:0.01,xavier", "tanh")
    )
    for layer in range(1, 4):
        assert small[layer].var() == pytest.approx(64e-4 * small[layer - 1].var(), rel=0.3)
    assert xavier[3].var() > 0.05


# -- arguments -----------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["compare", "--methods", "gd,nope"],
    ["compare", "--problem", "nope"],
    ["compare", "--epochs", "0"],
    ["compare", "--seeds", "-1"],
    ["compare", "--seeds", "abc"],
    ["compare", "--methods", "lm:0.1"],
    ["compare", "--methods", "gd:-1"],
    ["compare", "--problem", "parity", "--samples", "10"],
    ["trajectories", "--function", "nope"],
    ["trajectories", "--methods", "gd,gd"],
    ["init", "--schemes", "nope"],
    ["init", "--activation", "nope"],
    ["init", "--depth", "0"],
    ["init", "--seed", "-1"],
    ["init", "--seed", "1.5"],
    ["init", "--seed", str(cli_common.MAX_SEED + 1)],
    ["compare", "--goal", "nan"],
    ["frobnicate"],
])
def test_bad_arguments_exit_2_with_one_line(argv, tmp_path, capsys):
    assert cli.main(argv + ["--out", str(tmp_path)] if argv != ["frobnicate"] else argv) == 2
    _assert_one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_help_and_no_command(capsys):
    assert cli.main(["--help"]) == 0
    assert "compare" in capsys.readouterr().out
    assert cli.main([]) == 2
    assert "trajectories" in capsys.readouterr().err


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "keras_gdzoo", "compare", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "--methods" in result.stdout and "irprop-" in result.stdout


# -- --out ---------------------------------------------------------------------------
_QUICK = {
    "compare": ["compare", "--methods", "gd", "--epochs", "1", "--seeds", "1"],
    "trajectories": ["trajectories", "--methods", "gd", "--iterations", "1"],
    "init": ["init", "--depth", "1", "--width", "2", "--samples", "2"],
}


@pytest.mark.parametrize("command", list(_QUICK))
@pytest.mark.parametrize("where", ["an existing file", "a path under a file", "under /proc"])
def test_bad_out_exits_2_with_one_line_before_any_work(command, where, tmp_path, capsys):
    if where == "under /proc" and not os.path.isdir("/proc/self"):
        pytest.skip("no /proc file system here")
    a_file = tmp_path / "results.csv"
    a_file.write_text("kept")
    out = {"an existing file": a_file, "a path under a file": a_file / "new",
           # a folder that even root cannot create files in
           "under /proc": "/proc/gdzoo-out"}[where]
    assert cli.main(_QUICK[command] + ["--out", str(out)]) == 2
    err = _assert_one_line_error(capsys)
    assert "--out" in err and str(out) in err
    assert capsys.readouterr().out == ""  # refused before the run began
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    assert a_file.read_text() == "kept"


def test_unwritable_out_folder_exits_2(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root may write into a chmod-000 folder; the check is tested with "
                    "os.access mocked (test_out_check_follows_os_access) and under /proc")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli.main(_QUICK["init"] + ["--out", str(locked / "new")]) == 2
    finally:
        locked.chmod(0o700)
    assert "permission denied" in _assert_one_line_error(capsys)
    assert not list(locked.iterdir())


def test_out_check_follows_os_access(tmp_path, monkeypatch, capsys):
    """The folder checked is the nearest existing one, for writing and entering."""
    out = tmp_path / "new" / "deeper"
    cli_common.check_out(str(out))  # writable: no error, nothing created
    assert not list(tmp_path.iterdir())
    asked = []

    def access(path, mode):
        asked.append((os.fspath(path), mode))
        return False

    monkeypatch.setattr(os, "access", access)
    with pytest.raises(cli_common.UsageError, match="permission denied"):
        cli_common.check_out(str(out))
    assert asked == [(str(tmp_path), os.W_OK | os.X_OK)]
    assert cli.main(_QUICK["trajectories"] + ["--out", str(out)]) == 2
    assert "cannot write into" in _assert_one_line_error(capsys)
    assert not list(tmp_path.iterdir())


def test_existing_out_folder_is_written_into(tmp_path):
    (tmp_path / "notes.txt").write_text("kept")
    assert cli.main(_QUICK["init"] + ["--out", str(tmp_path)]) == 0
    assert (tmp_path / "notes.txt").read_text() == "kept"
    assert (tmp_path / "init-tanh.csv").exists()


def test_a_write_failure_after_the_run_is_one_line_exit_1(tmp_path, monkeypatch, capsys):
    def full_disk(command, result, out):
        raise OSError(28, "No space left on device", str(out))

    monkeypatch.setattr(cli_output, "write", full_disk)
    assert cli.main(_QUICK["init"] + ["--out", str(tmp_path)]) == 1
    assert "No space left on device" in _assert_one_line_error(capsys)


# -- the package's parts ---------------------------------------------------------------
def test_run_computes_and_plots_draws_without_writing(tmp_path, monkeypatch):
    """`run(args)` returns a result and `plots` returns figures; only
    `output.write` touches the file system."""
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(
        ["trajectories", "--function", "quadratic", "--methods", "gd,lm", "--iterations", "2"])
    lines = []
    result = cli_trajectories.run(args, report=lines.append)
    assert set(result.paths) == {"gd", "lm"} and result.paths["gd"].shape == (3, 2)
    assert lines and lines[0].startswith("quadratic:")
    figures = cli_plots.trajectories(result)
    assert list(figures) == [""] and isinstance(figures[""], Figure)
    assert "distance to minimum" in cli_trajectories.summary(result)
    assert not list(tmp_path.iterdir())
    written = cli_output.write("trajectories", result, str(tmp_path / "out"))
    assert written == ["trajectories-quadratic.png", "trajectories-quadratic.csv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(written)
