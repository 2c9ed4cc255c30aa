"""Line searches: the conditions each accepted step must satisfy, checked in
NumPy on a family of functions (SciPy's style), failure cases, pinned
evaluation counts, configuration and validation.

Searches run eagerly here (their loops are tf.while_loop, which also runs
eagerly); the solver tests run them inside tf.function and XLA.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo import line_search
from keras_gdzoo.line_search import Backtracking
from keras_gdzoo.line_search import Exact
from keras_gdzoo.line_search import MoreThuente
from keras_gdzoo.line_search import StrongWolfe
from keras_gdzoo.line_search import more_thuente
from keras_gdzoo.solvers.base import FunctionObjective

scipy_optimize = pytest.importorskip("scipy.optimize")

# -- a family of smooth functions, each in TF and in NumPy with its gradient --

_A = np.array([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]])
_B = np.array([1.0, -2.0, 0.5])
_C = np.array([[1.0, 2.0, -1.0], [-0.5, 1.0, 0.0], [0.3, -1.0, 2.0], [1.0, 0.0, 1.0]])


def _quadratic():
    tf_f = lambda w: (
        0.5 * tf.reduce_sum(w * tf.linalg.matvec(tf.constant(_A), w))
        - tf.reduce_sum(tf.constant(_B) * w)
    )
    np_f = lambda w: 0.5 * w @ _A @ w - _B @ w
    np_g = lambda w: _A @ w - _B
    return tf_f, np_f, np_g, True


def _rosenbrock():
    def tf_f(w):
        return tf.reduce_sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)

    np_f = scipy_optimize.rosen
    np_g = scipy_optimize.rosen_der
    return tf_f, np_f, np_g, False


def _log_sum_exp():
    def tf_f(w):
        return tf.reduce_logsumexp(
            tf.linalg.matvec(tf.constant(_C), w)
        ) + 0.05 * tf.reduce_sum(w * w)

    def np_f(w):
        z = _C @ w
        return z.max() + np.log(np.exp(z - z.max()).sum()) + 0.05 * w @ w

    def np_g(w):
        z = _C @ w
        p = np.exp(z - z.max())
        return _C.T @ (p / p.sum()) + 0.1 * w

    return tf_f, np_f, np_g, True


def _wavy():
    tf_f = lambda w: tf.reduce_sum(tf.sin(2.0 * w)) + 0.2 * tf.reduce_sum(w * w)
    np_f = lambda w: np.sin(2.0 * w).sum() + 0.2 * w @ w
    np_g = lambda w: 2.0 * np.cos(2.0 * w) + 0.4 * w
    return tf_f, np_f, np_g, False


def _quartic():
    tf_f = lambda w: tf.reduce_sum(w**4) - tf.reduce_sum(w * w) + 0.3 * tf.reduce_sum(w)
    np_f = lambda w: (w**4).sum() - w @ w + 0.3 * w.sum()
    np_g = lambda w: 4.0 * w**3 - 2.0 * w + 0.3
    return tf_f, np_f, np_g, False


FUNCTIONS = {
    "quadratic": _quadratic,
    "rosenbrock": _rosenbrock,
    "log_sum_exp": _log_sum_exp,
    "wavy": _wavy,
    "quartic": _quartic,
}


def _cases(name):
    """(objective, np_f, np_g, w, d, convex) for starting points and
    directions: -g and a perturbed descent direction."""
    tf_f, np_f, np_g, convex = FUNCTIONS[name]()
    objective = FunctionObjective(tf_f, size=3, dtype="float64")
    rng = np.random.default_rng(len(name))
    cases = []
    for _ in range(3):
        w = rng.normal(scale=1.2, size=3)
        g = np_g(w)
        noise = rng.normal(size=3)
        noise *= 0.7 * np.linalg.norm(g) / np.linalg.norm(noise)
        perturbed = -g + noise
        if perturbed @ g >= 0:
            perturbed = -g - noise
        for d in (-g, perturbed):
            cases.append((objective, np_f, np_g, w, d, convex))
    return cases


def _search(search, objective, w, d, initial_step):
    """One search, eagerly."""
    w = tf.constant(w, tf.float64)
    d = tf.constant(d, tf.float64)
    value, gradient = objective.value_and_gradient(w)
    return search.search(objective, w, d, value, gradient, initial_step)


def _compiled(search, objective):
    """The search in a tf.function traced once, for the many cases of the
    property tests (eager loops cost ~0.3 s a search)."""
    size = objective.size
    spec = [tf.TensorSpec([size], tf.float64)] * 2 + [tf.TensorSpec([], tf.float64)]

    @tf.function(input_signature=spec)
    def run(w, d, initial_step):
        value, gradient = objective.value_and_gradient(w)
        return search.search(objective, w, d, value, gradient, initial_step)

    return lambda w, d, initial_step: run(
        tf.constant(w, tf.float64),
        tf.constant(d, tf.float64),
        tf.constant(initial_step, tf.float64),
    )


def _check_returned_point(result, np_f, np_g, w, d):
    a = float(result.step)
    assert a > 0
    assert np.isfinite(float(result.value))
    np.testing.assert_allclose(
        float(result.value), np_f(w + a * d), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(
        result.gradient.numpy(), np_g(w + a * d), rtol=1e-8, atol=1e-10
    )
    return a


def _armijo_holds(np_f, np_g, w, d, a, c1):
    phi0, slope = np_f(w), np_g(w) @ d
    return np_f(w + a * d) <= phi0 + c1 * a * slope + 1e-12 * abs(phi0)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("c2", [0.9, 0.1])
def test_strong_wolfe_accepted_steps_satisfy_both_conditions(name, c2):
    search = StrongWolfe(c1=1e-4, c2=c2)
    cases = _cases(name)
    run = _compiled(search, cases[0][0])
    for _, np_f, np_g, w, d, _ in cases:
        for initial_step in (1.0, 1e-3, 30.0):
            result = run(w, d, initial_step)
            assert not bool(result.failed), (name, w, d, initial_step)
            a = _check_returned_point(result, np_f, np_g, w, d)
            assert _armijo_holds(np_f, np_g, w, d, a, 1e-4)
            assert abs(np_g(w + a * d) @ d) <= c2 * abs(np_g(w) @ d) * (1 + 1e-9)
            assert 1 <= int(result.evaluations) <= search.max_evaluations


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("c2", [0.9, 0.1])
def test_more_thuente_accepted_steps_satisfy_both_conditions(name, c2):
    # xtol = 1e-14 (SciPy's line_search_wolfe1): the search does not stop on
    # a narrow interval before both conditions hold.
    search = MoreThuente(c1=1e-4, c2=c2, xtol=1e-14)
    cases = _cases(name)
    run = _compiled(search, cases[0][0])
    for _, np_f, np_g, w, d, _ in cases:
        for initial_step in (1e-3, 1.0, 30.0):
            result = run(w, d, initial_step)
            assert not bool(result.failed)
            a = _check_returned_point(result, np_f, np_g, w, d)
            assert _armijo_holds(np_f, np_g, w, d, a, search.c1)
            assert abs(np_g(w + a * d) @ d) <= c2 * abs(np_g(w) @ d) * (1 + 1e-10)
            assert int(result.evaluations) <= search.max_evaluations


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_backtracking_accepts_the_first_armijo_step(name):
    c1, shrink = 1e-4, 0.5
    search = Backtracking(c1=c1, shrink=shrink)
    cases = _cases(name)
    run = _compiled(search, cases[0][0])
    for _, np_f, np_g, w, d, _ in cases:
        for initial_step in (1.0, 30.0):
            result = run(w, d, initial_step)
            assert not bool(result.failed)
            a = _check_returned_point(result, np_f, np_g, w, d)
            assert _armijo_holds(np_f, np_g, w, d, a, c1)
            # a = initial * shrink^k with k the first that satisfies Armijo.
            k = round(np.log(a / initial_step) / np.log(shrink))
            np.testing.assert_allclose(a, initial_step * shrink**k, rtol=1e-12)
            for j in range(k):
                assert not _armijo_holds(np_f, np_g, w, d, initial_step * shrink**j, c1)
            # k + 1 values, then the gradient at the accepted point.
            assert int(result.evaluations) == k + 2


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_exact_finds_a_minimizer_along_the_direction(name):
    search = Exact(tolerance=1e-8)
    cases = _cases(name)
    run = _compiled(search, cases[0][0])
    for _, np_f, np_g, w, d, convex in cases:
        result = run(w, d, 1.0)
        assert not bool(result.failed)
        a = _check_returned_point(result, np_f, np_g, w, d)
        phi = lambda t, np_f=np_f, w=w, d=d: np_f(w + t * d)
        assert phi(a) < phi(0.0)
        # A local minimizer along d, to the tolerance.
        assert phi(a) <= phi(a * (1 + 1e-5)) + 1e-14
        assert phi(a) <= phi(a * (1 - 1e-5)) + 1e-14
        if convex:  # the minimizer is unique: SciPy's Brent must agree
            reference = scipy_optimize.minimize_scalar(
                phi, bracket=(0.0, 1.0), tol=1e-10
            ).x
            np.testing.assert_allclose(a, reference, rtol=1e-6)


# Rosenbrock at a point steepest descent reaches (a bug report): E falls
# along -g from 0.751 to 0.222 at a ~ 0.277.
_ROSEN_POINT = np.array([0.13467, 0.01328])


def _rosen_2d(w):
    return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


@pytest.mark.parametrize(
    "dtype, initial_step, rtol",
    [
        # Too short to change E in float32 (E(w + a d) == E(w)): the search
        # used to take that for a point above E(w) and shrink to failure.
        ("float32", 1e-9, 1e-4),
        ("float32", 1e-20, 1e-4),
        ("float64", 1e-18, 1e-7),
        # Far too long: Brent's absolute tolerance used to scale with it and
        # stop Brent at once (a = 0.1 in float32, E = 0.613).
        ("float32", 1e6, 1e-4),
        ("float64", 1e6, 1e-7),
        ("float64", 1.0, 1e-7),
    ],
)
def test_exact_minimizes_whatever_the_first_trial_scale(dtype, initial_step, rtol):
    objective = FunctionObjective(_rosen_2d, size=2, dtype=dtype)
    w = tf.constant(_ROSEN_POINT, dtype)
    value, gradient = objective.value_and_gradient(w)
    d = -gradient
    result = Exact(tolerance=1e-8).search(
        objective, w, d, value, gradient, tf.constant(initial_step, dtype)
    )
    assert not bool(result.failed)
    # SciPy's Brent on the same line, in float64.
    w64, d64 = w.numpy().astype(np.float64), d.numpy().astype(np.float64)
    phi = lambda t: scipy_optimize.rosen(w64 + t * d64)
    reference = scipy_optimize.minimize_scalar(
        phi, bracket=(0.0, 1e-3), method="brent", tol=1e-10
    )
    np.testing.assert_allclose(float(result.step), reference.x, rtol=rtol)
    np.testing.assert_allclose(float(result.value), reference.fun, rtol=10 * rtol)
    assert result.step.dtype == tf.as_dtype(dtype)


def _steepest_descent_reference(w, iterations):
    """Losses of steepest descent on Rosenbrock with SciPy's Brent as the
    line minimization, in float64."""
    losses = [scipy_optimize.rosen(w)]
    for _ in range(iterations):
        g = scipy_optimize.rosen_der(w)
        line = lambda t, w=w, g=g: scipy_optimize.rosen(w - t * g)
        t = scipy_optimize.minimize_scalar(line, bracket=(0.0, 1e-3), method="brent").x
        w = w - t * g
        losses.append(scipy_optimize.rosen(w))
    return np.array(losses)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_steepest_descent_on_rosenbrock_never_fails_its_exact_search(dtype):
    iterations = 200
    objective = FunctionObjective(_rosen_2d, size=2, dtype=dtype)
    w0 = np.array([-1.2, 1.0])
    _, history = gz.SteepestDescent().minimize(
        objective, tf.constant(w0, dtype), iterations=iterations
    )
    assert len(history) == iterations + 1
    assert all(record["line_search_failed"] == 0.0 for record in history[1:])
    losses = np.array(
        [scipy_optimize.rosen(r["w"].astype(np.float64)) for r in history]
    )
    assert np.all(np.diff(losses) < 0)
    reference = _steepest_descent_reference(w0, iterations)
    if dtype == "float64":  # the same zigzag, step for step
        np.testing.assert_allclose(losses[::50], reference[::50], rtol=1e-4)
    else:  # rounding changes the zigzag, not the rate of progress
        assert losses[-1] <= 1.5 * reference[-1]


# -- failure cases -------------------------------------------------------


SEARCHES = [StrongWolfe(), StrongWolfe(c2=0.1), MoreThuente(), Backtracking(), Exact()]
IDS = ["wolfe", "wolfe-cg", "more-thuente", "armijo", "exact"]


def _assert_no_move(result, value, gradient):
    assert bool(result.failed)
    assert float(result.step) == 0.0
    assert float(result.value) == float(value)
    np.testing.assert_array_equal(result.gradient.numpy(), gradient.numpy())


@pytest.mark.parametrize("search", SEARCHES, ids=IDS)
def test_not_a_descent_direction_fails_without_evaluating(search):
    tf_f, _, _, _ = _rosenbrock()
    objective = FunctionObjective(tf_f, size=3, dtype="float64")
    w = tf.constant([0.3, -0.5, 1.2], tf.float64)
    value, gradient = objective.value_and_gradient(w)
    for direction in (gradient, tf.zeros_like(gradient)):
        result = search.search(objective, w, direction, value, gradient, 1.0)
        _assert_no_move(result, value, gradient)
        assert int(result.evaluations) == 0


@pytest.mark.parametrize("search", SEARCHES, ids=IDS)
def test_flat_function_fails_without_evaluating(search):
    objective = FunctionObjective(
        lambda w: 0.0 * tf.reduce_sum(w) + 3.0, size=2, dtype="float64"
    )
    w = tf.constant([1.0, 2.0], tf.float64)
    value, gradient = objective.value_and_gradient(w)
    result = search.search(objective, w, -gradient, value, gradient, 1.0)
    _assert_no_move(result, value, gradient)
    assert int(result.evaluations) == 0


def _barrier():
    """phi(a) = -2a - 2 log(1 - a^2) along d = (-1, -1) from w = 0: not
    finite for a >= 1 (inf at 1, NaN beyond), minimized at a = sqrt(2) - 1."""

    def tf_f(w):
        return tf.reduce_sum(w) - tf.reduce_sum(tf.math.log(1.0 - w * w))

    np_f = lambda w: w.sum() - np.log(1.0 - w * w).sum()
    np_g = lambda w: 1.0 + 2.0 * w / (1.0 - w * w)
    return FunctionObjective(tf_f, size=2, dtype="float64"), np_f, np_g


@pytest.mark.parametrize("search", SEARCHES, ids=IDS)
@pytest.mark.parametrize("initial_step", [1.0, 5.0])
def test_non_finite_trial_is_shrunk_and_a_finite_point_accepted(search, initial_step):
    objective, np_f, np_g = _barrier()
    w, d = np.zeros(2), -np.ones(2)
    with np.errstate(all="ignore"):
        assert not np.isfinite(np_f(w + initial_step * d))
    result = _search(search, objective, w, d, initial_step)
    assert not bool(result.failed)
    a = _check_returned_point(result, np_f, np_g, w, d)
    assert 0 < a < 1
    assert _armijo_holds(np_f, np_g, w, d, a, 1e-4)
    if isinstance(search, (StrongWolfe, MoreThuente)):
        assert abs(np_g(w + a * d) @ d) <= search.c2 * abs(np_g(w) @ d)
    if isinstance(search, Exact):
        np.testing.assert_allclose(a, np.sqrt(2.0) - 1.0, rtol=1e-7)


@pytest.mark.parametrize("search", SEARCHES, ids=IDS)
def test_non_finite_everywhere_but_the_start_fails_cleanly(search):
    w0 = tf.constant([0.5, -1.0], tf.float64)

    def tf_f(w):
        quadratic = tf.reduce_sum(w * w)
        return tf.where(
            tf.reduce_all(tf.equal(w, w0)), quadratic, tf.constant(np.nan, tf.float64)
        )

    objective = FunctionObjective(tf_f, size=2, dtype="float64")
    value, gradient = objective.value_and_gradient(w0)
    result = search.search(objective, w0, -gradient, value, gradient, 1.0)
    _assert_no_move(result, value, gradient)
    assert np.isfinite(float(result.value))
    assert 0 < int(result.evaluations) <= search.max_evaluations


# -- evaluation counts, pinned on a quadratic ------------------------------
#
# E(w) = k/2 |w|^2 searched along d = -g from w0: phi(a) = phi(0) (1 - k a)^2,
# minimized at a* = 1/k. A cubic through two points of a parabola is the
# parabola, so interpolation and extrapolation land on a* exactly.


def _quadratic_search(search, k, initial_step=1.0, dtype="float64"):
    objective = FunctionObjective(
        lambda w: 0.5 * k * tf.reduce_sum(w * w), size=2, dtype=dtype
    )
    w = tf.constant([1.0, -2.0], dtype)
    value, gradient = objective.value_and_gradient(w)
    return search.search(objective, w, -gradient, value, gradient, initial_step)


@pytest.mark.parametrize(
    "c2, k, steps, evaluations",
    [
        (0.9, 1.0, 1.0, 1),  # a = 1 is a*
        (0.9, 4.0, 0.25, 2),  # 1 too far; zoom's cubic gives a* = 0.25
        (0.9, 0.25, 1.0, 1),  # |phi'(1)| = 0.75 |phi'(0)| <= 0.9 |phi'(0)|
        (0.1, 0.25, 4.0, 2),  # curvature fails at 1; extrapolation gives a* = 4
        (
            0.1,
            0.01,
            100.0,
            5,
        ),  # extrapolation capped at a + 4 (a - a_prev): 1, 5, 21, 85, 100
    ],
)
def test_strong_wolfe_evaluation_counts_on_a_quadratic(c2, k, steps, evaluations):
    result = _quadratic_search(StrongWolfe(c2=c2), k)
    assert not bool(result.failed)
    np.testing.assert_allclose(float(result.step), steps, rtol=1e-10)
    assert int(result.evaluations) == evaluations


def test_backtracking_evaluation_count_on_a_quadratic():
    # k = 4: a = 1 and a = 0.5 fail Armijo, a = 0.25 = a* passes; then one
    # value_and_gradient: 4 evaluations.
    result = _quadratic_search(Backtracking(), 4.0)
    np.testing.assert_allclose(float(result.step), 0.25)
    assert int(result.evaluations) == 4


@pytest.mark.parametrize(
    "k, evaluations",
    [
        # phi(1) > phi(0); the parabola through phi(0), phi'(0), phi(1) gives
        # a* = 0.25: bracket [0, 0.25, 1] in 2 values.
        (4.0, 5),
        # phi(1) < phi(0); the parabola gives a* = 4, then a stride of at
        # least 1.618 * 3 overshoots: bracket [1, 4, 8.85] in 3 values.
        (0.25, 6),
    ],
)
def test_exact_evaluation_count_on_a_quadratic(k, evaluations):
    result = _quadratic_search(Exact(), k)
    np.testing.assert_allclose(float(result.step), 1.0 / k, rtol=1e-12)
    # Then Brent's first parabola is a* itself, x + tol1 and x - tol1 are no
    # better (2 values), and the gradient at a*: 3 more evaluations.
    assert int(result.evaluations) == evaluations


def test_float32_search_keeps_its_dtype():
    for search in (StrongWolfe(), MoreThuente(), Backtracking(), Exact()):
        result = _quadratic_search(search, 4.0, dtype="float32")
        assert result.step.dtype == tf.float32
        assert result.value.dtype == tf.float32
        assert result.gradient.dtype == tf.float32
        assert result.evaluations.dtype == tf.int32
        np.testing.assert_allclose(float(result.step), 0.25, rtol=1e-3)


# -- identifiers, configuration and validation ------------------------------


def test_get_by_name_object_and_config():
    assert isinstance(line_search.get("strong-wolfe"), StrongWolfe)
    assert isinstance(line_search.get("more-thuente"), MoreThuente)
    assert isinstance(line_search.get("armijo"), Backtracking)
    assert isinstance(line_search.get("exact"), Exact)
    # Defaults reach the class that takes them and are ignored elsewhere.
    assert line_search.get("strong-wolfe", c2=0.1).c2 == 0.1
    assert isinstance(line_search.get("armijo", c2=0.1), Backtracking)
    search = Exact(tolerance=1e-6)
    assert line_search.get(search) is search
    config = keras.saving.serialize_keras_object(StrongWolfe(c1=1e-3, c2=0.5))
    restored = line_search.get(config)
    assert isinstance(restored, StrongWolfe)
    assert (restored.c1, restored.c2) == (1e-3, 0.5)


@pytest.mark.parametrize(
    "search",
    [
        StrongWolfe(c1=1e-3, c2=0.3, max_evaluations=12),
        MoreThuente(c1=1e-4, c2=0.4, xtol=1e-14, max_evaluations=30),
        Backtracking(c1=0.2, shrink=0.3),
        Exact(tolerance=1e-5),
    ],
)
def test_config_round_trip(search):
    restored = type(search).from_config(search.get_config())
    assert restored.get_config() == search.get_config()
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(search)
    )
    assert type(again) is type(search)
    assert again.get_config() == search.get_config()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: line_search.get("wolfe"), "Received: line_search='wolfe'"),
        (lambda: line_search.get(3), "Received: line_search=3"),
        (lambda: StrongWolfe(c1=0.0), "Received: c1=0.0"),
        (lambda: StrongWolfe(c1=1.0), "Received: c1=1.0"),
        (lambda: StrongWolfe(c1=0.5, c2=0.4), "Received: c2=0.4"),
        (lambda: StrongWolfe(c2=1.0), "Received: c2=1.0"),
        (lambda: StrongWolfe(max_evaluations=0), "Received: max_evaluations=0"),
        (lambda: StrongWolfe(max_evaluations=2.5), "Received: max_evaluations=2.5"),
        (lambda: MoreThuente(c1=0.0), "Received: c1=0.0"),
        (lambda: MoreThuente(c1=0.5, c2=0.4), "Received: c2=0.4"),
        (lambda: MoreThuente(xtol=-0.1), "Received: xtol=-0.1"),
        (lambda: MoreThuente(max_evaluations=0), "Received: max_evaluations=0"),
        (lambda: Backtracking(shrink=1.0), "Received: shrink=1.0"),
        (lambda: Backtracking(shrink=0.0), "Received: shrink=0.0"),
        (lambda: Backtracking(c1=-0.1), "Received: c1=-0.1"),
        (lambda: Backtracking(max_evaluations=1), "Received: max_evaluations=1"),
        (lambda: Exact(tolerance=0.0), "Received: tolerance=0.0"),
        (lambda: Exact(tolerance=-1e-3), "Received: tolerance=-0.001"),
        (lambda: Exact(max_evaluations=2), "Received: max_evaluations=2"),
    ],
)
def test_validation_names_argument_and_value(build, message):
    with pytest.raises(
        ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
    ):
        build()


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: Exact(tolerance=np.inf), "Received: tolerance=inf"),
        (lambda: Exact(tolerance=np.nan), "Received: tolerance=nan"),
        (lambda: Exact(tolerance="1e-8"), "Received: tolerance='1e-8'"),
        (lambda: StrongWolfe(c1=np.nan), "Received: c1=nan"),
        (lambda: MoreThuente(xtol=np.inf), "Received: xtol=inf"),
        (lambda: StrongWolfe(c2=np.float32(np.inf)), "Received: c2=inf"),
        (lambda: Backtracking(shrink=-np.inf), "Received: shrink=-inf"),
        (lambda: Backtracking(c1=True), "Received: c1=True"),
        (lambda: Exact(max_evaluations=np.inf), "Received: max_evaluations=inf"),
        (lambda: Exact(max_evaluations=10.0), "Received: max_evaluations=10.0"),
    ],
)
def test_non_finite_and_non_numbers_are_refused_by_name(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_numpy_scalars_are_accepted_and_stored_as_python_numbers():
    searches = [
        StrongWolfe(
            c1=np.float32(1e-4), c2=np.float64(0.5), max_evaluations=np.int64(9)
        ),
        Backtracking(
            c1=np.float32(1e-3), shrink=np.float32(0.25), max_evaluations=np.int32(7)
        ),
        Exact(tolerance=np.float32(1e-6), max_evaluations=np.int64(12)),
    ]
    for search in searches:
        config = search.get_config()
        assert all(type(v) in (int, float) for v in config.values()), config
        assert type(config["max_evaluations"]) is int
        assert type(search).from_config(config).get_config() == config
    np.testing.assert_allclose(searches[0].c1, 1e-4, rtol=1e-7)
    np.testing.assert_allclose(searches[1].shrink, 0.25)


# -- the abstract base class is refused, however it arrives ------------------


_ABSTRACT_CONFIG = {
    "module": "keras_gdzoo.line_search",
    "class_name": "LineSearch",
    "config": {"max_evaluations": 5},
    "registered_name": "keras_gdzoo>LineSearch",
}


class _NoSearch(line_search.LineSearch):
    """A subclass that forgot `_search`."""


@pytest.mark.parametrize(
    "build",
    [
        lambda: line_search.LineSearch(max_evaluations=5),
        lambda: line_search.LineSearch.from_config({"max_evaluations": 5}),
        lambda: keras.saving.deserialize_keras_object(dict(_ABSTRACT_CONFIG)),
        lambda: line_search.get(dict(_ABSTRACT_CONFIG)),
        lambda: gz.LBFGS(line_search=dict(_ABSTRACT_CONFIG)),
    ],
    ids=["constructor", "from_config", "deserialize", "get", "solver"],
)
def test_abstract_line_search_is_refused_by_name(build):
    with pytest.raises(ValueError, match="LineSearch"):
        build()


def test_subclass_without_search_is_refused_by_the_solver():
    with pytest.raises(ValueError, match="_NoSearch does not implement `_search`"):
        gz.BFGS(line_search=_NoSearch(max_evaluations=5))


def test_keras_file_naming_the_abstract_line_search_is_refused(tmp_path):
    import json
    import zipfile

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS(history=3), loss="mse")
    trainer.save(tmp_path / "good.keras")
    with zipfile.ZipFile(tmp_path / "good.keras") as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(files["config.json"])
    searched = config["compile_config"]["optimizer"]["config"]["line_search"]
    assert searched["class_name"] == "MoreThuente"
    searched.update(_ABSTRACT_CONFIG)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "crafted.keras", "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    with pytest.raises(ValueError, match="abstract base class"):
        keras.saving.load_model(tmp_path / "crafted.keras")


def test_config_written_before_the_package_split_still_loads():
    # `.keras` files written when the searches lived in line_search.py name
    # that module; the registered name is what finds the class.
    config = {
        "module": "keras_gdzoo.line_search",
        "class_name": "Exact",
        "config": {"tolerance": 1e-6, "max_evaluations": 20},
        "registered_name": "keras_gdzoo>Exact",
    }
    restored = keras.saving.deserialize_keras_object(config)
    assert isinstance(restored, Exact)
    assert restored.get_config() == {"tolerance": 1e-6, "max_evaluations": 20}


# -- the scalar layer, on functions of one variable ---------------------------
#
# phi(a) = (a - 2)^2 + 0.3 sin(3a): phi(0) = 4, phi'(0) = -3.1, a smooth
# non-quadratic line with one minimizer near a = 2.


def _phi_np(a):
    return (a - 2.0) ** 2 + 0.3 * np.sin(3.0 * a)


def _dphi_np(a):
    return 2.0 * (a - 2.0) + 0.9 * np.cos(3.0 * a)


def _phi_tf(a):
    return (a - 2.0) ** 2 + 0.3 * tf.sin(3.0 * a)


def _dphi_tf(a):
    return 2.0 * (a - 2.0) + 0.9 * tf.cos(3.0 * a)


_PHI0 = tf.constant(_phi_np(0.0), tf.float64)
_SLOPE0 = tf.constant(_dphi_np(0.0), tf.float64)


@pytest.mark.parametrize("c2", [0.9, 0.1])
@pytest.mark.parametrize("initial_step", [1e-3, 1.0, 10.0])
def test_scalar_strong_wolfe_satisfies_both_conditions(c2, initial_step):
    c1 = 1e-4

    def phi(a):
        return _phi_tf(a), _dphi_tf(a), 10.0 * a  # aux: any tensor of a

    start = tf.constant(initial_step, tf.float64)
    result = line_search.scalar.strong_wolfe(
        phi, _PHI0, _SLOPE0, start, c1, c2, 20, aux=tf.constant(-1.0, tf.float64)
    )
    a = float(result.step)
    assert bool(result.found) and a > 0
    assert _phi_np(a) <= _phi_np(0.0) + c1 * a * _dphi_np(0.0)
    assert abs(_dphi_np(a)) <= c2 * abs(_dphi_np(0.0))
    np.testing.assert_allclose(float(result.value), _phi_np(a), rtol=1e-14)
    np.testing.assert_allclose(float(result.derivative), _dphi_np(a), rtol=1e-12)
    np.testing.assert_allclose(float(result.aux), 10.0 * a, rtol=1e-14)
    assert 1 <= int(result.evaluations) <= 20


def test_scalar_strong_wolfe_reports_failure_with_the_start_point():
    # phi falls without bound: no step satisfies the curvature condition.
    phi = lambda a: (-a, -tf.ones_like(a), a)
    result = line_search.scalar.strong_wolfe(
        phi, tf.constant(0.0, tf.float64), tf.constant(-1.0, tf.float64),
        tf.constant(1.0, tf.float64), 1e-4, 0.9, 6, aux=tf.constant(-7.0, tf.float64),
    )
    assert not bool(result.found)
    returned = (float(result.step), float(result.value), float(result.aux))
    assert returned == (0.0, 0.0, -7.0)
    assert int(result.evaluations) == 6


def test_scalar_backtracking_takes_the_first_armijo_step():
    c1, shrink = 0.3, 0.5
    result = line_search.scalar.backtracking(
        _phi_tf, _PHI0, _SLOPE0, tf.constant(16.0, tf.float64), c1, shrink, 30
    )
    # Transcribed: 16, 8, 4, ... until Armijo holds.
    a, k = 16.0, 1
    while not _phi_np(a) <= _phi_np(0.0) + c1 * a * _dphi_np(0.0):
        a, k = a * shrink, k + 1
    assert bool(result.found)
    assert float(result.step) == a
    np.testing.assert_allclose(float(result.value), _phi_np(a), rtol=1e-14)
    assert int(result.evaluations) == k


def test_scalar_exact_agrees_with_scipy_brent():
    result = line_search.brent.exact(
        _phi_tf, _PHI0, _SLOPE0, tf.constant(1.0, tf.float64), 1e-10, 60
    )
    reference = scipy_optimize.minimize_scalar(
        _phi_np, bracket=(0.0, 1.0), method="brent", tol=1e-12
    )
    assert bool(result.found)
    np.testing.assert_allclose(float(result.step), reference.x, rtol=1e-7)
    np.testing.assert_allclose(float(result.value), reference.fun, rtol=1e-14)
    assert int(result.evaluations) <= 60


# -- Moré-Thuente against MINPACK-2's dcsrch (SciPy's Python port) --------------
#
# The six functions of Moré & Thuente (1994), section 5, with their
# constants, from four first trials each.


def _mt_gamma(b):
    return np.sqrt(1.0 + b * b) - b


def _mt_functions():
    def f1(a, beta=2.0):
        return -a / (a * a + beta), (a * a - beta) / (a * a + beta) ** 2

    def f2(a, beta=0.004):
        return (a + beta) ** 5 - 2.0 * (a + beta) ** 4, 5.0 * (a + beta) ** 4 - 8.0 * (
            a + beta
        ) ** 3

    def f3(a, beta=0.01, l=39.0):
        if a <= 1.0 - beta:
            f0, d0 = 1.0 - a, -1.0
        elif a >= 1.0 + beta:
            f0, d0 = a - 1.0, 1.0
        else:
            f0, d0 = (a - 1.0) ** 2 / (2.0 * beta) + beta / 2.0, (a - 1.0) / beta
        k = l * np.pi / 2.0
        return f0 + 2.0 * (1.0 - beta) / (l * np.pi) * np.sin(k * a), d0 + (
            1.0 - beta
        ) * np.cos(k * a)

    def yanai(b1, b2):
        def f(a):
            u, v = np.sqrt((1.0 - a) ** 2 + b2 * b2), np.sqrt(a * a + b1 * b1)
            return _mt_gamma(b1) * u + _mt_gamma(b2) * v, (
                -_mt_gamma(b1) * (1.0 - a) / u + _mt_gamma(b2) * a / v
            )

        return f

    return {
        "1": (f1, 1e-3, 0.1),
        "2": (f2, 0.1, 0.1),
        "3": (f3, 0.1, 0.1),
        "4": (yanai(0.001, 0.001), 1e-3, 1e-3),
        "5": (yanai(0.01, 0.001), 1e-3, 1e-3),
        "6": (yanai(0.001, 0.01), 1e-3, 1e-3),
    }


MT_FUNCTIONS = _mt_functions()


@pytest.mark.parametrize("name", sorted(MT_FUNCTIONS))
@pytest.mark.parametrize("initial_step", [1e-3, 1e-1, 10.0, 1000.0])
def test_more_thuente_takes_minpack_dcsrch_trials(name, initial_step):
    dcsrch = pytest.importorskip("scipy.optimize._dcsrch")
    function, c1, c2 = MT_FUNCTIONS[name]
    xtol = 0.1
    scipy_trials = []

    def phi(a):
        scipy_trials.append(a)
        return function(a)[0]

    reference = dcsrch.DCSRCH(phi, lambda a: function(a)[1], c1, c2, xtol, 0.0, 1e10)
    step, _, _, task = reference(
        initial_step, phi0=function(0.0)[0], derphi0=function(0.0)[1], maxiter=30
    )
    gz_trials = []

    def phi_and_derivative(a):
        gz_trials.append(float(a))
        value, derivative = function(float(a))
        return tf.constant(value, tf.float64), tf.constant(derivative, tf.float64), ()

    result = more_thuente.more_thuente(
        phi_and_derivative,
        tf.constant(function(0.0)[0], tf.float64),
        tf.constant(function(0.0)[1], tf.float64),
        tf.constant(initial_step, tf.float64),
        c1,
        c2,
        xtol,
        30,
    )
    np.testing.assert_allclose(gz_trials, scipy_trials, rtol=1e-12)
    assert int(result.evaluations) == len(scipy_trials)
    if task.startswith(b"CONV"):
        assert bool(result.found)
        np.testing.assert_allclose(float(result.step), step, rtol=1e-12)
    else:
        # dcsrch stopped on a warning (an interval narrower than xtol):
        # a failure for both.
        assert task.startswith(b"WARN")
        assert not bool(result.found)
        assert float(result.step) == 0.0
