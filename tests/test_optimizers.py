"""Per-parameter optimizers (docs/methods.md, the per-parameter table).

Every expected value comes from an independent source: a NumPy transcription
of the lecture's equation written below, the lecture's literal NAG
look-ahead sequence, Keras built-ins or torch.optim where the arithmetic
coincides, or a single-device / uninterrupted Keras run of the same
optimizer.
"""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz

# --------------------------------------------------------------------------
# NumPy transcriptions of docs/methods.md. Each factory takes the
# optimizer's hyper-parameters (learning rate excluded) and returns
# step(w, g, a, tau) -> w(tau + 1), keeping its own state.
# --------------------------------------------------------------------------


def np_gradient_descent():
    def step(w, g, a, tau):
        return w - a * g

    return step


def np_momentum(momentum=0.9, dampened=False):
    mu = momentum
    state = {"d": 0.0}

    def step(w, g, a, tau):
        scale = (1 - mu) if dampened else 1.0
        state["d"] = mu * state["d"] - a * scale * g
        return w + state["d"]

    return step


def np_nesterov(momentum=0.9):
    mu = momentum
    state = {"d": 0.0}

    def step(v, g, a, tau):
        d_new = mu * state["d"] - a * g
        state["d"] = d_new
        return v + mu * d_new - a * g

    return step


def np_adagrad(epsilon=1e-8):
    state = {"G": 0.0}

    def step(w, g, a, tau):
        state["G"] = state["G"] + g**2
        return w - a * g / np.sqrt(state["G"] + epsilon)

    return step


def np_rmsprop(rho=0.9, epsilon=1e-8):
    state = {"G": None}

    def step(w, g, a, tau):
        if tau == 0:
            state["G"] = g**2
        else:
            state["G"] = rho * state["G"] + (1 - rho) * g**2
        return w - a * g / np.sqrt(state["G"] + epsilon)

    return step


def np_adadelta(rho=0.95, epsilon=1e-6, initial_delta=0.0):
    state = {"G": 0.0, "D": 0.0, "dw": initial_delta}

    def step(w, g, a, tau):
        state["D"] = rho * state["D"] + (1 - rho) * state["dw"] ** 2
        state["G"] = rho * state["G"] + (1 - rho) * g**2
        dw = -a * np.sqrt(state["D"] + epsilon) / np.sqrt(state["G"] + epsilon) * g
        state["dw"] = dw
        return w + dw

    return step


def np_adam(beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    state = {"m": 0.0, "G": 0.0}

    def step(w, g, a, tau):
        t = tau + 1
        state["m"] = beta_1 * state["m"] + (1 - beta_1) * g
        state["G"] = beta_2 * state["G"] + (1 - beta_2) * g**2
        m_hat = state["m"] / (1 - beta_1**t)
        G_hat = state["G"] / (1 - beta_2**t)
        return w - a * m_hat / np.sqrt(G_hat + epsilon)

    return step


def np_adamax(beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    state = {"m": 0.0, "u": 0.0}

    def step(w, g, a, tau):
        t = tau + 1
        state["m"] = beta_1 * state["m"] + (1 - beta_1) * g
        state["u"] = np.maximum(beta_2 * state["u"], np.abs(g))
        return w - a / (1 - beta_1**t) * state["m"] / (state["u"] + epsilon)

    return step


def np_nadam(beta_1=0.9, beta_2=0.999, epsilon=1e-8):
    state = {"m": 0.0, "G": 0.0}

    def step(w, g, a, tau):
        t = tau + 1
        state["m"] = beta_1 * state["m"] + (1 - beta_1) * g
        state["G"] = beta_2 * state["G"] + (1 - beta_2) * g**2
        m_bar = beta_1 * state["m"] / (1 - beta_1 ** (t + 1)) + (1 - beta_1) * g / (
            1 - beta_1**t
        )
        return w - a * m_bar / np.sqrt(state["G"] / (1 - beta_2**t) + epsilon)

    return step


# One table drives the generic checks. Hyper-parameters are deliberately not
# the defaults (a swapped or ignored argument shows), and epsilon is large
# enough that putting it on the wrong side of a square root shows too.
# Columns: id, class, kwargs, NumPy reference, kwargs that converge on the
# test parabola within CONVERGE_STEPS.
OPTIMIZERS = [
    ("gd", gz.GradientDescent, dict(learning_rate=0.05), np_gradient_descent,
     dict(learning_rate=0.1)),
    ("momentum", gz.Momentum, dict(learning_rate=0.05, momentum=0.7), np_momentum,
     dict(learning_rate=0.05, momentum=0.8)),
    ("momentum_dampened", gz.Momentum,
     dict(learning_rate=0.1, momentum=0.6, dampened=True), np_momentum,
     dict(learning_rate=0.2, momentum=0.8, dampened=True)),
    ("nesterov", gz.NesterovMomentum, dict(learning_rate=0.05, momentum=0.8),
     np_nesterov, dict(learning_rate=0.05, momentum=0.8)),
    ("adagrad", gz.AdaGrad, dict(learning_rate=0.3, epsilon=1e-3), np_adagrad,
     dict(learning_rate=0.5)),
    ("rmsprop", gz.RMSProp, dict(learning_rate=0.05, rho=0.8, epsilon=1e-3),
     np_rmsprop, dict(learning_rate=0.01)),
    ("adadelta", gz.AdaDelta,
     dict(learning_rate=0.5, rho=0.7, epsilon=1e-3, initial_delta=0.2), np_adadelta,
     dict(initial_delta=0.1, epsilon=1e-4)),
    ("adam", gz.Adam, dict(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=1e-3),
     np_adam, dict(learning_rate=0.02)),
    ("adamax", gz.Adamax,
     dict(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=1e-3), np_adamax,
     dict(learning_rate=0.02)),
    ("nadam", gz.Nadam, dict(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=1e-3),
     np_nadam, dict(learning_rate=0.02)),
]
IDS = [row[0] for row in OPTIMIZERS]
CONVERGE_STEPS = 600

# The test problem: E(w) = 1/2 sum h (w - c)^2 on a 2 x 3 variable, so
# g(w) = h (w - c) depends on the current weights.
H = np.array([[0.5, 2.0, 5.0], [0.1, 1.0, 3.0]])
C = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
W0 = np.array([[-1.0, 1.5, 2.0], [0.0, 1.0, 1.0]])


def gradient(w):
    return H * (w - C)


def energy(w):
    return 0.5 * np.sum(H * (w - C) ** 2)


def without_learning_rate(kwargs):
    return {k: v for k, v in kwargs.items() if k != "learning_rate"}


def run_keras(optimizer, steps, dtype):
    """`steps` calls of apply_gradients with g = h (w - c) taken at the
    variable; returns the trajectory w(1), ..., w(steps)."""
    w = keras.Variable(W0.astype(dtype), dtype=dtype)
    trajectory = []
    for _ in range(steps):
        optimizer.apply_gradients([(gradient(w.numpy()).astype(dtype), w)])
        trajectory.append(w.numpy().astype(np.float64))
    return np.array(trajectory)


def run_numpy(step, steps, learning_rate):
    w = W0.copy()
    trajectory = []
    for tau in range(steps):
        w = step(w, gradient(w), learning_rate(tau), tau)
        trajectory.append(w)
    return np.array(trajectory)


# --------------------------------------------------------------------------
# Against the NumPy transcriptions
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls,kwargs,reference,_", OPTIMIZERS, ids=IDS)
def test_matches_numpy_transcription(name, cls, kwargs, reference, _):
    """10 steps against the equation, in float64 and float32, with a constant
    learning rate and with a LearningRateSchedule."""
    steps = 10
    hyper = without_learning_rate(kwargs)
    a = kwargs["learning_rate"]
    want = run_numpy(reference(**hyper), steps, lambda tau: a)
    assert np.all(np.abs(want - W0) > 1e-3)  # every weight actually moved

    keras.config.set_floatx("float64")
    got = run_keras(cls(**kwargs), steps, "float64")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-12)

    keras.config.set_floatx("float32")
    got = run_keras(cls(**kwargs), steps, "float32")
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)

    # a(tau) = a0 / (1 + tau / 2), evaluated by the optimizer at tau = 0, 1, ...
    keras.config.set_floatx("float64")
    schedule = keras.optimizers.schedules.InverseTimeDecay(
        a, decay_steps=1, decay_rate=0.5
    )
    got = run_keras(cls(**hyper, learning_rate=schedule), steps, "float64")
    want = run_numpy(reference(**hyper), steps, lambda tau: a / (1 + 0.5 * tau))
    # Keras schedules compute in float32: allow for their rounding.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_rmsprop_first_step_uses_squared_gradient():
    """G(0) = g(0)^2: the first step is a g / sqrt(g^2 + eps) in every weight."""
    keras.config.set_floatx("float64")
    got = run_keras(gz.RMSProp(learning_rate=0.1, rho=0.9, epsilon=1e-8), 1, "float64")
    g = gradient(W0)
    np.testing.assert_allclose(got[0], W0 - 0.1 * g / np.sqrt(g**2 + 1e-8), rtol=1e-12)


def test_nesterov_is_the_lectures_look_ahead_sequence():
    """The lecture's NAG, run literally on the quadratic:
    w(t+1) = w(t) - a g(w(t) + mu dw(t)) + mu dw(t), dw(t) = w(t) - w(t-1),
    dw(0) = 0. The variable holds the look-ahead point v = w + mu dw."""
    keras.config.set_floatx("float64")
    a, mu, steps = 0.05, 0.9, 12
    got = run_keras(gz.NesterovMomentum(learning_rate=a, momentum=mu), steps, "float64")
    w_prev, w = W0.copy(), W0.copy()
    look_ahead = []
    for _ in range(steps):
        dw = w - w_prev
        w_next = w - a * gradient(w + mu * dw) + mu * dw
        w_prev, w = w, w_next
        look_ahead.append(w + mu * (w - w_prev))
    np.testing.assert_allclose(got, np.array(look_ahead), rtol=1e-10, atol=1e-12)


def test_dampened_momentum_has_learning_rate_a_on_flat_surfaces():
    """Implementation 2 under a constant gradient: the step tends to a*g
    (implementation 1: a*g/(1-mu))."""
    keras.config.set_floatx("float64")
    a, mu = 0.1, 0.5
    for dampened, limit in ((True, a), (False, a / (1 - mu))):
        w = keras.Variable(np.zeros(1), dtype="float64")
        optimizer = gz.Momentum(learning_rate=a, momentum=mu, dampened=dampened)
        for _ in range(60):
            before = w.numpy().copy()
            optimizer.apply_gradients([(np.ones(1), w)])
        np.testing.assert_allclose(before - w.numpy(), [limit], rtol=1e-10)


# --------------------------------------------------------------------------
# Against Keras built-ins and torch.optim, where the arithmetic coincides
# --------------------------------------------------------------------------

KERAS_TWINS = [
    # (gdzoo optimizer, Keras optimizer with the same update). Keras casts its
    # Python-float hyper-parameters through float32, so they are chosen
    # exactly representable in float32 (0.75, 0.875...), keeping the float64
    # comparison tight.
    ("gd", lambda: gz.GradientDescent(0.05), lambda: keras.optimizers.SGD(0.05)),
    ("momentum", lambda: gz.Momentum(0.05, momentum=0.75),
     lambda: keras.optimizers.SGD(0.05, momentum=0.75)),
    # d = mu d - a (1 - mu) g is SGD with learning rate a (1 - mu).
    ("momentum_dampened", lambda: gz.Momentum(0.1, momentum=0.625, dampened=True),
     lambda: keras.optimizers.SGD(0.1 * (1 - 0.625), momentum=0.625)),
    ("nesterov", lambda: gz.NesterovMomentum(0.05, momentum=0.875),
     lambda: keras.optimizers.SGD(0.05, momentum=0.875, nesterov=True)),
    # Keras's Adagrad also has eps inside the sqrt; its accumulator must start at 0.
    ("adagrad", lambda: gz.AdaGrad(0.3, epsilon=1e-3),
     lambda: keras.optimizers.Adagrad(
         0.3, initial_accumulator_value=0.0, epsilon=1e-3)),
    # Keras's Adadelta averages the unscaled change: equal for a = 1, dw(0) = 0.
    ("adadelta", lambda: gz.AdaDelta(1.0, rho=0.75, epsilon=1e-3),
     lambda: keras.optimizers.Adadelta(1.0, rho=0.75, epsilon=1e-3)),
    # Keras's Adam has eps outside the sqrt: equal for eps = 0.
    ("adam", lambda: gz.Adam(0.05, beta_1=0.75, beta_2=0.875, epsilon=0.0),
     lambda: keras.optimizers.Adam(0.05, beta_1=0.75, beta_2=0.875, epsilon=0.0)),
    ("adamax", lambda: gz.Adamax(0.05, beta_1=0.75, beta_2=0.875, epsilon=1e-3),
     lambda: keras.optimizers.Adamax(0.05, beta_1=0.75, beta_2=0.875, epsilon=1e-3)),
]


@pytest.mark.parametrize(
    "name,ours,theirs", KERAS_TWINS, ids=[t[0] for t in KERAS_TWINS]
)
def test_matches_keras_builtin(name, ours, theirs):
    keras.config.set_floatx("float64")
    got = run_keras(ours(), 10, "float64")
    want = run_keras(theirs(), 10, "float64")
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


TORCH_TWINS = [
    # (gdzoo optimizer, torch.optim factory on a parameter list)
    ("gd", lambda: gz.GradientDescent(0.05), lambda t, p: t.optim.SGD(p, lr=0.05)),
    # torch: b = mu b + g ; w -= a b, i.e. d = -a b for a constant a.
    ("momentum", lambda: gz.Momentum(0.05, momentum=0.7),
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.7, dampening=0.0)),
    ("nesterov", lambda: gz.NesterovMomentum(0.05, momentum=0.8),
     lambda t, p: t.optim.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
    # torch adds eps outside the sqrt: equal for eps = 0 (no gradient is 0 here).
    ("adagrad", lambda: gz.AdaGrad(0.3, epsilon=0.0),
     lambda t, p: t.optim.Adagrad(p, lr=0.3, eps=0.0)),
    ("adadelta", lambda: gz.AdaDelta(1.0, rho=0.7, epsilon=1e-3),
     lambda t, p: t.optim.Adadelta(p, lr=1.0, rho=0.7, eps=1e-3)),
    ("adam", lambda: gz.Adam(0.05, beta_1=0.8, beta_2=0.9, epsilon=0.0),
     lambda t, p: t.optim.Adam(p, lr=0.05, betas=(0.8, 0.9), eps=0.0)),
    # torch takes max(b2 u, |g| + eps): equal for eps = 0.
    ("adamax", lambda: gz.Adamax(0.05, beta_1=0.8, beta_2=0.9, epsilon=0.0),
     lambda t, p: t.optim.Adamax(p, lr=0.05, betas=(0.8, 0.9), eps=0.0)),
]


@pytest.mark.parametrize(
    "name,ours,theirs", TORCH_TWINS, ids=[t[0] for t in TORCH_TWINS]
)
def test_matches_torch_optim(name, ours, theirs):
    torch = pytest.importorskip("torch")
    keras.config.set_floatx("float64")
    steps = 10
    got = run_keras(ours(), steps, "float64")
    w = torch.tensor(W0, dtype=torch.float64, requires_grad=True)
    h = torch.tensor(H, dtype=torch.float64)
    c = torch.tensor(C, dtype=torch.float64)
    optimizer = theirs(torch, [w])
    want = []
    for _ in range(steps):
        optimizer.zero_grad()
        (0.5 * (h * (w - c) ** 2).sum()).backward()
        optimizer.step()
        want.append(w.detach().numpy().copy())
    np.testing.assert_allclose(got, np.array(want), rtol=1e-10, atol=1e-13)


# --------------------------------------------------------------------------
# Generic checks driven by the table
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name,cls,_,__,converge_kwargs", OPTIMIZERS, ids=IDS)
def test_converges_on_a_parabola_with_finite_state(name, cls, _, __, converge_kwargs):
    """Inside one tf.function, in float32 and float64: E drops 1000-fold and
    every slot keeps the variable's dtype and stays finite."""
    for dtype in ("float32", "float64"):
        keras.config.set_floatx(dtype)
        optimizer = cls(**converge_kwargs)
        w = keras.Variable(W0.astype(dtype), dtype=dtype)
        h = tf.constant(H, dtype=dtype)
        c = tf.constant(C, dtype=dtype)
        optimizer.build([w])

        @tf.function
        def train():
            for _ in tf.range(CONVERGE_STEPS):
                optimizer.apply_gradients([(h * (w.value - c), w)])

        train()
        assert int(optimizer.iterations.numpy()) == CONVERGE_STEPS
        for variable in optimizer.variables[2:]:  # the slots
            assert variable.dtype == dtype
        for variable in optimizer.variables:
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(variable)))
        assert energy(w.numpy()) < 1e-3 * energy(W0), dtype


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_config_round_trip(name, cls, kwargs, _, __):
    optimizer = cls(**kwargs, clipnorm=1.0, name=f"my_{name}")
    config = optimizer.get_config()
    for key, value in kwargs.items():
        assert config[key] == pytest.approx(value)
    restored = cls.from_config(config)
    assert type(restored) is cls
    assert restored.get_config() == config
    # Through the registry, as a .keras file does it.
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(revived) is cls
    assert revived.get_config() == config
    # A schedule survives too.
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    scheduled = cls(**{**kwargs, "learning_rate": schedule})
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(scheduled))
    assert revived.get_config() == scheduled.get_config()
    assert revived.get_config()["learning_rate"]["config"] == schedule.get_config()


DEFAULTS = [
    # docs/methods.md, the per-parameter table.
    (gz.GradientDescent, dict(learning_rate=0.01)),
    (gz.Momentum, dict(learning_rate=0.01, momentum=0.9, dampened=False)),
    (gz.NesterovMomentum, dict(learning_rate=0.01, momentum=0.9)),
    (gz.AdaGrad, dict(learning_rate=0.01, epsilon=1e-8)),
    (gz.RMSProp, dict(learning_rate=0.001, rho=0.9, epsilon=1e-8)),
    (gz.AdaDelta, dict(learning_rate=1.0, rho=0.95, epsilon=1e-6, initial_delta=0.0)),
    (gz.Adam, dict(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8)),
    (gz.Adamax, dict(learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-8)),
    (gz.Nadam, dict(learning_rate=0.002, beta_1=0.9, beta_2=0.999, epsilon=1e-8)),
]


def test_defaults_are_the_documented_ones():
    for cls, defaults in DEFAULTS:
        config = cls().get_config()
        for key, value in defaults.items():
            assert config[key] == pytest.approx(value, rel=1e-7), (cls, key)


def test_sparse_gradients_match_dense():
    """An embedding-style IndexedSlices gradient updates like its dense form."""
    for name, cls, kwargs, _, _ in OPTIMIZERS:
        results = []
        for sparse in (False, True):
            w = keras.Variable(np.ones((4, 2), "float32"))
            optimizer = cls(**kwargs)
            for rows in ([0, 2], [0, 2], [1, 3]):
                g = tf.IndexedSlices(
                    tf.constant([[1.0, 2.0], [3.0, -1.0]]),
                    tf.constant(rows),
                    tf.constant([4, 2]),
                )
                if not sparse:
                    g = tf.convert_to_tensor(g)
                optimizer.apply_gradients([(g, w)])
            results.append(w.numpy())
        np.testing.assert_allclose(results[1], results[0], rtol=1e-6, err_msg=name)


# --------------------------------------------------------------------------
# Validation: every bad hyper-parameter is refused by name
# --------------------------------------------------------------------------

INVALID = [
    (gz.GradientDescent, dict(learning_rate=0.0), "learning_rate"),
    (gz.GradientDescent, dict(learning_rate=-0.1), "learning_rate"),
    (gz.GradientDescent, dict(learning_rate=float("nan")), "learning_rate"),
    (gz.Momentum, dict(learning_rate=-1.0), "learning_rate"),
    (gz.Momentum, dict(momentum=-0.1), "momentum"),
    (gz.Momentum, dict(momentum="0.9"), "momentum"),
    (gz.Momentum, dict(momentum=1.5, dampened=True), "momentum"),
    (gz.Momentum, dict(momentum=1.0, dampened=True), "momentum"),
    (gz.Momentum, dict(momentum=0.0, dampened=True), "momentum"),
    (gz.Momentum, dict(dampened="yes"), "dampened"),
    (gz.NesterovMomentum, dict(learning_rate=0.0), "learning_rate"),
    (gz.NesterovMomentum, dict(momentum=-0.5), "momentum"),
    (gz.AdaGrad, dict(learning_rate=-0.01), "learning_rate"),
    (gz.AdaGrad, dict(epsilon=-1e-8), "epsilon"),
    (gz.RMSProp, dict(learning_rate=0.0), "learning_rate"),
    (gz.RMSProp, dict(rho=0.0), "rho"),
    (gz.RMSProp, dict(rho=1.0), "rho"),
    (gz.RMSProp, dict(epsilon=-1.0), "epsilon"),
    (gz.AdaDelta, dict(learning_rate=-1.0), "learning_rate"),
    (gz.AdaDelta, dict(rho=1.2), "rho"),
    (gz.AdaDelta, dict(rho=0.0), "rho"),
    (gz.AdaDelta, dict(epsilon=-1e-6), "epsilon"),
    (gz.AdaDelta, dict(initial_delta=-0.1), "initial_delta"),
    (gz.AdaDelta, dict(epsilon=0.0, initial_delta=0.0), "initial_delta"),
    (gz.Adam, dict(learning_rate=0.0), "learning_rate"),
    (gz.Adam, dict(beta_1=1.0), "beta_1"),
    (gz.Adam, dict(beta_1=-0.1), "beta_1"),
    (gz.Adam, dict(beta_2=1.0), "beta_2"),
    (gz.Adam, dict(epsilon=-1e-8), "epsilon"),
    (gz.Adamax, dict(learning_rate=-0.002), "learning_rate"),
    (gz.Adamax, dict(beta_1=1.5), "beta_1"),
    (gz.Adamax, dict(beta_2=-0.5), "beta_2"),
    (gz.Adamax, dict(epsilon=float("inf")), "epsilon"),
    (gz.Nadam, dict(learning_rate=-0.002), "learning_rate"),
    (gz.Nadam, dict(beta_1=1.0), "beta_1"),
    (gz.Nadam, dict(beta_2=2.0), "beta_2"),
    (gz.Nadam, dict(epsilon=-1.0), "epsilon"),
]


@pytest.mark.parametrize(
    "cls", sorted({c for c, _, _ in INVALID}, key=lambda c: c.__name__)
)
def test_invalid_hyper_parameters_are_refused_by_name(cls):
    for kwargs, argument in [(k, a) for c, k, a in INVALID if c is cls]:
        with pytest.raises(ValueError, match=f"`{argument}`") as info:
            cls(**kwargs)
            pytest.fail(f"{cls.__name__}(**{kwargs}) was accepted")
        assert "Received:" in str(info.value)


def test_message_is_the_documented_keras_wording():
    # The example message of docs/methods.md.
    with pytest.raises(ValueError) as info:
        gz.Momentum(momentum=1.5, dampened=True)
    assert str(info.value) == (
        "Argument `momentum` must be in (0, 1) when dampened=True. "
        "Received: momentum=1.5"
    )


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_numpy_scalars_are_accepted(name, cls, kwargs, _, __):
    """np.float32(0.9) is a number like 0.9: the same config (plain Python
    floats, so it serializes) as the Python floats give."""
    as_numpy = {
        k: np.bool_(v) if isinstance(v, bool) else np.float32(v) for k, v in kwargs.items()
    }
    config = cls(**as_numpy).get_config()
    plain = cls(**kwargs).get_config()
    for key, value in kwargs.items():
        assert config[key] == pytest.approx(plain[key], rel=1e-7), key
        assert type(config[key]) is type(value), key  # float or bool, not np.float32


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_non_finite_hyper_parameters_are_refused_by_name(name, cls, kwargs, _, __):
    for key in kwargs:
        if key == "dampened":
            continue
        for value in (float("inf"), float("nan"), np.float32("-inf")):
            with pytest.raises(ValueError, match=rf"Argument `{key}` must .*Received: {key}="):
                cls(**{**kwargs, key: value})


def test_boundary_values_are_accepted():
    gz.Momentum(momentum=0.0)
    gz.NesterovMomentum(momentum=0.0)
    gz.Momentum(learning_rate=1, momentum=0.5, dampened=True)  # an int rate
    gz.AdaGrad(epsilon=0.0)
    gz.AdaDelta(epsilon=0.0, initial_delta=0.1)
    gz.Adam(beta_1=0.0, beta_2=0.0, epsilon=0.0)


# --------------------------------------------------------------------------
# Inside Keras: modes, .keras files, MirroredStrategy
# --------------------------------------------------------------------------

# Tiny models and data: each fit here costs tracing or eager steps, and the
# file has to stay fast on two shared cores. `run_eagerly=True` where there
# are only a few steps (no tracing); the MirroredStrategy run is traced.
N = 8


def tiny_data():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(N, 3)).astype("float32")
    y = (np.sin(x[:, :1]) + 0.5 * x[:, 1:2] * x[:, 2:]).astype("float32")
    return x, y


def tiny_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_training_modes_iterations_per_epoch(name, cls, kwargs, _, __):
    """Batch, stochastic and mini-batch modes: 1, n and ceil(n/P) updates."""
    x, y = tiny_data()
    model = tiny_model()
    model.compile(optimizer=cls(**kwargs), loss="mse", run_eagerly=True)
    expected = 0
    for batch_size in (N, 1, 3):
        model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
        expected += math.ceil(N / batch_size)
        assert int(model.optimizer.iterations.numpy()) == expected, batch_size
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_keras_file_resume_continues_exactly(name, cls, kwargs, _, __, tmp_path):
    """fit 2 epochs, save, load, fit 2 more == fit 4 epochs without stopping."""
    x, y = tiny_data()

    def fresh():
        model = tiny_model()
        model.compile(optimizer=cls(**kwargs), loss="mse", run_eagerly=True)
        return model

    # The uninterrupted run saves itself after its second epoch (as
    # ModelCheckpoint does), so one model serves as both runs' first half.
    path = str(tmp_path / f"{name}.keras")
    save_after_two = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: straight.save(path) if epoch == 1 else None
    )
    straight = fresh()
    straight.fit(x, y, batch_size=4, epochs=4, shuffle=False, verbose=0, callbacks=[save_after_two])

    # free_memory=False: the garbage collection costs a second and resets
    # nothing that loading could depend on.
    keras.utils.clear_session(free_memory=False)
    resumed = keras.saving.load_model(path)
    assert type(resumed.optimizer) is cls
    assert resumed.optimizer.get_config() == straight.optimizer.get_config()
    assert int(resumed.optimizer.iterations.numpy()) == 2 * (N // 4)
    resumed.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)

    for got, want in zip(resumed.get_weights(), straight.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    for got, want in zip(resumed.optimizer.variables, straight.optimizer.variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(got),
            keras.ops.convert_to_numpy(want),
            rtol=1e-6,
            atol=1e-7,
        )


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_mirrored_strategy_matches_one_device(name, cls, kwargs, _, __, mirrored):
    """One epoch on two replicas (gradients summed across them) gives the
    weights of one epoch on one device."""
    x, y = tiny_data()
    single = tiny_model()
    initial = single.get_weights()
    single.compile(optimizer=cls(**kwargs), loss="mse", run_eagerly=True)
    single.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

    with mirrored.scope():
        replicated = tiny_model()
        replicated.set_weights(initial)
        replicated.compile(optimizer=cls(**kwargs), loss="mse", jit_compile=False)
    replicated.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)

    assert int(replicated.optimizer.iterations.numpy()) == N // 4
    moved = False
    weights = zip(replicated.get_weights(), single.get_weights(), initial)
    for got, want, start in weights:
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        moved = moved or np.abs(want - start).max() > 1e-3
    assert moved


def _embedding_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((4,), dtype="int32"),
            keras.layers.Embedding(6, 3),
            keras.layers.Flatten(),
            keras.layers.Dense(1),
        ]
    )


@pytest.mark.parametrize("name,cls,kwargs,_,__", OPTIMIZERS, ids=IDS)
def test_sparse_gradient_with_repeated_indices_matches_dense(name, cls, kwargs, _, __):
    """Embedding gradients are IndexedSlices with one slice per token; a
    token seen twice in a batch must count as (a + b), not as two slices
    (which gives a^2 + b^2 once squared, |a| + |b| once made absolute).
    The sparse run and the same optimizer fed the densified gradient
    (tf.convert_to_tensor sums duplicate slices) must agree."""
    x = np.array([[1, 1, 2, 1], [3, 2, 2, 0]], dtype="int32")  # 1 and 2 repeat
    y = np.array([[1.0], [-2.0]], dtype="float32")
    models, optimizers = [_embedding_model(), _embedding_model()], [cls(**kwargs), cls(**kwargs)]
    repeated = False
    for _ in range(4):
        for sparse, model, optimizer in zip((True, False), models, optimizers):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((model(x) - y) ** 2)
            grads = tape.gradient(loss, model.trainable_variables)
            if sparse:
                assert isinstance(grads[0], tf.IndexedSlices)
                indices = grads[0].indices.numpy()
                repeated = repeated or len(np.unique(indices)) < len(indices)
            else:
                grads = [tf.convert_to_tensor(g) for g in grads]
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
    assert repeated
    for got, want in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("clip", [dict(clipnorm=0.05), dict(global_clipnorm=0.05)], ids=str)
def test_sparse_gradient_is_clipped_by_its_true_norm(clip):
    """Duplicate indices are merged before Keras clips the gradient, so the
    norm is that of the dense gradient (a + b), not sqrt(a^2 + b^2)."""
    x = np.array([[1, 1, 2, 1], [3, 2, 2, 0]], dtype="int32")
    y = np.array([[1.0], [-2.0]], dtype="float32")
    models = [_embedding_model(), _embedding_model()]
    optimizers = [gz.GradientDescent(0.5, **clip), gz.GradientDescent(0.5, **clip)]
    for sparse, model, optimizer in zip((True, False), models, optimizers):
        with tf.GradientTape() as tape:
            loss = keras.ops.mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        assert isinstance(grads[0], tf.IndexedSlices)
        if not sparse:
            grads = [tf.convert_to_tensor(g) for g in grads]
        # The clip is active: the embedding gradient is longer than 0.05.
        assert np.linalg.norm(tf.convert_to_tensor(grads[0]).numpy()) > 0.1
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
    for got, want in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_sparse_gradient_under_mirrored_strategy_matches_one_device(mirrored):
    """Two replicas that both see token 1: the all-reduce of their
    IndexedSlices repeats index 1, and the update still equals one device's."""
    x = np.array([[1, 1, 2, 1], [3, 1, 2, 0]], dtype="int32")
    y = np.array([[1.0], [-2.0]], dtype="float32")
    single = _embedding_model()
    single.compile(optimizer=gz.AdaGrad(0.3, epsilon=1e-3), loss="mse", run_eagerly=True)
    single.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0)
    with mirrored.scope():
        replicated = _embedding_model()
        replicated.compile(optimizer=gz.AdaGrad(0.3, epsilon=1e-3), loss="mse", jit_compile=False)
    replicated.fit(x, y, batch_size=2, epochs=3, shuffle=False, verbose=0)
    for got, want in zip(replicated.get_weights(), single.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_sparse_gradient_under_xla():
    """The merge (tf.unique + unsorted_segment_sum) compiles with XLA and
    gives the eager run's weights."""
    x = np.array([[1, 1, 2, 1], [3, 2, 2, 0]], dtype="int32")
    y = np.array([[1.0], [-2.0]], dtype="float32")
    runs = []
    for jit_compile in (False, True):
        model = _embedding_model()
        model.compile(
            optimizer=gz.AdaGrad(0.3, epsilon=1e-3),
            loss="mse",
            jit_compile=jit_compile,
            run_eagerly=not jit_compile,
        )
        for _ in range(3):
            model.train_on_batch(x, y)
        runs.append(model.get_weights())
    for got, want in zip(*runs):
        assert np.all(np.isfinite(got))
        # XLA reorders float32 sums: agreement to rounding, not to the bit.
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
