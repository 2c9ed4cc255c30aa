"""Tests for `keras_gdzoo.Rprop` (Igel & Huesken's four Rprop variants).

Expected values come from `torch.optim.Rprop` (iRprop-), from a NumPy
transcription of Igel & Huesken's algorithm boxes written below (one weight
at a time, exactly as the boxes read) and from closed forms.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import FunctionObjective

VARIANTS = ["rprop+", "rprop-", "irprop+", "irprop-"]


# -- test functions ------------------------------------------------------------
def rosenbrock_tf(w):
    return tf.reduce_sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)


def rosenbrock_np(w):
    return float(np.sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2))


def rosenbrock_gradient_np(w):
    """Closed-form gradient of the chained Rosenbrock function."""
    gradient = np.zeros_like(w)
    valley = w[1:] - w[:-1] ** 2
    gradient[:-1] += -400.0 * w[:-1] * valley - 2.0 * (1.0 - w[:-1])
    gradient[1:] += 200.0 * valley
    return gradient


def barrier_tf(w):
    """sum (w-3)^2 - log(2-w): NaN for w > 2, minimum inside, near the edge."""
    return tf.reduce_sum((w - 3.0) ** 2 - tf.math.log(2.0 - w))


def barrier_np(w):
    with np.errstate(invalid="ignore"):
        return float(np.sum((w - 3.0) ** 2 - np.log(2.0 - w)))


# 2 (w-3) + 1/(2-w) = 0  <=>  2w^2 - 10w + 11 = 0, the root below 2.
BARRIER_MINIMUM = (10.0 - math.sqrt(12.0)) / 4.0


def run(variant, function, w0, iterations, dtype="float64", jit_compile=False, **kwargs):
    solver = gz.Rprop(variant=variant, **kwargs)
    objective = FunctionObjective(function, size=len(w0), dtype=dtype)
    _, history = solver.minimize(
        objective, tf.constant(w0, dtype), iterations=iterations, jit_compile=jit_compile
    )
    return history


def iterates(history):
    return np.array([record["w"] for record in history])


# -- Igel & Huesken's pseudo-code, transcribed --------------------------------
def igel_huesken(variant, w0, steps, eta_minus, eta_plus, initial_step, min_step, max_step):
    """Rprop+ (Fig. 1), Rprop- (Fig. 2), iRprop- (Fig. 3), iRprop+ (Fig. 4)
    of Igel & Huesken (2000) on the chained Rosenbrock function.

    Returns the iterates and, per step, the number of sign changes, the
    number of weights backtracked and whether E(t) > E(t-1).
    """
    w = np.array(w0, dtype=np.float64)
    delta = np.full_like(w, initial_step)  # Delta_ij(t-1)
    dw = np.zeros_like(w)  # Delta w_ij(t-1)
    g_old = np.zeros_like(w)  # dE/dw_ij(t-1), as stored
    e_old = None
    trajectory, changes, backtracks, rose = [w.copy()], [], [], []
    for _ in range(steps):
        e, g = rosenbrock_np(w), rosenbrock_gradient_np(w)
        w_new = w.copy()
        n_changes = n_backtracks = 0
        for j in range(w.size):
            if g_old[j] * g[j] > 0:
                delta[j] = min(delta[j] * eta_plus, max_step)
                dw[j] = -np.sign(g[j]) * delta[j]
                w_new[j] = w[j] + dw[j]
            elif g_old[j] * g[j] < 0:
                n_changes += 1
                delta[j] = max(delta[j] * eta_minus, min_step)
                if variant == "rprop+":
                    w_new[j] = w[j] - dw[j]
                    n_backtracks += 1
                    g[j] = 0.0
                elif variant == "irprop+":
                    if e > e_old:
                        w_new[j] = w[j] - dw[j]
                        n_backtracks += 1
                    g[j] = 0.0
                elif variant == "irprop-":
                    g[j] = 0.0  # so w_ij(t+1) = w_ij(t) - sign(0) Delta = w_ij(t)
                else:  # rprop-
                    dw[j] = -np.sign(g[j]) * delta[j]
                    w_new[j] = w[j] + dw[j]
            else:
                dw[j] = -np.sign(g[j]) * delta[j]
                w_new[j] = w[j] + dw[j]
        changes.append(n_changes)
        backtracks.append(n_backtracks)
        rose.append(e_old is not None and e > e_old)
        g_old, e_old, w = g, e, w_new
        trajectory.append(w.copy())
    return np.array(trajectory), np.array(changes), np.array(backtracks), np.array(rose)


W0_4D = [-1.2, 1.0, -0.5, 0.8]
SETTINGS = dict(eta_minus=0.5, eta_plus=1.2, initial_step=0.3, min_step=1e-3, max_step=0.35)


# -- against independent implementations --------------------------------------
def test_irprop_minus_matches_torch():
    torch = pytest.importorskip("torch")
    history = run("irprop-", rosenbrock_tf, W0_4D, 40, **SETTINGS)
    assert len(history) == 41

    p = torch.tensor(W0_4D, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.Rprop(
        [p],
        lr=SETTINGS["initial_step"],
        etas=(SETTINGS["eta_minus"], SETTINGS["eta_plus"]),
        step_sizes=(SETTINGS["min_step"], SETTINGS["max_step"]),
    )
    hit_min = hit_max = False
    for k, record in enumerate(history[1:]):
        optimizer.zero_grad()
        loss = torch.sum(100.0 * (p[1:] - p[:-1] ** 2) ** 2 + (1.0 - p[:-1]) ** 2)
        loss.backward()
        optimizer.step()
        np.testing.assert_allclose(record["w"], p.detach().numpy(), rtol=1e-12, atol=1e-14)
        step_size = optimizer.state[p]["step_size"].numpy()
        np.testing.assert_allclose(record["step_size_mean"], step_size.mean(), rtol=1e-12)
        assert record["evaluations"] == (2.0 if k == 0 else 1.0)
        hit_min |= bool(np.any(step_size == SETTINGS["min_step"]))
        hit_max |= bool(np.any(step_size == SETTINGS["max_step"]))
    # The run exercises both clamps and the sign-change branch.
    assert hit_min and hit_max
    assert sum(record["sign_changes"] for record in history[1:]) > 0


@pytest.mark.parametrize("variant", VARIANTS)
def test_variant_matches_igel_huesken_pseudo_code(variant):
    settings = dict(SETTINGS, max_step=50.0)
    history = run(variant, rosenbrock_tf, W0_4D, 30, **settings)
    expected, changes, backtracks, rose = igel_huesken(variant, W0_4D, 30, **settings)

    np.testing.assert_allclose(iterates(history), expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal([r["sign_changes"] for r in history[1:]], changes)
    np.testing.assert_array_equal([r["backtracked"] for r in history[1:]], backtracks)
    # The run covers what distinguishes the variants: sign changes while
    # the error rose and while it fell.
    assert np.any((changes > 0) & rose) and np.any((changes > 0) & ~rose)
    if variant in ("rprop-", "irprop-"):
        assert not backtracks.any()
    else:
        assert backtracks.any()


@pytest.mark.parametrize(
    "w0, error_rose", [([-1.2, 1.0], True), (W0_4D, False)], ids=["error-rose", "error-fell"]
)
def test_variants_differ_exactly_at_the_first_sign_change(w0, error_rose):
    settings = dict(SETTINGS, initial_step=0.1, max_step=50.0)
    paths = {v: iterates(run(v, rosenbrock_tf, w0, 8, **settings)) for v in VARIANTS}
    common = paths["rprop-"]
    signs = np.sign([rosenbrock_gradient_np(w) for w in common])
    t1 = next(t for t in range(1, len(common)) if np.any(signs[t - 1] * signs[t] < 0))
    changed = signs[t1 - 1] * signs[t1] < 0
    rose = rosenbrock_np(common[t1]) > rosenbrock_np(common[t1 - 1])
    assert rose == error_rose

    # No sign change yet: every variant takes the same steps.
    for variant in VARIANTS:
        np.testing.assert_array_equal(paths[variant][: t1 + 1], common[: t1 + 1])
        np.testing.assert_array_equal(paths[variant][t1 + 1, ~changed], common[t1 + 1, ~changed])
    after = {v: paths[v][t1 + 1, changed] for v in VARIANTS}
    # rprop+: back to w(t-1); irprop-: held; rprop-: a step of
    # eta_minus * Delta(t-1) against the gradient, Delta(t-1) = |w(t) - w(t-1)|.
    np.testing.assert_allclose(after["rprop+"], common[t1 - 1, changed], rtol=1e-12)
    np.testing.assert_array_equal(after["irprop-"], common[t1, changed])
    last_step = np.abs(common[t1, changed] - common[t1 - 1, changed])
    np.testing.assert_allclose(
        after["rprop-"] - common[t1, changed],
        -signs[t1, changed] * settings["eta_minus"] * last_step,
        rtol=1e-12,
    )
    # irprop+ backtracks like rprop+ exactly when the error rose.
    twin, other = ("rprop+", "irprop-") if rose else ("irprop-", "rprop+")
    np.testing.assert_array_equal(paths["irprop+"][t1 + 1], paths[twin][t1 + 1])
    assert not np.array_equal(paths["irprop+"][t1 + 1], paths[other][t1 + 1])


def test_plus_variants_agree_until_their_definitions_differ():
    settings = dict(SETTINGS, initial_step=0.1, max_step=50.0)
    paths = {v: iterates(run(v, rosenbrock_tf, W0_4D, 30, **settings)) for v in VARIANTS}

    # irprop+ == irprop- until irprop+ meets a sign change with E(t) > E(t-1).
    _, changes, _, rose = igel_huesken("irprop+", W0_4D, 30, **settings)
    t = int(np.argmax((changes > 0) & rose))
    assert changes[t] > 0 and rose[t]
    np.testing.assert_array_equal(paths["irprop+"][: t + 1], paths["irprop-"][: t + 1])
    assert not np.array_equal(paths["irprop+"][t + 1], paths["irprop-"][t + 1])

    # rprop+ == irprop+ until rprop+ meets a sign change with E(t) <= E(t-1).
    _, changes, _, rose = igel_huesken("rprop+", W0_4D, 30, **settings)
    t = int(np.argmax((changes > 0) & ~rose))
    assert changes[t] > 0 and not rose[t]
    np.testing.assert_array_equal(paths["rprop+"][: t + 1], paths["irprop+"][: t + 1])
    assert not np.array_equal(paths["rprop+"][t + 1], paths["irprop+"][t + 1])


def test_every_variant_converges_on_a_parabola_in_float32():
    target = np.array([1.5, -0.7, 0.2], np.float32)
    scale = tf.constant([1.0, 10.0, 100.0], tf.float32)
    for variant in VARIANTS:
        history = run(
            variant,
            lambda w: tf.reduce_sum(scale * (w - target) ** 2),
            [0.0, 0.0, 0.0],
            50,
            dtype="float32",
        )
        assert history[-1]["w"].dtype == np.float32
        np.testing.assert_allclose(history[-1]["w"], target, atol=1e-3, err_msg=variant)


# -- non-finite safety ----------------------------------------------------------
def test_a_step_into_nan_is_undone():
    for variant in VARIANTS:
        history = run(variant, barrier_tf, [0.0, 0.5], 60, initial_step=1.0)
        path = iterates(history)
        assert np.all(np.isfinite(path))
        rejected = [k for k in range(1, len(history)) if history[k]["nonfinite"] > 0]
        assert rejected, "the run should step over w = 2 at least once"
        for k in range(1, len(history)):
            # Never lands where E is NaN: the proposed step is evaluated and
            # refused (the weights stay, reported as `nonfinite`).
            assert math.isfinite(barrier_np(path[k])), (variant, k)
            if k in rejected:
                np.testing.assert_array_equal(path[k], path[k - 1])
        assert not any(record[STOP] for record in history[1:])
        np.testing.assert_allclose(path[-1], [BARRIER_MINIMUM] * 2, atol=1e-4, err_msg=variant)


def test_jit_compile_gives_the_same_iterates():
    eager = run("irprop+", barrier_tf, [0.0, 0.5], 30, initial_step=1.0)
    compiled = run("irprop+", barrier_tf, [0.0, 0.5], 30, initial_step=1.0, jit_compile=True)
    # The run covers the non-finite branch too.
    assert any(record["nonfinite"] for record in compiled[1:])
    np.testing.assert_allclose(iterates(compiled), iterates(eager), rtol=1e-12)


def test_nan_at_the_start_stops_without_moving():
    w0 = np.array([0.5, -1.0])
    history = run("irprop+", lambda w: tf.reduce_sum(w**2) + tf.math.log(w[0] - 1.0), w0, 10)
    assert len(history) == 2
    assert history[1][STOP] == 1.0 and history[1]["nonfinite"] == 1.0
    np.testing.assert_array_equal(history[1]["w"], w0)
    assert gz.Rprop.stop_message


def test_an_overflowing_step_is_refused_and_shrunk():
    big = 1e308
    history = run(
        "rprop-", lambda w: -tf.reduce_sum(w), [big], 3,
        initial_step=big, min_step=1e300, max_step=big,
    )
    path = iterates(history)
    assert np.all(np.isfinite(path))
    # w + 1e308 overflows: kept, step halved; then w + 5e307 is taken.
    assert history[1]["nonfinite"] == 1.0
    np.testing.assert_array_equal(path[1], [big])
    np.testing.assert_allclose(history[1]["step_size_mean"], big / 2, rtol=1e-6)
    assert history[2]["nonfinite"] == 0.0
    np.testing.assert_allclose(path[2], [1.5 * big], rtol=1e-15)


# -- contract -------------------------------------------------------------------
def test_one_evaluation_per_step():
    calls = tf.Variable(0, dtype=tf.int64)

    def counted(w):
        calls.assign_add(1)
        return rosenbrock_tf(w)

    history = run("irprop+", counted, W0_4D, 12)
    # The first step evaluates its start and its proposal; every later one
    # starts from the proposal the step before evaluated.
    assert int(calls.numpy()) == 13
    assert [record["evaluations"] for record in history[1:]] == [2.0] + [1.0] * 11
    for record in history[1:]:
        for key in ("step_size_mean", "sign_changes", "backtracked", "nonfinite", STOP):
            assert isinstance(record[key], float)


def test_state_variables_hold_the_initial_values():
    solver = gz.Rprop(initial_step=0.25)
    solver.build([keras.Variable(np.zeros((2, 3))), keras.Variable(np.zeros(4))])
    assert solver.solver_size == 10
    state = {k: v.numpy() for k, v in solver.solver_state.items()}
    assert set(state) == {
        "step_size", "previous_gradient", "previous_update", "previous_loss",
        "point_value", "point_gradient", "point_known",
    }
    np.testing.assert_array_equal(state["step_size"], np.full(10, 0.25, np.float32))
    np.testing.assert_array_equal(state["previous_gradient"], np.zeros(10))
    np.testing.assert_array_equal(state["previous_update"], np.zeros(10))
    assert state["previous_loss"].shape == ()


def test_fit_through_wrap_and_resume_from_a_keras_file(tmp_path, rng):
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Rprop(), loss="mse")
    first = trainer.fit(x, y, batch_size=len(x), epochs=6, verbose=0).history
    # Batch mode: the start of each step is the proposal the step before
    # evaluated (only the first step evaluates twice).
    assert first["evaluations"] == [2.0] + [1.0] * 5
    assert first["loss"][-1] < first["loss"][0]
    assert sum(first["sign_changes"]) > 0
    path = str(tmp_path / "rprop.keras")
    trainer.save(path)
    # The step sizes, stored gradient, update and loss travel with the file.
    resumed = keras.saving.load_model(path)
    np.testing.assert_array_equal(
        resumed.optimizer.solver_state["step_size"].numpy(),
        trainer.optimizer.solver_state["step_size"].numpy(),
    )
    continued = trainer.fit(x, y, batch_size=len(x), epochs=3, verbose=0).history
    after_load = resumed.fit(x, y, batch_size=len(x), epochs=3, verbose=0).history
    np.testing.assert_allclose(after_load["loss"], continued["loss"], rtol=1e-6)
    for a, b in zip(resumed.get_weights(), trainer.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_defaults_follow_the_design():
    solver = gz.Rprop()
    assert (solver.variant, solver.eta_minus, solver.eta_plus) == ("irprop+", 0.5, 1.2)
    assert (solver.initial_step, solver.min_step, solver.max_step) == (0.1, 1e-6, 50.0)
    assert isinstance(solver, gz.Solver)
    assert gz.Rprop(variant="iRprop-").variant == "irprop-"


def test_config_round_trip():
    solver = gz.Rprop(
        variant="rprop-", eta_minus=0.3, eta_plus=1.5, initial_step=0.05,
        min_step=1e-4, max_step=2.0, name="my_rprop",
    )
    config = solver.get_config()
    for key, value in dict(
        variant="rprop-", eta_minus=0.3, eta_plus=1.5, initial_step=0.05,
        min_step=1e-4, max_step=2.0, name="my_rprop",
    ).items():
        assert config[key] == value
    assert gz.Rprop.from_config(config).get_config() == config
    assert keras.saving.get_registered_name(gz.Rprop) == "keras_gdzoo>Rprop"
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(solver))
    assert isinstance(restored, gz.Rprop)
    assert restored.get_config() == config


INVALID = [
    # (arguments, the argument the message names)
    (dict(variant="rprop"), "variant"),
    (dict(variant="iRprop"), "variant"),
    (dict(variant=None), "variant"),
    (dict(eta_minus=0.0), "eta_minus"),
    (dict(eta_minus=1.0), "eta_minus"),
    (dict(eta_minus=1.5), "eta_minus"),
    (dict(eta_minus=float("nan")), "eta_minus"),
    (dict(eta_plus=1.0), "eta_plus"),
    (dict(eta_plus=0.9), "eta_plus"),
    (dict(eta_plus=float("inf")), "eta_plus"),
    (dict(eta_plus="1.2"), "eta_plus"),
    (dict(min_step=0.0), "min_step"),
    (dict(min_step=-1e-6), "min_step"),
    (dict(initial_step=1e-7), "initial_step"),
    (dict(initial_step=None), "initial_step"),
    (dict(max_step=0.05), "max_step"),
    (dict(max_step=float("inf")), "max_step"),
    (dict(initial_step=51.0), "max_step"),  # max_step=50 < initial_step
]


def test_invalid_arguments_are_refused_by_name():
    for arguments, named in INVALID:
        with pytest.raises(ValueError, match=f"Argument `{named}`.*Received: {named}="):
            gz.Rprop(**arguments)
    with pytest.raises(ValueError) as info:
        gz.Rprop(eta_plus=0.9)
    assert str(info.value) == "Argument `eta_plus` must be > 1. Received: eta_plus=0.9"
