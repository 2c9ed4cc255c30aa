"""Numerics of the line-search solvers (SteepestDescent, ConjugateGradient,
BFGS, LBFGS) on plain functions of a vector, through `Solver.step` and
`Solver.minimize`: against SciPy, against NumPy transcriptions of the
lecture's formulas, closed-form properties, and failure handling.
(The Keras-model path, save/load and distribution are tested with
`keras_gdzoo.model`.)
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.line_search import LineSearchResult
from keras_gdzoo.line_search import StrongWolfe
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import FunctionObjective

scipy_optimize = pytest.importorskip("scipy.optimize")

ROSENBROCK_START = np.array([-1.2, 1.0])
BEALE_START = np.array([1.0, 1.0])
LOG_NAMES = {
    "SteepestDescent": {"step_size", "evaluations", "line_search_failed", STOP},
    "ConjugateGradient": {
        "step_size",
        "evaluations",
        "line_search_failed",
        STOP,
        "beta",
        "restarts",
    },
    "BFGS": {
        "step_size",
        "evaluations",
        "line_search_failed",
        STOP,
        "update_skipped",
        "restarts",
    },
    "LBFGS": {
        "step_size",
        "evaluations",
        "line_search_failed",
        STOP,
        "update_skipped",
        "restarts",
    },
}


def rosenbrock(w):
    return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


_BEALE_C = (1.5, 2.25, 2.625)


def beale(w):
    x, y = w[0], w[1]
    return sum((c - x + x * y ** (i + 1)) ** 2 for i, c in enumerate(_BEALE_C))


def beale_np(w):
    x, y = w
    residuals = np.array([c - x + x * y ** (i + 1) for i, c in enumerate(_BEALE_C)])
    dx = np.array([y ** (i + 1) - 1.0 for i in range(3)])
    dy = np.array([x * (i + 1) * y**i for i in range(3)])
    return residuals @ residuals, np.array([2 * residuals @ dx, 2 * residuals @ dy])


def rosenbrock_np(w):
    return scipy_optimize.rosen(w), scipy_optimize.rosen_der(w)


def trajectory(solver, objective, w0, iterations):
    """Run `solver.step` in one tf.function; return the iterates, the
    state after each step (NumPy) and the logs (floats)."""
    step = tf.function(lambda w, state: solver.step(w, state, objective))
    w = tf.constant(w0, objective.dtype)
    state = solver.initial_state(objective.size, objective.dtype)
    points, states, logs = [w.numpy()], [], []
    for _ in range(iterations):
        w, state, log = step(w, state)
        assert w.dtype == objective.dtype
        assert all(v.dtype == objective.dtype for v in state.values())
        points.append(w.numpy())
        states.append({k: v.numpy() for k, v in state.items()})
        logs.append({k: float(v) for k, v in log.items()})
        if logs[-1][STOP] > 0:
            break
    return np.array(points), states, logs


def scipy_minimizer(function_and_gradient, start, method):
    options = {"gtol": 1e-12, "maxiter": 2000}
    if method == "L-BFGS-B":
        options["ftol"] = 0.0
    result = scipy_optimize.minimize(
        function_and_gradient, start, jac=True, method=method, options=options
    )
    return result.x


def _assert_ran_to_a_clean_stop(points, logs, solver_name, function_np):
    """Every step lowers E or stays, logs keep their names, and the run ends
    because the line search can no longer decrease E (at the minimizer)."""
    assert all(set(log) == LOG_NAMES[solver_name] for log in logs)
    values = [function_np(p)[0] for p in points]
    assert all(b <= a for a, b in itertools.pairwise(values))
    assert logs[-1][STOP] == 1.0
    np.testing.assert_array_equal(points[-1], points[-2])


# -- against SciPy -----------------------------------------------------------


@pytest.fixture(scope="module")
def bfgs_rosenbrock():
    objective = FunctionObjective(rosenbrock, size=2, dtype="float64")
    return trajectory(gz.BFGS(), objective, ROSENBROCK_START, 200)


@pytest.fixture(scope="module")
def lbfgs_rosenbrock():
    calls = tf.Variable(0, dtype=tf.int64)

    def counted(w):
        with tf.control_dependencies([calls.assign_add(1)]):
            return rosenbrock(w)

    objective = FunctionObjective(counted, size=2, dtype="float64")
    # history=4 < the number of steps: the ring buffer wraps around.
    points, states, logs = trajectory(
        gz.LBFGS(history=4), objective, ROSENBROCK_START, 200
    )
    return points, states, logs, int(calls.numpy())


def test_bfgs_matches_scipy_on_rosenbrock(bfgs_rosenbrock):
    points, _, logs = bfgs_rosenbrock
    _assert_ran_to_a_clean_stop(points, logs, "BFGS", rosenbrock_np)
    expected = scipy_minimizer(rosenbrock_np, ROSENBROCK_START, "BFGS")
    np.testing.assert_allclose(points[-1], expected, atol=1e-6)
    np.testing.assert_allclose(points[-1], [1.0, 1.0], atol=1e-8)


def test_lbfgs_matches_scipy_on_rosenbrock(lbfgs_rosenbrock):
    points, _, logs, calls = lbfgs_rosenbrock
    _assert_ran_to_a_clean_stop(points, logs, "LBFGS", rosenbrock_np)
    expected = scipy_minimizer(rosenbrock_np, ROSENBROCK_START, "L-BFGS-B")
    np.testing.assert_allclose(points[-1], expected, atol=1e-6)
    # The logged evaluations are the objective's calls, counted inside it.
    assert sum(log["evaluations"] for log in logs) == calls


def _lbfgsb_iterates(function_and_gradient, start, history, iterations):
    """SciPy L-BFGS-B's iterates (callback) and its evaluations up to each,
    the one at the start included."""
    points, counts, calls = [np.array(start, float)], [0], [0]

    def counted(w):
        calls[0] += 1
        return function_and_gradient(w)

    def callback(intermediate_result):
        points.append(np.array(intermediate_result.x))
        counts.append(calls[0])

    scipy_optimize.minimize(
        counted,
        start,
        jac=True,
        method="L-BFGS-B",
        callback=callback,
        options={"maxcor": history, "maxiter": iterations, "ftol": 0.0, "gtol": 0.0},
    )
    return np.array(points), np.array(counts)


def _extended_rosenbrock_np(w):
    return scipy_optimize.rosen(w), scipy_optimize.rosen_der(w)


@pytest.mark.parametrize(
    "size, history, iterations",
    [(2, 10, 30), (8, 3, 40)],
    ids=["rosenbrock", "extended-rosenbrock-history-3"],
)
def test_lbfgs_iterates_are_scipy_lbfgsb_iterates(size, history, iterations):
    # The default search is L-BFGS-B's (Moré-Thuente, c1 = 1e-3, c2 = 0.9,
    # xtol = 0.1) and the first trial step 1/||g|| is too: every iterate,
    # every step size and every evaluation count is SciPy's, to rounding.
    start = np.tile(ROSENBROCK_START, size // 2)
    expected, counts = _lbfgsb_iterates(
        _extended_rosenbrock_np, start, history, iterations
    )

    def extended_rosenbrock(w):
        return tf.reduce_sum(100.0 * (w[1:] - w[:-1] ** 2) ** 2 + (1.0 - w[:-1]) ** 2)

    objective = FunctionObjective(extended_rosenbrock, size=size, dtype="float64")
    _, history_logs = gz.LBFGS(history=history).minimize(
        objective, start, iterations=iterations
    )
    points = np.array([record["w"] for record in history_logs])
    evaluations = np.cumsum([record.get("evaluations", 0.0) for record in history_logs])
    np.testing.assert_allclose(points, expected, rtol=0, atol=1e-8)
    np.testing.assert_array_equal(evaluations[1:], counts[1:])
    # Not a run that stalls: it gets somewhere in those iterations.
    assert scipy_optimize.rosen(points[-1]) < 1e-3 * scipy_optimize.rosen(start)


def test_conjugate_gradient_matches_scipy_on_rosenbrock():
    objective = FunctionObjective(rosenbrock, size=2, dtype="float64")
    points, _, logs = trajectory(
        gz.ConjugateGradient(), objective, ROSENBROCK_START, 300
    )
    _assert_ran_to_a_clean_stop(points, logs, "ConjugateGradient", rosenbrock_np)
    expected = scipy_minimizer(rosenbrock_np, ROSENBROCK_START, "CG")
    np.testing.assert_allclose(points[-1], expected, atol=1e-6)
    assert all(log["beta"] >= 0 for log in logs)  # PR+


@pytest.mark.parametrize(
    "solver, method",
    [
        (gz.ConjugateGradient(beta="fletcher-reeves"), "CG"),
        (gz.BFGS(), "BFGS"),
        (gz.LBFGS(), "L-BFGS-B"),
    ],
    ids=["cg-fletcher-reeves", "bfgs", "lbfgs"],
)
def test_matches_scipy_on_beale(solver, method):
    objective = FunctionObjective(beale, size=2, dtype="float64")
    w, history = solver.minimize(objective, BEALE_START, iterations=300)
    assert history[-1][STOP] == 1.0  # stopped at a stationary point
    expected = scipy_minimizer(beale_np, BEALE_START, method)
    np.testing.assert_allclose(w.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(w.numpy(), [3.0, 0.5], atol=1e-7)


# -- against the lecture's formulas, in NumPy ---------------------------------


def _pairs(points, gradient):
    """(s, y) of each step: s = w(tau+1) - w(tau), y = g(tau+1) - g(tau)."""
    g = [gradient(p) for p in points]
    return [
        (points[i + 1] - points[i], g[i + 1] - g[i]) for i in range(len(points) - 1)
    ]


def _lecture_bfgs_update(b, s, y):
    """B = (I - s y'/y's) B (I - y s'/y's) + s s'/y's, as in the lecture."""
    eye = np.eye(len(s))
    ys = y @ s
    return (eye - np.outer(s, y) / ys) @ b @ (eye - np.outer(y, s) / ys) + np.outer(
        s, s
    ) / ys


def test_bfgs_inverse_hessian_follows_the_lecture_update(bfgs_rosenbrock):
    points, states, logs = bfgs_rosenbrock
    pairs = _pairs(points, scipy_optimize.rosen_der)
    b = np.eye(2)
    for k in range(20):
        assert logs[k]["restarts"] == 0 and logs[k]["update_skipped"] == 0
        s, y = pairs[k]
        b = _lecture_bfgs_update(b, s, y)
        stored = states[k]["inverse_hessian"]
        np.testing.assert_allclose(stored, b, rtol=1e-7, atol=1e-9 * np.abs(b).max())
        # And the step taken next is along -B g.
        if np.linalg.norm(pairs[k + 1][0]) > 1e-3:
            direction = pairs[k + 1][0] / logs[k + 1]["step_size"]
            expected = -b @ scipy_optimize.rosen_der(points[k + 1])
            np.testing.assert_allclose(direction, expected, rtol=1e-6)


def test_lbfgs_direction_equals_bfgs_from_scaled_identity(lbfgs_rosenbrock):
    points, _, logs, _ = lbfgs_rosenbrock
    history = 4
    pairs = _pairs(points, scipy_optimize.rosen_der)
    checked = 0
    for k in range(1, len(logs) - 1):
        assert logs[k - 1]["restarts"] == 0 and logs[k - 1]["update_skipped"] == 0
        s_k = pairs[k][0]
        if np.linalg.norm(s_k) < 1e-3:  # (w(k+1) - w(k)) / a loses digits
            continue
        memory = pairs[max(0, k - history) : k]
        s_new, y_new = memory[-1]
        h = (s_new @ y_new) / (y_new @ y_new) * np.eye(2)  # N&W eq. 7.20
        for s, y in memory:  # oldest first
            h = _lecture_bfgs_update(h, s, y)
        expected = -h @ scipy_optimize.rosen_der(points[k])
        np.testing.assert_allclose(s_k / logs[k]["step_size"], expected, rtol=1e-6)
        checked += 1
    assert checked >= 10



def _two_loop_np(g, pairs_oldest_first):
    """Nocedal & Wright Algorithm 7.4 with B0 = gamma I (eq. 7.20)."""
    q, alphas = np.array(g, float), []
    for s, y in reversed(pairs_oldest_first):
        alphas.append((s @ q) / (y @ s))
        q = q - alphas[-1] * y
    if not pairs_oldest_first:
        return q
    s_new, y_new = pairs_oldest_first[-1]
    r = (s_new @ y_new) / (y_new @ y_new) * q
    for (s, y), alpha in zip(pairs_oldest_first, reversed(alphas)):
        r = r + s * (alpha - (y @ r) / (y @ s))
    return r


@pytest.mark.parametrize("pairs, head", [(0, 0), (1, 1), (3, 3), (5, 5), (5, 2), (5, 0)])
def test_lbfgs_inverse_hessian_product_is_the_two_loop_recursion(pairs, head):
    # A ring buffer of 5 slots, empty, partly filled and wrapped; slot
    # head - 1 holds the newest pair, stale slots hold garbage.
    rng = np.random.default_rng(pairs * 7 + head)
    m, slots = 7, 5
    s_history = rng.normal(size=(slots, m))
    y_history = s_history * rng.uniform(0.5, 3.0, size=(slots, m)) + 0.2 * rng.normal(size=(slots, m))
    g = rng.normal(size=m)
    order = [(head - pairs + j) % slots for j in range(pairs)]
    expected = _two_loop_np(g, [(s_history[i], y_history[i]) for i in order])
    solver = gz.LBFGS(history=slots)
    got = solver.inverse_hessian_product(
        tf.constant(g), tf.constant(s_history), tf.constant(y_history),
        tf.constant(float(pairs), tf.float64), tf.constant(float(head), tf.float64),
    )
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


# -- closed-form properties on quadratics -------------------------------------


def _spd_quadratic(m, condition, seed):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(m, m)))
    a = q @ np.diag(np.geomspace(1.0, condition, m)) @ q.T
    b = rng.normal(size=m)
    a_tf, b_tf = tf.constant(a), tf.constant(b)

    def function(w):
        return 0.5 * tf.reduce_sum(w * tf.linalg.matvec(a_tf, w)) - tf.reduce_sum(
            b_tf * w
        )

    return FunctionObjective(function, size=m, dtype="float64"), a, b


@pytest.mark.parametrize("beta", ["fletcher-reeves", "polak-ribiere"])
def test_conjugate_gradient_with_exact_search_solves_a_quadratic_in_m_steps(beta):
    m = 6
    objective, a, b = _spd_quadratic(m, condition=50.0, seed=1)
    solver = gz.ConjugateGradient(beta=beta, line_search="exact")
    w, history = solver.minimize(objective, np.zeros(m), iterations=m)
    assert len(history) == m + 1
    solution = np.linalg.solve(a, b)
    np.testing.assert_allclose(w.numpy(), solution, rtol=1e-9, atol=1e-12)
    # Not before: the m distinct eigenvalues need all m directions.
    error = np.linalg.norm(history[m - 1]["w"] - solution) / np.linalg.norm(solution)
    assert error > 1e-3


def test_steepest_descent_with_exact_search_makes_successive_gradients_orthogonal():
    m = 5
    objective, a, b = _spd_quadratic(m, condition=20.0, seed=2)
    _, history = gz.SteepestDescent().minimize(objective, np.ones(m), iterations=12)
    assert len(history) == 13
    gradients = [a @ record["w"] - b for record in history]
    for g_old, g_new in itertools.pairwise(gradients):
        cosine = g_old @ g_new / (np.linalg.norm(g_old) * np.linalg.norm(g_new))
        assert abs(cosine) < 1e-6
    # Each step is the exact minimizer along -g: a = g'g / g'Ag.
    for record, g in zip(history[1:], gradients):
        np.testing.assert_allclose(record["step_size"], g @ g / (g @ a @ g), rtol=1e-7)


# -- failure handling ---------------------------------------------------------


class _SteepestOnly(StrongWolfe):
    """A strong-Wolfe search that fails unless d is along -g (to exercise
    the solvers' retry along -g)."""

    def _search(self, objective, w, direction, value, gradient, slope, initial_step):
        cosine = -slope / (tf.norm(gradient) * tf.norm(direction))
        failed = LineSearchResult(
            step=tf.zeros([], w.dtype),
            value=value,
            gradient=gradient,
            evaluations=tf.constant(0),
            failed=tf.constant(True),
        )
        return tf.cond(
            cosine > 1.0 - 1e-12,
            lambda: super(_SteepestOnly, self)._search(
                objective, w, direction, value, gradient, slope, initial_step
            ),
            lambda: failed,
        )


@pytest.mark.parametrize("solver_class", [gz.ConjugateGradient, gz.BFGS, gz.LBFGS])
def test_failed_search_along_d_restarts_along_minus_gradient(solver_class):
    objective = FunctionObjective(rosenbrock, size=2, dtype="float64")
    options = (
        {"beta": "fletcher-reeves"} if solver_class is gz.ConjugateGradient else {}
    )
    # (Fletcher-Reeves: beta > 0, so every d after the first differs from -g.)
    solver = solver_class(line_search=_SteepestOnly(c2=0.1), **options)
    points, states, logs = trajectory(solver, objective, ROSENBROCK_START, 6)
    assert len(logs) == 6 and all(log[STOP] == 0 for log in logs)
    for k, log in enumerate(logs):
        g = scipy_optimize.rosen_der(points[k])
        step = points[k + 1] - points[k]
        np.testing.assert_allclose(step, -log["step_size"] * g, rtol=1e-9)
        assert scipy_optimize.rosen(points[k + 1]) < scipy_optimize.rosen(points[k])
        # The first step is along -g already; later ones restart.
        assert log["line_search_failed"] == (1.0 if k > 0 else 0.0)
        assert log["restarts"] == k
    if solver_class is gz.ConjugateGradient:
        assert all(log["beta"] == 0 for log in logs)
    if solver_class is gz.BFGS:  # B reset to I, then one update
        assert states[-1]["updates"] == 1
        s, y = (
            points[-1] - points[-2],
            scipy_optimize.rosen_der(points[-1]) - scipy_optimize.rosen_der(points[-2]),
        )
        np.testing.assert_allclose(
            states[-1]["inverse_hessian"],
            _lecture_bfgs_update(np.eye(2), s, y),
            rtol=1e-7,
        )
    if solver_class is gz.LBFGS:  # memory cleared, then one pair
        assert states[-1]["pairs"] == 1


@pytest.mark.parametrize(
    "solver", [gz.SteepestDescent(), gz.ConjugateGradient(), gz.BFGS(), gz.LBFGS()]
)
def test_no_finite_step_anywhere_stops_without_moving(solver):
    w0 = tf.constant([0.5, -1.0], tf.float64)

    def function(w):
        finite_here = tf.reduce_all(tf.equal(w, w0))
        return tf.where(
            finite_here, tf.reduce_sum(w * w), tf.constant(np.nan, tf.float64)
        )

    objective = FunctionObjective(function, size=2, dtype="float64")
    w, history = solver.minimize(objective, w0, iterations=5)
    assert len(history) == 2
    assert history[-1][STOP] == 1.0 and history[-1]["line_search_failed"] == 1.0
    np.testing.assert_array_equal(w.numpy(), w0.numpy())
    assert type(solver).stop_message


def test_stationary_point_stops_at_once():
    objective = FunctionObjective(
        lambda w: tf.reduce_sum(w * w), size=3, dtype="float64"
    )
    w, history = gz.LBFGS().minimize(objective, np.zeros(3), iterations=5)
    assert len(history) == 2 and history[-1][STOP] == 1.0
    np.testing.assert_array_equal(w.numpy(), np.zeros(3))


# -- evaluations, XLA and float32 ---------------------------------------------


def test_changing_objective_is_evaluated_at_every_step():
    class Changing(FunctionObjective):
        stationary = False  # as a mini-batch objective: a new batch each step

    fixed = FunctionObjective(rosenbrock, size=2, dtype="float64")
    changing = Changing(rosenbrock, size=2, dtype="float64")
    _, fixed_history = gz.LBFGS().minimize(fixed, ROSENBROCK_START, iterations=4)
    _, changing_history = gz.LBFGS().minimize(changing, ROSENBROCK_START, iterations=4)
    # Same iterates; the changing one pays one more evaluation after step 1.
    for a, b in zip(fixed_history, changing_history):
        np.testing.assert_array_equal(a["w"], b["w"])
    extra = [
        b["evaluations"] - a["evaluations"]
        for a, b in zip(fixed_history[1:], changing_history[1:])
    ]
    assert extra == [0.0, 1.0, 1.0, 1.0]


def test_lbfgs_compiles_with_xla(lbfgs_rosenbrock):
    objective = FunctionObjective(rosenbrock, size=2, dtype="float64")
    w, history = gz.LBFGS(history=4).minimize(
        objective, ROSENBROCK_START, iterations=200, jit_compile=True
    )
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0], atol=1e-8)
    assert abs(len(history) - len(lbfgs_rosenbrock[0])) <= 2


def test_lbfgs_in_float32():
    objective = FunctionObjective(rosenbrock, size=2, dtype="float32")
    w, history = gz.LBFGS().minimize(
        objective, ROSENBROCK_START.astype("float32"), iterations=100
    )
    assert w.dtype == tf.float32
    assert all(np.isfinite(record["w"]).all() for record in history)
    np.testing.assert_allclose(w.numpy(), [1.0, 1.0], atol=1e-2)


# -- configuration and validation ----------------------------------------------


@pytest.mark.parametrize(
    "solver",
    [
        gz.SteepestDescent(line_search="armijo"),
        gz.ConjugateGradient(beta="fletcher-reeves", restart=7, line_search="exact"),
        gz.ConjugateGradient(),
        gz.BFGS(line_search=gz.line_search.StrongWolfe(c1=1e-3, c2=0.5)),
        gz.LBFGS(history=3),
    ],
)
def test_config_round_trip(solver):
    config = solver.get_config()
    restored = type(solver).from_config(config)
    assert restored.get_config() == config
    assert type(restored.line_search) is type(solver.line_search)
    assert restored.line_search.get_config() == solver.line_search.get_config()
    again = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(solver)
    )
    assert again.get_config() == config


def test_line_search_defaults():
    assert isinstance(gz.SteepestDescent().line_search, gz.line_search.Exact)
    assert gz.ConjugateGradient().line_search.c2 == 0.1
    assert gz.BFGS().line_search.c2 == 0.9
    assert gz.LBFGS().line_search.c2 == 0.9
    assert isinstance(
        gz.LBFGS(line_search="armijo").line_search, gz.line_search.Backtracking
    )


@pytest.mark.parametrize(
    "build, message",
    [
        (
            lambda: gz.ConjugateGradient(beta="hestenes-stiefel"),
            "Received: beta='hestenes-stiefel'",
        ),
        (lambda: gz.ConjugateGradient(restart=0), "Received: restart=0"),
        (lambda: gz.ConjugateGradient(restart=2.5), "Received: restart=2.5"),
        (lambda: gz.LBFGS(history=0), "Received: history=0"),
        (lambda: gz.LBFGS(history=True), "Received: history=True"),
        (lambda: gz.BFGS(line_search="wolfe"), "Received: line_search='wolfe'"),
        (lambda: gz.SteepestDescent(line_search=None), "Received: line_search=None"),
    ],
)
def test_validation_names_argument_and_value(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bfgs_refuses_a_matrix_that_does_not_fit():
    with pytest.raises(ValueError, match="m=1000000"):
        gz.BFGS().minimize(
            lambda w: tf.reduce_sum(w * w), tf.zeros([1_000_000]), iterations=1
        )
    # LBFGS holds 2 * history * m numbers only.
    gz.LBFGS().check_size(100_000, "float32")


def test_lbfgs_refuses_a_history_that_does_not_fit():
    # 2 * history * m float32 numbers: 2 * 10^9 * 1000 * 4 bytes = 7450.6 GiB.
    expected_gib = 2 * 10**9 * 1000 * 4 / 2**30
    with pytest.raises(ValueError) as refused:
        gz.LBFGS(history=10**9).check_size(1000, "float32")
    message = str(refused.value)
    assert "m=1000" in message and "history=1000000000" in message
    assert f"{expected_gib:.1f} GiB" in message
    # The bound is the memory the two histories take, to the byte.
    solver = gz.LBFGS(history=4)
    needed = 2 * 4 * 250 * 8
    solver.check_size(250, "float64", budget_bytes=needed)
    with pytest.raises(ValueError, match="history=4"):
        solver.check_size(250, "float64", budget_bytes=needed - 1)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: gz.LBFGS(history=2.5), "Received: history=2.5"),
        (lambda: gz.LBFGS(history=10.0), "Received: history=10.0"),
        (lambda: gz.LBFGS(history="10"), "Received: history='10'"),
        (lambda: gz.LBFGS(history=None), "Received: history=None"),
        (lambda: gz.ConjugateGradient(restart=np.inf), "Received: restart=inf"),
        (lambda: gz.ConjugateGradient(restart=True), "Received: restart=True"),
    ],
)
def test_non_integers_are_refused_by_name(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_numpy_integers_are_accepted():
    assert gz.LBFGS(history=np.int64(7)).get_config()["history"] == 7
    config = gz.ConjugateGradient(restart=np.int32(5)).get_config()
    assert config["restart"] == 5 and type(config["restart"]) is int


class _Moving(FunctionObjective):
    """The same function, but claiming to change between steps (as a
    mini-batch objective does): every step evaluates E and g at w again."""

    stationary = False


_LOGCOSH_A = np.random.default_rng(3).normal(size=(6, 4))
_LOGCOSH_B = np.random.default_rng(4).normal(size=6)


def _log_cosh_regression(w):
    """sum log cosh(A w - b) + 0.05 |w|^2: smooth, convex, not quadratic."""
    residuals = tf.linalg.matvec(tf.constant(_LOGCOSH_A), w) - tf.constant(_LOGCOSH_B)
    return tf.reduce_sum(tf.math.log(tf.cosh(residuals))) + 0.05 * tf.reduce_sum(w * w)


def _log_cosh_regression_np(w):
    return np.log(np.cosh(_LOGCOSH_A @ w - _LOGCOSH_B)).sum() + 0.05 * w @ w


@pytest.mark.parametrize(
    "make",
    [
        lambda: gz.SteepestDescent(),
        lambda: gz.SteepestDescent(line_search="armijo"),
        lambda: gz.ConjugateGradient(),
        lambda: gz.BFGS(line_search="exact"),
        lambda: gz.LBFGS(history=3),
    ],
    ids=["sd-exact", "sd-armijo", "cg", "bfgs-exact", "lbfgs"],
)
def test_reusing_the_last_point_equals_evaluating_again(make):
    iterations = 12
    w0 = np.array([1.0, -2.0, 0.5, 3.0])
    reused, fresh = (
        make().minimize(objective, w0, iterations=iterations)[1]
        for objective in (
            FunctionObjective(_log_cosh_regression, size=4, dtype="float64"),
            _Moving(_log_cosh_regression, size=4, dtype="float64"),
        )
    )
    assert len(reused) == len(fresh) == iterations + 1
    # The same iterates and logs to rounding (the gradient a line search
    # computes inside its loop may differ in the last bit from one computed
    # outside it: TF may sum its terms in another order there).
    for a, b in zip(reused, fresh):
        np.testing.assert_allclose(a["w"], b["w"], rtol=1e-13, atol=1e-15)
        for key in a.keys() - {"w", "evaluations"}:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-12, atol=1e-15)
    # Every step after the first starts where the last search ended: one
    # evaluation fewer each.
    saved = [b["evaluations"] - a["evaluations"] for a, b in zip(reused[1:], fresh[1:])]
    assert saved == [0.0] + [1.0] * (iterations - 1)
    # And the runs made progress (not two runs standing still).
    values = [_log_cosh_regression_np(record["w"]) for record in reused]
    assert values[-1] < values[0] - 1.0
