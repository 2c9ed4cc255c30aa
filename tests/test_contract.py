"""The `keras.optimizers.Optimizer` contract, for every gdzoo method (issue 9).

Every keyword argument of Keras's base optimizer (`clipnorm`, `clipvalue`,
`global_clipnorm`, `use_ema` with `ema_momentum` and
`ema_overwrite_frequency`, `gradient_accumulation_steps`, `weight_decay`,
`loss_scale_factor`) is either honoured, with its effect shown against a
hand-transformed reference, or refused by name in the constructor. Nothing
a user passes is silently lost.

Two tables drive the tests:

* `PER_PARAMETER` (and `SOLVERS`, appended by the solvers' owners): one
  `Method` row per optimizer, `make(**base_kwargs)` building it with
  non-default hyper-parameters, and `refuses`, the base arguments it refuses.
* `BASE_KWARGS`: (argument, keyword arguments, check). `check(method,
  kwargs)` fits a tiny model with the argument and compares it with a
  reference that applies the argument by hand, in NumPy, from Keras's
  documented definition, to the same optimizer built without it. Each check
  also asserts that the argument makes a difference on this problem, so a
  method that ignored it would fail (`test_a_method_that_drops_the_argument_fails`
  runs exactly that mutant).

Then mixed precision (`mixed_float16`) and `jit_compile=True` fits for every
per-parameter optimizer.
"""

import typing

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz

class Method(typing.NamedTuple):
    """One row: `make(**base_kwargs)` builds the method; `refuses` names the
    base arguments its constructor refuses (all others must be honoured)."""

    id: str
    make: typing.Callable
    refuses: frozenset = frozenset()


# The keyword arguments of `keras.optimizers.Optimizer` (besides
# `learning_rate` and `name`).
BASE_NAMES = frozenset(
    {
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "weight_decay",
        "use_ema",
        "ema_momentum",
        "ema_overwrite_frequency",
        "gradient_accumulation_steps",
        "loss_scale_factor",
    }
)

# Hyper-parameters are not the defaults, and the epsilons are large enough
# that the adaptive methods are not invariant to a rescaled gradient (a
# clipped or unscaled gradient then shows in the weights).
PER_PARAMETER = [
    Method("gd", lambda **kw: gz.GradientDescent(learning_rate=0.1, **kw)),
    Method("momentum", lambda **kw: gz.Momentum(learning_rate=0.05, momentum=0.7, **kw)),
    Method(
        "momentum_dampened",
        lambda **kw: gz.Momentum(learning_rate=0.1, momentum=0.6, dampened=True, **kw),
    ),
    Method(
        "nesterov", lambda **kw: gz.NesterovMomentum(learning_rate=0.05, momentum=0.8, **kw)
    ),
    Method("adagrad", lambda **kw: gz.AdaGrad(learning_rate=0.1, epsilon=0.05, **kw)),
    Method("rmsprop", lambda **kw: gz.RMSProp(learning_rate=0.05, rho=0.8, epsilon=0.05, **kw)),
    Method(
        "adadelta",
        lambda **kw: gz.AdaDelta(
            learning_rate=0.5, rho=0.7, epsilon=0.05, initial_delta=0.2, **kw
        ),
    ),
    Method(
        "adam",
        lambda **kw: gz.Adam(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=0.05, **kw),
    ),
    Method(
        "adamax",
        lambda **kw: gz.Adamax(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=0.05, **kw),
    ),
    Method(
        "nadam",
        lambda **kw: gz.Nadam(learning_rate=0.05, beta_1=0.8, beta_2=0.9, epsilon=0.05, **kw),
    ),
]

# Full-batch solvers, driven through gz.wrap (the helpers below wrap any
# `keras_gdzoo.solvers.Solver`); a row refusing every base argument is
# Method("lm", lambda **kw: gz.LevenbergMarquardt(**kw), refuses=BASE_NAMES).
SOLVERS = []


# --------------------------------------------------------------------------
# A tiny problem: 6 samples, a 2-3-1 tanh network, mean squared error.
# --------------------------------------------------------------------------

N = 6


def data():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, 2)).astype("float32")
    y = (np.sin(2.0 * x[:, :1]) + x[:, 1:] ** 2).astype("float32")
    return x, y


def tiny_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(3, activation="tanh"), keras.layers.Dense(1)]
    )


# Each run is STEPS mini-batches of BATCH samples, the data in order.
BATCH, STEPS = 2, 3


def batches(batch_size=BATCH, steps=STEPS):
    """The batches `fit(shuffle=False)` feeds, in order."""
    x, y = data()
    starts = [(i * batch_size) % N for i in range(steps)]
    return [(x[s : s + batch_size], y[s : s + batch_size]) for s in starts]


def compiled(optimizer, **compile_kwargs):
    """(the tiny model, the model to train: itself, or gz.wrap of it for a
    solver), compiled with `optimizer`."""
    model = tiny_model()
    trainer = gz.wrap(model) if isinstance(optimizer, gz.solvers.Solver) else model
    compile_kwargs.setdefault("run_eagerly", True)  # a few steps: no tracing
    trainer.compile(optimizer=optimizer, loss="mse", **compile_kwargs)
    return model, trainer


def train(optimizer, batch_size=BATCH, steps=STEPS, **compile_kwargs):
    """Keras's train step (`train_on_batch`: loss scaling, `Optimizer.apply`)
    on each batch; the weights after each."""
    model, trainer = compiled(optimizer, **compile_kwargs)
    trajectory = []
    for x, y in batches(batch_size, steps):
        trainer.train_on_batch(x, y)
        trajectory.append(model.get_weights())
    return trajectory


class _Recorder(keras.callbacks.Callback):
    """The model's weights after every batch."""

    def __init__(self, model):
        super().__init__()
        self.watched = model
        self.weights = []

    def on_train_batch_end(self, batch, logs=None):
        self.weights.append(self.watched.get_weights())


def fit(optimizer, batch_size=BATCH, steps=STEPS, **compile_kwargs):
    """One `fit` of `steps` batches (so what fit does at its end happens
    too); (weights after each batch, final weights)."""
    model, trainer = compiled(optimizer, **compile_kwargs)
    recorder = _Recorder(model)
    x, y = data()
    assert steps * batch_size == N
    trainer.fit(
        x, y, batch_size=batch_size, epochs=1, shuffle=False, callbacks=[recorder], verbose=0
    )
    return recorder.weights, model.get_weights()


def gradients(model, x, y):
    """g = dE/dw of the compiled loss, mean((f(x) - y)^2), as NumPy arrays."""
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.square(model(x) - y))
    return [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


def reference(optimizer, transform=None, before=None, after=None, batch_size=BATCH, steps=STEPS):
    """The same `steps` batches by hand: at each step g is taken at the
    current weights, `before(model, optimizer)` may change the weights first,
    the optimizer applies `transform(g)` (default g), and `after(t, model)`
    may change the weights after step t = 1, 2, ...; returns the weights
    after each step."""
    model = tiny_model()
    trajectory = []
    for t, (x, y) in enumerate(batches(batch_size, steps), start=1):
        g = gradients(model, x, y)
        if transform is not None:
            g = transform(g)
        if before is not None:
            before(model, optimizer)
        optimizer.apply_gradients(zip(g, model.trainable_variables))
        if after is not None:
            after(t, model)
        trajectory.append(model.get_weights())
    return trajectory


_PLAIN = {}


def plain_reference(method):
    """`reference` of the method without any base argument, once per method."""
    if method.id not in _PLAIN:
        _PLAIN[method.id] = reference(method.make())
    return _PLAIN[method.id]


def assert_same(got, want, what):
    for t, (got_t, want_t) in enumerate(zip(got, want, strict=True)):
        for a, b in zip(got_t, want_t, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"{what}, step {t}")


def assert_differs(a, b, what):
    """The argument has a visible effect on this problem (else its check
    could not catch a method that ignores it)."""
    gap = max(np.abs(x - y).max() for a_t, b_t in zip(a, b) for x, y in zip(a_t, b_t))
    assert gap > 1e-4, f"{what} makes no difference here (gap {gap:.2e})"


# --------------------------------------------------------------------------
# The checks: Keras's documented definition of each argument, by hand.
# --------------------------------------------------------------------------


def check_gradient_transform(transform):
    """clip*: the method with the argument == the method without it fed the
    hand-transformed gradient."""

    def check(method, kwargs):
        got = train(method.make(**kwargs))
        want = reference(method.make(), transform=transform)
        assert_same(got, want, kwargs)
        assert_differs(want, plain_reference(method), kwargs)

    return check


def clip_each_by_norm(c):
    # clipnorm: g <- g * c / max(||g||, c), each weight tensor on its own.
    return lambda grads: [g * c / max(np.linalg.norm(g), c) for g in grads]


def clip_by_value(v):
    # clipvalue: every component clipped to [-v, v].
    return lambda grads: [np.clip(g, -v, v) for g in grads]


def clip_by_global_norm(c):
    # global_clipnorm: all tensors scaled by c / max(||(g_1, ..., g_k)||, c).
    def transform(grads):
        norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in grads))
        return [g * np.float32(c / max(norm, c)) for g in grads]

    return transform


def check_weight_decay(method, kwargs):
    """weight_decay = wd: before each update, every trainable weight
    w <- w - a * wd * w (decoupled weight decay, Loshchilov & Hutter, as
    Keras's base optimizer defines it; a the learning rate), with g taken
    before the decay."""
    wd = kwargs["weight_decay"]

    def decay(model, optimizer):
        a = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        model.set_weights([w - a * wd * w for w in model.get_weights()])

    got = train(method.make(**kwargs))
    want = reference(method.make(), before=decay)
    assert_same(got, want, kwargs)
    assert_differs(want, plain_reference(method), kwargs)


def check_gradient_accumulation(method, kwargs):
    """gradient_accumulation_steps = k: the weights change only every k-th
    batch, by the update of the mean of the k gradients (all taken at the
    same weights), and the optimizer counts one iteration per update."""
    k = kwargs["gradient_accumulation_steps"]
    batch_size, steps = BATCH, 2 * k
    optimizer = method.make(**kwargs)
    got = train(optimizer, batch_size=batch_size, steps=steps)
    assert int(optimizer.iterations.numpy()) == steps // k

    plain = method.make()
    model = tiny_model()
    want, pending = [], []
    for x, y in batches(batch_size, steps):
        pending.append(gradients(model, x, y))
        if len(pending) == k:
            mean = [np.mean(parts, axis=0) for parts in zip(*pending)]
            plain.apply_gradients(zip(mean, model.trainable_variables))
            pending = []
        want.append(model.get_weights())
    assert_same(got, want, kwargs)
    # Unchanged between updates, changed at each one.
    initial = tiny_model().get_weights()
    for t, weights in enumerate([initial] + want[:-1]):
        moved = max(np.abs(a - b).max() for a, b in zip(want[t], weights))
        assert (moved > 1e-6) == ((t + 1) % k == 0), t


def numpy_ema(iterates, momentum):
    """Keras's moving average of the weights: avg(1) = w(1) (no momentum on
    the first step), avg(t) = m * avg(t - 1) + (1 - m) * w(t)."""
    average = [w.astype(np.float64) for w in iterates[0]]
    for weights in iterates[1:]:
        average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    return average


def check_ema(method, kwargs):
    """use_ema with ema_momentum = m: the iterates are those of the plain
    method, and after fit the model holds the NumPy EMA of the iterates."""
    iterates, final = fit(method.make(**kwargs))
    plain = plain_reference(method)
    assert_same(iterates, plain, kwargs)
    want = numpy_ema(iterates, kwargs["ema_momentum"])
    assert_same([final], [want], kwargs)
    assert all(np.abs(w).max() > 1e-3 for w in final)  # not Keras's zero slots
    assert_differs([final], plain[-1:], kwargs)


def check_ema_overwrite(method, kwargs):
    """ema_overwrite_frequency = f: after every f-th step the model's weights
    are overwritten with the moving average (the optimizer's own state is
    untouched), and fit ends on the average."""
    m, f = kwargs["ema_momentum"], kwargs["ema_overwrite_frequency"]
    average = []

    def overwrite(t, model):
        weights = model.get_weights()
        if t == 1:
            average[:] = [w.astype(np.float64) for w in weights]
        else:
            average[:] = [m * a + (1 - m) * w for a, w in zip(average, weights)]
        if t % f == 0:
            model.set_weights([a.astype(np.float32) for a in average])

    got, final = fit(method.make(**kwargs))
    want = reference(method.make(), after=overwrite)
    assert_same(got, want, kwargs)
    assert_same([final], [average], kwargs)
    assert_differs(want, plain_reference(method), kwargs)


def check_loss_scale(method, kwargs):
    """loss_scale_factor = s: fit scales the loss by s and the optimizer
    divides the gradient by s, so the weights are those without it; fed a
    gradient s * g directly, the optimizer steps as if given g."""
    s = kwargs["loss_scale_factor"]
    got = train(method.make(**kwargs))
    assert_same(got, plain_reference(method), kwargs)

    scaled = reference(method.make(**kwargs), transform=lambda grads: [s * g for g in grads])
    assert_same(scaled, plain_reference(method), kwargs)
    ignored = reference(method.make(), transform=lambda grads: [s * g for g in grads])
    assert_differs(ignored, scaled, kwargs)


BASE_KWARGS = [
    # (argument, keyword arguments, check)
    ("clipnorm", dict(clipnorm=0.05), check_gradient_transform(clip_each_by_norm(0.05))),
    ("clipvalue", dict(clipvalue=0.02), check_gradient_transform(clip_by_value(0.02))),
    (
        "global_clipnorm",
        dict(global_clipnorm=0.05),
        check_gradient_transform(clip_by_global_norm(0.05)),
    ),
    ("weight_decay", dict(weight_decay=0.5), check_weight_decay),
    ("use_ema", dict(use_ema=True, ema_momentum=0.5), check_ema),
    (
        "ema_overwrite_frequency",
        dict(use_ema=True, ema_momentum=0.5, ema_overwrite_frequency=2),
        check_ema_overwrite,
    ),
    (
        "gradient_accumulation_steps",
        dict(gradient_accumulation_steps=2),
        check_gradient_accumulation,
    ),
    ("loss_scale_factor", dict(loss_scale_factor=256.0), check_loss_scale),
]
assert {name for name, _, _ in BASE_KWARGS} | {"ema_momentum"} == BASE_NAMES
METHODS = PER_PARAMETER + SOLVERS


@pytest.mark.parametrize("name, kwargs, check", BASE_KWARGS, ids=[row[0] for row in BASE_KWARGS])
@pytest.mark.parametrize("method", METHODS, ids=[m.id for m in METHODS])
def test_base_argument_is_honoured_or_refused(method, name, kwargs, check):
    if name in method.refuses:
        with pytest.raises(ValueError, match=f"`{name}`"):
            method.make(**{name: kwargs[name]})
        with pytest.raises(ValueError, match="|".join(f"`{key}`" for key in kwargs)):
            method.make(**kwargs)
    else:
        check(method, kwargs)


# Each row's argument dropped, and ema_momentum dropped from use_ema's row.
MUTANTS = BASE_KWARGS + [("ema_momentum", dict(use_ema=True, ema_momentum=0.5), check_ema)]


@pytest.mark.parametrize("name, kwargs, check", MUTANTS, ids=[row[0] for row in MUTANTS])
@pytest.mark.parametrize("method", [PER_PARAMETER[7]], ids=["adam"])
def test_a_method_that_drops_the_argument_fails(method, name, kwargs, check):
    """The mutant: a constructor that silently drops the argument (the
    others of the row kept). Every check must catch it."""

    def drop(**kw):
        kw.pop(name, None)
        return method.make(**kw)

    with pytest.raises(AssertionError):
        check(method._replace(make=drop), kwargs)


# --------------------------------------------------------------------------
# Mixed precision and XLA
# --------------------------------------------------------------------------


def _loss(model):
    x, y = data()
    return float(np.mean((model.predict(x, verbose=0) - y) ** 2))


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("method", PER_PARAMETER, ids=[m.id for m in PER_PARAMETER])
def test_mixed_precision_fit(method, mixed_float16):
    """Under `mixed_float16` Keras wraps the optimizer in a
    LossScaleOptimizer (dynamic loss scale: a step whose scaled float16
    gradient overflows is skipped): float16 forward pass, float32 weights
    and slots, finite after the steps, and the loss goes down."""
    optimizer = method.make()
    model, trainer = compiled(optimizer)
    assert model.layers[0].compute_dtype == "float16"
    assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert trainer.optimizer.inner_optimizer is optimizer
    start = _loss(trainer)
    for x, y in batches(N, 6):
        trainer.train_on_batch(x, y)
    assert 1 <= int(optimizer.iterations.numpy()) <= 6
    for variable in model.trainable_variables + optimizer.variables:
        value = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(value)), variable.path
    for variable in model.trainable_variables:
        assert variable.dtype == "float32"
    assert _loss(trainer) < start


@pytest.mark.parametrize("method", PER_PARAMETER, ids=[m.id for m in PER_PARAMETER])
def test_jit_compile_fit(method):
    """Traced and compiled by XLA: finite, and the same weights as eagerly."""
    eager = train(method.make(), steps=3)
    compiled_ = train(method.make(), steps=3, jit_compile=True, run_eagerly=False)
    for a, b in zip(compiled_[-1], eager[-1]):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
