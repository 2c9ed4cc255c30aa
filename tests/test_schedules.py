"""Learning-rate annealing: per-iteration schedules and per-epoch callbacks.

Expected rates are the lecture's closed forms written out here in NumPy, and
Keras's built-in schedules where they describe the same curve; training runs
are checked against a NumPy transcription of gradient descent.
"""

import math

import keras
import numpy as np
import pytest

import keras_gdzoo as gz


# The lecture's closed forms, a(tau) for tau = 0, 1, ...
def step_decay(a0, factor, every, tau):
    return a0 * factor ** np.floor(np.asarray(tau) / every)


def exponential_decay(a0, k, tau):
    return a0 * np.exp(-k * np.asarray(tau, dtype=np.float64))


def inverse_time_decay(a0, k, tau):
    return a0 / (1.0 + k * np.asarray(tau, dtype=np.float64))


STEPS = np.arange(0, 61)
SCHEDULE_IDS = ["step-0.5-7", "step-0.1-20", "exponential", "inverse_time"]

SCHEDULE_CASES = [
    (
        lambda: gz.schedules.StepDecay(0.3, factor=0.5, every=7),
        lambda tau: step_decay(0.3, 0.5, 7, tau),
        lambda: keras.optimizers.schedules.ExponentialDecay(0.3, 7, 0.5, staircase=True),
    ),
    (
        lambda: gz.schedules.StepDecay(0.2, factor=0.1, every=20),
        lambda tau: step_decay(0.2, 0.1, 20, tau),
        lambda: keras.optimizers.schedules.ExponentialDecay(0.2, 20, 0.1, staircase=True),
    ),
    (
        lambda: gz.schedules.ExponentialDecay(0.1, k=0.05),
        lambda tau: exponential_decay(0.1, 0.05, tau),
        lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 1, math.exp(-0.05)),
    ),
    (
        lambda: gz.schedules.InverseTimeDecay(0.1, k=0.3),
        lambda tau: inverse_time_decay(0.1, 0.3, tau),
        lambda: keras.optimizers.schedules.InverseTimeDecay(0.1, 1, 0.3),
    ),
]


@pytest.mark.parametrize("make, closed_form, keras_equivalent", SCHEDULE_CASES, ids=SCHEDULE_IDS)
def test_schedule_values_per_step(make, closed_form, keras_equivalent):
    schedule = make()
    ours = np.array([float(keras.ops.convert_to_numpy(schedule(step))) for step in STEPS])
    np.testing.assert_allclose(ours, closed_form(STEPS), rtol=1e-6)
    # Keras's built-in schedule for the same curve agrees too.
    reference = keras_equivalent()
    theirs = np.array([float(keras.ops.convert_to_numpy(reference(step))) for step in STEPS])
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)


def test_zero_k_keeps_the_rate():
    constant = (gz.schedules.ExponentialDecay(0.1, 0.0), gz.schedules.InverseTimeDecay(0.1, 0))
    for schedule in constant:
        assert float(keras.ops.convert_to_numpy(schedule(1000))) == pytest.approx(0.1)


def test_schedule_drives_optimizer_iterations():
    """tau is the optimizer's `iterations`, 0 on the first update: with a
    constant gradient g = 1, w after N steps is w0 - sum_{tau<N} a(tau)."""
    schedule = gz.schedules.StepDecay(0.1, factor=0.5, every=3)
    optimizer = keras.optimizers.SGD(learning_rate=schedule)
    w = keras.Variable(np.zeros(2, dtype="float32"))
    for _ in range(10):
        optimizer.apply_gradients([(keras.ops.ones(2), w)])
    expected = -np.sum(step_decay(0.1, 0.5, 3, np.arange(10)))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(w), [expected] * 2, rtol=1e-6)
    np.testing.assert_allclose(
        float(keras.ops.convert_to_numpy(optimizer.learning_rate)),
        step_decay(0.1, 0.5, 3, 10),
        rtol=1e-6,
    )


OPTIMIZER_FACTORIES = {
    "keras.SGD": lambda lr: keras.optimizers.SGD(learning_rate=lr),
    "keras.Adam": lambda lr: keras.optimizers.Adam(learning_rate=lr),
    "gz.GradientDescent": lambda lr: gz.GradientDescent(learning_rate=lr),
    "gz.Adam": lambda lr: gz.Adam(learning_rate=lr),
}


def _data(n=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2)).astype("float32")
    y = (x @ np.array([[1.5], [-2.0]]) + 0.3).astype("float32")
    return x, y


def _tiny_model(optimizer, kernel_initializer=None, use_bias=True):
    dense = keras.layers.Dense(
        1,
        use_bias=use_bias,
        kernel_initializer=kernel_initializer or keras.initializers.GlorotUniform(0),
    )
    model = keras.Sequential([keras.Input((2,)), dense])
    # Without XLA: compiling a two-weight model costs more than it saves.
    model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
    return model


def _fit_rates(model, callback, epochs, initial_epoch=0, **kwargs):
    """Train one full batch per epoch; return History's learning rates."""
    x, y = _data()
    history = model.fit(
        x,
        y,
        batch_size=len(x),
        initial_epoch=initial_epoch,
        epochs=epochs,
        callbacks=[callback],
        verbose=0,
        **kwargs,
    )
    return history.history["learning_rate"]


def _current_rate(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


@pytest.mark.parametrize(
    "optimizer_name, make_schedule",
    [
        ("keras.SGD", lambda: gz.schedules.StepDecay(0.05, factor=0.5, every=3)),
        ("keras.Adam", lambda: gz.schedules.ExponentialDecay(0.05, k=0.1)),
        ("gz.GradientDescent", lambda: gz.schedules.InverseTimeDecay(0.05, k=0.2)),
        ("gz.Adam", lambda: gz.schedules.StepDecay(0.05, factor=0.1, every=5)),
    ],
    ids=["step-keras.SGD", "exponential-keras.Adam", "inverse_time-gz.GD", "step-gz.Adam"],
)
def test_schedule_inside_optimizer_survives_keras_file(tmp_path, optimizer_name, make_schedule):
    schedule = make_schedule()
    model = _tiny_model(OPTIMIZER_FACTORIES[optimizer_name](schedule))
    x, y = _data()
    model.fit(x, y, batch_size=4, epochs=2, verbose=0)  # 8 iterations
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    restored = loaded.optimizer.get_config()["learning_rate"]
    restored = keras.optimizers.schedules.deserialize(restored)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 8
    np.testing.assert_allclose(
        _current_rate(loaded.optimizer),
        float(keras.ops.convert_to_numpy(schedule(8))),
        rtol=1e-6,
    )


@pytest.mark.parametrize("make, closed_form, keras_equivalent", SCHEDULE_CASES, ids=SCHEDULE_IDS)
def test_schedule_config_round_trip(make, closed_form, keras_equivalent):
    schedule = make()
    serialized = keras.optimizers.schedules.serialize(schedule)
    restored = keras.optimizers.schedules.deserialize(serialized)
    assert type(restored) is type(schedule)
    assert restored.get_config() == schedule.get_config()


def test_schedules_and_callbacks_keep_distinct_registered_names():
    """The per-iteration schedules and the per-epoch callbacks share class
    names; each must deserialize to itself."""
    pairs = [
        (gz.schedules.StepDecay(0.1), gz.StepDecay()),
        (gz.schedules.ExponentialDecay(0.1, 0.5), gz.ExponentialDecay(0.5)),
        (gz.schedules.InverseTimeDecay(0.1, 0.5), gz.InverseTimeDecay(0.5)),
    ]
    for schedule, callback in pairs:
        for obj in (schedule, callback):
            serialized = keras.saving.serialize_keras_object(obj)
            restored = keras.saving.deserialize_keras_object(serialized)
            assert type(restored) is type(obj)
            assert restored.get_config() == obj.get_config()


# ---------------------------------------------------------------- callbacks
CALLBACK_CASES = [
    # (callback, a(tau) / a0, epochs)
    (lambda: gz.StepDecay(factor=0.1, every=3), lambda tau: step_decay(1.0, 0.1, 3, tau), 7),
    (lambda: gz.ExponentialDecay(0.2), lambda tau: exponential_decay(1.0, 0.2, tau), 5),
    (lambda: gz.InverseTimeDecay(0.5), lambda tau: inverse_time_decay(1.0, 0.5, tau), 5),
]
CALLBACK_IDS = ["step", "exponential", "inverse_time"]


@pytest.mark.parametrize("make, relative, epochs", CALLBACK_CASES, ids=CALLBACK_IDS)
def test_callback_rates_after_epochs(make, relative, epochs):
    a0 = 0.08
    model = _tiny_model(keras.optimizers.SGD(a0))
    rates = _fit_rates(model, make(), epochs)
    expected = a0 * relative(np.arange(epochs))
    np.testing.assert_allclose(rates, expected, rtol=1e-6)
    np.testing.assert_allclose(_current_rate(model.optimizer), expected[-1], rtol=1e-6)


def test_step_decay_default_halves_every_five_epochs():
    """DESIGN: after epochs 0..11 StepDecay(0.5, 5) has a0 / 4."""
    model = _tiny_model(keras.optimizers.SGD(0.08))
    rates = _fit_rates(model, gz.StepDecay(), epochs=12)
    assert rates[:5] == pytest.approx([0.08] * 5, rel=1e-6)
    assert rates[5:10] == pytest.approx([0.04] * 5, rel=1e-6)
    assert rates[10:] == pytest.approx([0.02] * 2, rel=1e-6)
    assert _current_rate(model.optimizer) == pytest.approx(0.08 / 4, rel=1e-6)


def test_callback_rate_is_the_one_used_in_the_epoch():
    """Batch gradient descent on least squares, one step per epoch, written
    out in NumPy: w(tau+1) = w(tau) - a(tau) * 2/n X'(X w(tau) - y)."""
    a0, k, epochs = 0.2, 0.3, 6
    model = _tiny_model(keras.optimizers.SGD(a0), kernel_initializer="zeros", use_bias=False)
    _fit_rates(model, gz.InverseTimeDecay(k), epochs, shuffle=False)
    x, y = (array.astype(np.float64) for array in _data())
    w = np.zeros((2, 1))
    for tau in range(epochs):
        gradient = 2.0 / len(x) * x.T @ (x @ w - y)
        w = w - inverse_time_decay(a0, k, tau) * gradient
    kernel = keras.ops.convert_to_numpy(model.layers[0].kernel)
    np.testing.assert_allclose(kernel, w, rtol=1e-5)


@pytest.mark.parametrize("make, relative, epochs", CALLBACK_CASES[:2], ids=CALLBACK_IDS[:2])
def test_resumed_run_from_keras_file_follows_the_uninterrupted_rates(
    tmp_path, make, relative, epochs
):
    """Stopped after epoch 2, saved, reloaded and resumed with a new callback
    at epoch 3 (where StepDecay(0.1, 3) steps down): epochs 3..6 get
    a0 * decay(tau), as in one uninterrupted run."""
    a0 = 0.05
    model = _tiny_model(keras.optimizers.SGD(a0))
    _fit_rates(model, make(), epochs=3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    rates = _fit_rates(loaded, make(), initial_epoch=3, epochs=7)
    np.testing.assert_allclose(rates, a0 * relative(np.arange(3, 7)), rtol=1e-5)


def test_resumed_run_in_process_with_the_same_callback():
    a0 = 0.05
    model = _tiny_model(keras.optimizers.SGD(a0))
    callback = gz.StepDecay(factor=0.5, every=2)
    _fit_rates(model, callback, epochs=4)
    rates = _fit_rates(model, callback, initial_epoch=4, epochs=6)
    np.testing.assert_allclose(rates, step_decay(a0, 0.5, 2, [4, 5]), rtol=1e-6)


def test_explicit_initial_learning_rate_with_a_fresh_optimizer():
    model = _tiny_model(keras.optimizers.SGD(0.9))
    callback = gz.ExponentialDecay(0.1, initial_learning_rate=0.05)
    rates = _fit_rates(model, callback, initial_epoch=4, epochs=7)
    np.testing.assert_allclose(rates, exponential_decay(0.05, 0.1, [4, 5, 6]), rtol=1e-6)


def test_new_fit_from_epoch_zero_reads_the_new_initial_rate():
    callback = gz.InverseTimeDecay(1.0)
    for a0 in (0.05, 0.02):
        model = _tiny_model(keras.optimizers.SGD(a0))
        rates = _fit_rates(model, callback, epochs=2)
        np.testing.assert_allclose(rates, inverse_time_decay(a0, 1.0, [0, 1]), rtol=1e-6)


def test_callback_under_mirrored_strategy(mirrored):
    with mirrored.scope():
        model = _tiny_model(keras.optimizers.SGD(0.04))
    rates = _fit_rates(model, gz.StepDecay(0.5, 1), epochs=2)
    np.testing.assert_allclose(rates, step_decay(0.04, 0.5, 1, [0, 1]), rtol=1e-6)


def test_callback_with_loss_scale_optimizer():
    model = _tiny_model(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.04)))
    rates = _fit_rates(model, gz.ExponentialDecay(0.5), epochs=3)
    np.testing.assert_allclose(rates, exponential_decay(0.04, 0.5, [0, 1, 2]), rtol=1e-6)


@pytest.mark.parametrize(
    "learning_rate",
    [
        lambda: gz.schedules.ExponentialDecay(0.1, 0.1),
        lambda: keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.9),
    ],
)
def test_callback_refuses_a_schedule_valued_learning_rate(learning_rate):
    model = _tiny_model(keras.optimizers.SGD(learning_rate()))
    message = r"StepDecay sets the optimizer's learning rate.*LearningRateSchedule"
    with pytest.raises(ValueError, match=message):
        _fit_rates(model, gz.StepDecay(), epochs=1)


@pytest.mark.parametrize(
    "callback",
    [
        gz.StepDecay(0.1, 20),
        gz.StepDecay(initial_learning_rate=0.3),
        gz.ExponentialDecay(0.2),
        gz.InverseTimeDecay(0.0, 1.0),
    ],
)
def test_callback_config_round_trip(callback):
    clone = type(callback).from_config(callback.get_config())
    assert type(clone) is type(callback)
    assert clone.get_config() == callback.get_config()


# ---------------------------------------------------------- invalid arguments
NAN, INF = float("nan"), float("inf")
INVALID = [
    (lambda v: gz.schedules.StepDecay(v), "initial_learning_rate", [0, -0.1, NAN, "0.1", None]),
    (lambda v: gz.schedules.ExponentialDecay(v, 0.1), "initial_learning_rate", [0, INF]),
    (lambda v: gz.schedules.InverseTimeDecay(v, 0.1), "initial_learning_rate", [-1.0, True]),
    (lambda v: gz.schedules.StepDecay(0.1, factor=v), "factor", [0, 1.5, -0.5, NAN, "half"]),
    (lambda v: gz.schedules.StepDecay(0.1, every=v), "every", [0, -3, 2.5, True, "5"]),
    (lambda v: gz.schedules.ExponentialDecay(0.1, v), "k", [-0.1, NAN, None]),
    (lambda v: gz.schedules.InverseTimeDecay(0.1, v), "k", [-1, INF]),
    (lambda v: gz.StepDecay(factor=v), "factor", [0, 2.0]),
    (lambda v: gz.StepDecay(every=v), "every", [0, 1.5]),
    (lambda v: gz.StepDecay(initial_learning_rate=v), "initial_learning_rate", [0, -1.0]),
    (lambda v: gz.ExponentialDecay(v), "k", [-0.5, "fast"]),
    (lambda v: gz.ExponentialDecay(0.1, initial_learning_rate=v), "initial_learning_rate", [0]),
    (lambda v: gz.InverseTimeDecay(v), "k", [-2.0, None]),
    (lambda v: gz.InverseTimeDecay(0.1, initial_learning_rate=v), "initial_learning_rate", [NAN]),
]


@pytest.mark.parametrize(
    "make, argument, value",
    [(make, argument, value) for make, argument, values in INVALID for value in values],
)
def test_invalid_arguments_are_refused_by_name(make, argument, value):
    with pytest.raises(ValueError, match=rf"Argument `{argument}` must .*Received: {argument}="):
        make(value)


@pytest.mark.parametrize(
    "make, argument, value",
    [
        (lambda v: gz.schedules.StepDecay(v), "initial_learning_rate", -INF),
        (lambda v: gz.schedules.StepDecay(0.1, factor=v), "factor", INF),
        (lambda v: gz.schedules.ExponentialDecay(0.1, v), "k", INF),
        (lambda v: gz.StepDecay(initial_learning_rate=v), "initial_learning_rate", INF),
    ],
)
def test_non_finite_arguments_are_refused_by_name(make, argument, value):
    with pytest.raises(ValueError, match=rf"Argument `{argument}` must .*Received: {argument}="):
        make(value)


def test_numpy_scalars_are_accepted():
    schedule = gz.schedules.StepDecay(np.float32(0.5), factor=np.float64(0.5), every=np.int64(2))
    assert schedule.get_config() == {"initial_learning_rate": 0.5, "factor": 0.5, "every": 2}
    assert all(type(v) in (float, int) for v in schedule.get_config().values())
    np.testing.assert_allclose(
        [float(keras.ops.convert_to_numpy(schedule(t))) for t in range(5)],
        step_decay(0.5, 0.5, 2, range(5)),
        rtol=1e-6,
    )
    assert gz.schedules.ExponentialDecay(0.1, np.float32(0.25)).k == 0.25
    assert gz.schedules.InverseTimeDecay(np.float16(0.5), np.int32(1)).get_config() == {
        "initial_learning_rate": 0.5,
        "k": 1.0,
    }
    callback = gz.StepDecay(np.float32(0.5), np.int64(3), initial_learning_rate=np.float64(0.1))
    assert callback.get_config() == {"factor": 0.5, "every": 3, "initial_learning_rate": 0.1}


@pytest.mark.parametrize(
    "callback",
    [gz.StepDecay(0.5, 1), gz.ExponentialDecay(0.5), gz.InverseTimeDecay(1.0)],
    ids=["step", "exponential", "inverse_time"],
)
def test_callback_refuses_a_solver(callback):
    """A solver (LM here) has no learning rate: annealing one would log a
    falling rate that changes nothing, so the callback refuses it by name
    before the first epoch, and the weights are left as they were."""
    x, y = _data()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss="mse")
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"LevenbergMarquardt.*no learning rate"):
        trainer.fit(x, y, batch_size=len(x), epochs=2, callbacks=[callback], verbose=0)
    for got, want in zip(model.get_weights(), before):
        np.testing.assert_array_equal(got, want)
