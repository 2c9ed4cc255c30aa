"""`gz.wrap(model, micro_batch_size=b)`: objective evaluations in pieces of
at most b examples (issue 12, item 2).

The reference for every chunked quantity is the same objective on the whole
batch (itself checked against NumPy and SciPy in test_objectives.py,
test_curvature.py and test_matrix_free.py), plus one NumPy transcription of
E with a ragged piece, sample weights and a penalty that must count once.
Batches of 11 examples in pieces of 4 give pieces of 3, 4 and 4.
"""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import matrix_free
from keras_gdzoo.model import ModelObjective
from keras_gdzoo.objectives import over_micro_batches

N, PIECE = 11, 4


def _model(outputs=3, activation=None, penalty=0.0):
    keras.utils.set_random_seed(1)
    regularizer = keras.regularizers.L2(penalty) if penalty else None
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh", kernel_regularizer=regularizer),
            keras.layers.Dense(outputs, activation=activation),
        ]
    )


def _data(outputs=3, classes=False, weighted=False, n=N):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    if classes:
        y = np.eye(outputs)[rng.integers(0, outputs, size=n)]
    else:
        y = rng.normal(size=(n, outputs))
    weights = rng.uniform(0.5, 2.0, size=n) if weighted else None
    return x, y, weights


def _objectives(loss, activation=None, weighted=False, penalty=0.0, classes=False):
    """(whole-batch objective, chunked objective, w, rng) on the same model."""
    keras.config.set_floatx("float64")
    model = _model(activation=activation, penalty=penalty)
    x, y, s = _data(classes=classes, weighted=weighted)
    data = (tf.constant(x), tf.constant(y)) + (() if s is None else (tf.constant(s),))
    objectives = []
    for micro_batch_size in (None, PIECE):
        trainer = gz.wrap(model, micro_batch_size=micro_batch_size)
        trainer.compile(optimizer=gz.LevenbergMarquardt(), loss=loss)
        objectives.append(ModelObjective(trainer, data, tf.distribute.get_strategy()))
    whole, chunked = objectives
    return whole, chunked, whole.current(), np.random.default_rng(5)


def _close(actual, expected, name):
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), rtol=1e-10, atol=1e-12, err_msg=name
    )


CASES = {
    "mse-weighted": ("mse", None, True),
    "categorical-logits-weighted": (
        keras.losses.CategoricalCrossentropy(from_logits=True), None, True
    ),
    "binary-probabilities": ("binary_crossentropy", "sigmoid", False),
}


def _compare(everything, whole, chunked, case):
    expected = everything(whole)
    actual = everything(chunked)
    for name in expected:
        for a, b in zip(tf.nest.flatten(actual[name]), tf.nest.flatten(expected[name])):
            _close(a, b, f"{case}: {name}")
    return expected, actual


@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_value_gradient_and_products_equal_the_whole_batch(case):
    loss, activation, weighted = CASES[case]
    whole, chunked, w, rng = _objectives(
        loss, activation, weighted, penalty=0.25, classes=not case.startswith("mse")
    )
    v = tf.constant(rng.normal(size=whole.size))

    def everything(objective):
        value, gradient = objective.value_and_gradient(w)
        return {
            "value": objective.value(w),
            "value_and_gradient.value": value,
            "gradient": gradient,
            "gauss_newton_gradient": matrix_free.gauss_newton_gradient(objective, w),
            "gauss_newton_product": matrix_free.gauss_newton_product(objective, w, v),
            "hessian_product": matrix_free.hessian_product(objective, w, v),
        }

    _compare(everything, whole, chunked, case)


def test_chunked_dense_matrices_and_diagonals_equal_the_whole_batch():
    # Softmax probabilities: the projected output Hessians; sample weights
    # and an L2 penalty (its curvature added once).
    whole, chunked, w, rng = _objectives(
        "categorical_crossentropy", "softmax", weighted=True, penalty=0.25, classes=True
    )
    v = tf.constant(rng.normal(size=whole.size))

    def everything(objective):
        gn_value, gn_gradient, gn_matrix = objective.gauss_newton(w)
        h_value, h_gradient, hessian = objective.hessian(w)
        return {
            "gauss_newton.value": gn_value,
            "gauss_newton.gradient": gn_gradient,
            "gauss_newton.matrix": gn_matrix,
            "hessian.value": h_value,
            "hessian.gradient": h_gradient,
            "hessian.matrix": hessian,
            "gauss_newton_product": matrix_free.gauss_newton_product(objective, w, v),
            "gauss_newton_diagonal": matrix_free.gauss_newton_diagonal(objective, w),
            "diagonal_probes": matrix_free.gauss_newton_diagonal(objective, w, probes=2),
            "squared_gradient_diagonal": matrix_free.squared_gradient_diagonal(objective, w),
        }

    expected, actual = _compare(everything, whole, chunked, "dense")
    # The chunked product is the dense matrix times v (not only the whole
    # batch's product).
    matrix = expected["gauss_newton.matrix"].numpy()
    _close(actual["gauss_newton_product"], matrix @ v.numpy(), "A v")
    _close(actual["gauss_newton_diagonal"], np.diag(matrix), "diag(A)")


def test_sample_space_system_is_the_whole_batch_system():
    # n K = 33 < m = 3*8+8 + 8*3+3 = 59: the sample-space form.
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(2)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(3)]
    )
    x, y, s = _data(weighted=True)
    data = (tf.constant(x), tf.constant(y), tf.constant(s))
    results = []
    for micro_batch_size in (None, PIECE):
        trainer = gz.wrap(model, micro_batch_size=micro_batch_size)
        trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
        objective = ModelObjective(trainer, data, tf.distribute.get_strategy())
        w = objective.current()
        assert objective.prefers_sample_space(w) is True
        value, gradient, system = objective.gauss_newton_sample_space(w)
        delta, ok = system.solve(0.3)
        assert bool(ok)
        results.append((value, gradient, system.jacobian, system.residuals, delta))
    for expected, actual, name in zip(results[0], results[1], ["E", "g", "J", "u", "delta"]):
        _close(actual, expected, name)


def test_value_equals_numpy_with_a_ragged_piece_and_the_penalty_once():
    keras.config.set_floatx("float64")
    l2 = 0.25  # exact in float32, as Keras stores it
    model = _model(penalty=l2)
    x, y, s = _data(weighted=True)
    trainer = gz.wrap(model, micro_batch_size=PIECE)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    objective = ModelObjective(
        trainer, (tf.constant(x), tf.constant(y), tf.constant(s)), tf.distribute.get_strategy()
    )
    kernel, bias, kernel_2, bias_2 = model.get_weights()
    prediction = np.tanh(x @ kernel + bias) @ kernel_2 + bias_2
    # Keras "mse" with sample weights: 1/n sum_i s_i mean_k e_ik^2, + l2 ||W1||^2.
    expected = np.sum(s * np.mean((prediction - y) ** 2, axis=1)) / N + l2 * np.sum(kernel**2)
    _close(objective.value(objective.current()), expected, "E")


@pytest.mark.parametrize("n", [1, 3, 4, 8, 9, 11])
def test_over_micro_batches_sums_every_example_once_whatever_n(n):
    # Python-level sum of the example indices, eager and with a dynamic n.
    x = tf.range(n, dtype=tf.float64)[:, None] * tf.ones([1, 2], tf.float64)
    calls = []

    def fn(piece, first):
        calls.append(first)
        return tf.reduce_sum(piece[0], axis=0), piece[0][:, 0]

    expected = np.full(2, n * (n - 1) / 2)
    total, rows = over_micro_batches(fn, (x,), PIECE, concatenated=(1,))
    np.testing.assert_array_equal(total.numpy(), expected)
    np.testing.assert_array_equal(rows.numpy(), np.arange(n))
    assert calls[0] is True and not any(calls[1:])
    dynamic = tf.function(
        lambda x: over_micro_batches(fn, (x,), PIECE, concatenated=(1,)),
        input_signature=[tf.TensorSpec([None, 2], tf.float64)],
    )
    total, rows = dynamic(x)
    np.testing.assert_array_equal(total.numpy(), expected)
    np.testing.assert_array_equal(rows.numpy(), np.arange(n))


def _fit(solver, micro_batch_size, epochs, x, y, s=None):
    keras.config.set_floatx("float64")
    model = _model(outputs=1, penalty=0.01)
    trainer = gz.wrap(model, micro_batch_size=micro_batch_size)
    trainer.compile(optimizer=solver(), loss="mse", metrics=["mae"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = trainer.fit(
            x, y, sample_weight=s, batch_size=len(x), epochs=epochs, verbose=0
        ).history
    return model.get_weights(), history


# CG to a tight tolerance: stopped early, CG amplifies round-off (the default
# tolerance 1e-4 moves LM-CG's iterates by ~5e-7 when the batch is merely
# permuted, micro-batches or not); converged, its solution is the system's.
_CG = {"linear_solver": "cg", "cg_tolerance": 1e-10, "cg_max_iterations": 200}
FIT_SOLVERS = {
    "lm-cg": (lambda: gz.LevenbergMarquardt(**_CG), 4),
    "lbfgs": (lambda: gz.LBFGS(), 4),
    "newton-cg": (lambda: gz.Newton(damping=0.1, **_CG), 3),
}
# (The dense LM path: test_mirrored_strategy_micro_batches_equal_one_device.)


@pytest.mark.parametrize("name", sorted(FIT_SOLVERS))
def test_fit_gives_the_same_iterates_with_micro_batches(name):
    solver, epochs = FIT_SOLVERS[name]
    x, y, s = _data(outputs=1, weighted=True, n=13)
    weights, history = _fit(solver, None, epochs, x, y, s)
    weights_mb, history_mb = _fit(solver, 5, epochs, x, y, s)
    assert history["loss"][-1] < history["loss"][0]
    for a, b in zip(weights, weights_mb):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11, err_msg=name)
    assert sorted(history) == sorted(history_mb)
    # CG's iteration count at its tolerance is a round-off matter.
    for key in set(history) - {"cg_iterations"}:
        np.testing.assert_allclose(history_mb[key], history[key], rtol=1e-9, atol=1e-11,
                                   err_msg=f"{name}: {key}")


def test_config_round_trip_and_keras_file_keep_micro_batch_size(tmp_path):
    model = _model()
    trainer = gz.wrap(model, micro_batch_size=np.int64(64))
    assert trainer.micro_batch_size == 64 and type(trainer.micro_batch_size) is int
    config = trainer.get_config()
    assert config["micro_batch_size"] == 64
    assert gz.SolverModel.from_config(config).micro_batch_size == 64
    assert "micro_batch_size" not in gz.wrap(model).get_config()
    assert gz.wrap(model).micro_batch_size is None
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    path = str(tmp_path / "micro.keras")
    trainer.save(path)
    assert keras.saving.load_model(path).micro_batch_size == 64
    # wrap of a wrapper with a new micro_batch_size is a new wrapper.
    assert gz.wrap(trainer, micro_batch_size=8).micro_batch_size == 8


@pytest.mark.parametrize(
    "value, match",
    [
        (0, r"Argument `micro_batch_size` must be >= 1. Received: micro_batch_size=0"),
        (-3, r"must be >= 1. Received: micro_batch_size=-3"),
        (2.5, r"Argument `micro_batch_size` must be an integer. Received: micro_batch_size=2.5"),
        (True, r"must be an integer. Received: micro_batch_size=True"),
        ("8", r"must be an integer. Received: micro_batch_size='8'"),
        (float("nan"), r"must be an integer. Received: micro_batch_size=nan"),
    ],
)
def test_bad_micro_batch_sizes_are_refused_by_name(value, match):
    with pytest.raises(ValueError, match=match):
        gz.wrap(_model(), micro_batch_size=value)


def test_objectives_that_are_not_sums_over_examples_are_refused():
    with pytest.raises(ValueError, match="`micro_batch_size` needs a compiled loss.*residuals"):
        gz.wrap(_model(), residuals=lambda model, x, y: model(x) - y, micro_batch_size=4)

    class Custom(keras.Sequential):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            return keras.ops.mean(keras.ops.square(y_pred - y))

    custom = Custom([keras.Input((3,)), keras.layers.Dense(1)])
    trainer = gz.wrap(custom, micro_batch_size=4)
    trainer.compile(optimizer=gz.LBFGS())
    x, y, _ = _data(outputs=1)
    with pytest.raises(ValueError, match=r"needs a compiled loss.*Custom.compute_loss"):
        trainer.fit(x, y, batch_size=N, epochs=1, verbose=0)

    active = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activity_regularizer=keras.regularizers.L2(0.1))]
    )
    trainer = gz.wrap(active, micro_batch_size=4)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse")
    with pytest.raises(ValueError, match=r"activity regularizer sums over the examples"):
        trainer.fit(x, np.zeros((N, 2)), batch_size=N, epochs=1, verbose=0)


def test_mirrored_strategy_micro_batches_equal_one_device(mirrored):
    # n K = 24 >= m = 21: a full-rank Gauss-Newton matrix. (On a rank-
    # deficient one the default trust-region rule's steps depend on the
    # order of the examples at 1e-2, micro-batches or not.)
    x, y, s = _data(outputs=1, n=24)
    keras.config.set_floatx("float64")
    weights, history = _fit(lambda: gz.LevenbergMarquardt(), None, 2, x, y)
    with mirrored.scope():
        model = _model(outputs=1, penalty=0.01)
        trainer = gz.wrap(model, micro_batch_size=5)  # per replica: 2 + 5 + 5
        trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse", metrics=["mae"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history_d = trainer.fit(x, y, batch_size=len(x), epochs=2, verbose=0).history
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(history_d["loss"], history["loss"], rtol=1e-9)
    np.testing.assert_allclose(history_d["mae"], history["mae"], rtol=1e-9)


_MEMORY_SCRIPT = """
import os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np, keras, tensorflow as tf
import keras_gdzoo as gz
from keras_gdzoo import matrix_free
from keras_gdzoo.model import ModelObjective

width = int(sys.argv[1])
micro = None if sys.argv[2] == "none" else int(sys.argv[2])
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(width, activation="tanh"),
                          keras.layers.Dense(1)])
trainer = gz.wrap(model, micro_batch_size=micro)
trainer.compile(optimizer=gz.LevenbergMarquardt(linear_solver="cg"), loss="mse")
rng = np.random.default_rng(0)


def peak():
    # VmHWM, this process's own peak (MB): ru_maxrss is kept across exec, so
    # in a child of a large pytest process it starts at the parent's peak.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate(n):
    x = tf.constant(rng.normal(size=(n, 4)).astype("float32"))
    y = tf.constant(rng.normal(size=(n, 1)).astype("float32"))
    objective = ModelObjective(trainer, (x, y), tf.distribute.get_strategy())

    @tf.function
    def run(w, v):
        value, gradient = objective.value_and_gradient(w)
        return value, gradient, matrix_free.gauss_newton_product(objective, w, v)

    w = objective.current()
    value, gradient, product = run(w, tf.ones_like(w))
    return [float(value), float(tf.norm(gradient)), float(tf.norm(product))]

start = peak()
evaluate(int(sys.argv[3]))
small = peak()
values = evaluate(int(sys.argv[4]))
print(*values, small - start, peak() - small)
"""


def _peak_growth(width, micro, small, large):
    """(E, |g|, |A v| at n = large; peak growth in MB for n = small from the
    start, then from n = small to n = large), in a fresh process."""
    # Every allocation over 64 kB is its own mapping, returned when freed:
    # the peak resident size follows the live tensors (glibc).
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", MALLOC_MMAP_THRESHOLD_="65536")
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, str(width), str(micro), str(small), str(large)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [float(t) for t in out.stdout.split()[-5:]]


def test_peak_memory_follows_the_micro_batch_not_the_batch():
    # One tanh layer of 2048 units: 16000 examples hold 16000 x 2048 x 4 B =
    # 131 MB per activation tensor, and a value, gradient and Gauss-Newton-
    # vector product keep several. Whole batches: the peak grows with n
    # (from n = 4000 to 16000); pieces of 500: it does not (measured 1.8 GB
    # against 6 MB with 4096 units from n = 2000 to 16000). The first n is
    # large enough to lift the peak over what importing TensorFlow left.
    whole = _peak_growth(2048, "none", 4000, 16000)
    chunked = _peak_growth(2048, 500, 4000, 16000)
    np.testing.assert_allclose(chunked[:3], whole[:3], rtol=1e-4)  # float32 sums
    assert whole[4] > 300, (whole, chunked)
    assert chunked[4] < whole[4] / 10, (whole, chunked)
