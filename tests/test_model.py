"""The Keras glue: gz.wrap / SolverModel, tested with tiny solvers written here.

The solvers of the package are tested end to end in test_solvers_keras.py;
this file pins the plumbing with solvers whose result is known independently
(a fixed-step gradient solver must equal keras.optimizers.SGD).
"""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.model import ModelObjective
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver


@keras.saving.register_keras_serializable(package="keras_gdzoo_tests")
class FixedStep(Solver):
    """w -= rate * g, counting its iterations in its state."""

    def __init__(self, rate=0.1, **kwargs):
        super().__init__(**kwargs)
        self.rate = rate

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}

    def state_spec(self, size, dtype):
        return {"count": ((), 0.0)}

    def step(self, w, state, objective):
        _, g = objective.value_and_gradient(w)
        logs = {"step_size": tf.constant(self.rate, w.dtype)}
        return w - self.rate * g, {"count": state["count"] + 1}, logs


class Halving(Solver):
    """Halves a trial step until the loss drops: a while loop of evaluations."""

    def step(self, w, state, objective):
        f, g = objective.value_and_gradient(w)

        def cond(a, fa, n):
            return tf.logical_and(fa >= f, n < 20)

        def body(a, fa, n):
            return a / 2, objective.value(w - a / 2 * g), n + 1

        a0 = tf.constant(8.0, w.dtype)
        a, _, n = tf.while_loop(cond, body, (a0, objective.value(w - a0 * g), 1))
        return w - a * g, state, {"step_size": a, "evaluations": tf.cast(n, w.dtype)}


class Gives(Solver):
    """Proposes a fixed point (NaN to test the guard) and may ask to stop."""

    def __init__(self, proposal, stop=0.0, **kwargs):
        super().__init__(**kwargs)
        self.proposal, self.stop = proposal, stop

    stop_message = "told to stop by the test"

    def step(self, w, state, objective):
        return w + self.proposal, state, {STOP: tf.constant(self.stop, w.dtype)}


def make_model(seed=1):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    y = (np.sin(x.sum(1, keepdims=True))).astype("float32")
    sample_weight = rng.uniform(0.5, 1.5, size=32).astype("float32")
    return x, y, sample_weight


def weights(model):
    return [v.numpy() for v in model.weights]


def assert_same(a, b, atol=1e-6):
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, atol=atol)


def test_fixed_step_solver_equals_keras_sgd(data):
    x, y, sample_weight = data
    model = make_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=FixedStep(0.1), loss="mse")
    history = trainer.fit(
        x, y, sample_weight=sample_weight, batch_size=8, epochs=2, verbose=0, shuffle=False
    )
    reference = make_model()
    reference.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    expected = reference.fit(
        x, y, sample_weight=sample_weight, batch_size=8, epochs=2, verbose=0, shuffle=False
    )
    assert_same(weights(model), weights(reference))
    np.testing.assert_allclose(history.history["loss"], expected.history["loss"], rtol=1e-5)
    # one fit batch = one iteration: 4 batches x 2 epochs
    assert int(trainer.optimizer.iterations.numpy()) == 8
    assert float(trainer.optimizer.solver_state["count"].numpy()) == 8
    assert history.history["step_size"] == [pytest.approx(0.1)] * 2


def test_objective_matches_tape_gradient_of_compiled_loss(data):
    x, y, sample_weight = data
    model = make_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=FixedStep(), loss="mse")
    trainer.build((None, 3))
    objective = ModelObjective(
        trainer, (x, y, sample_weight), tf.distribute.get_strategy()
    )
    w = objective.current()
    value, gradient = objective.value_and_gradient(w)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x), sample_weight=sample_weight)
    expected = tape.gradient(loss, model.trainable_variables)
    np.testing.assert_allclose(float(value), float(loss), rtol=1e-6)
    np.testing.assert_allclose(
        gradient.numpy(), np.concatenate([g.numpy().ravel() for g in expected]), rtol=1e-5
    )
    assert objective.size == sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    assert float(objective.count) == len(x)


def test_mirrored_strategy_gives_single_device_iterates(data, mirrored):
    x, y, sample_weight = data
    single = make_model()
    trainer = gz.wrap(single)
    trainer.compile(optimizer=Halving(), loss="mse")
    trainer.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=2, verbose=0, shuffle=False)
    with mirrored.scope():
        distributed = make_model()
        trainer = gz.wrap(distributed)
        trainer.compile(optimizer=Halving(), loss="mse")
    trainer.fit(x, y, sample_weight=sample_weight, batch_size=16, epochs=2, verbose=0, shuffle=False)
    assert_same(weights(single), weights(distributed), atol=1e-5)


def test_jit_compile_gives_same_iterates(data):
    x, y, _ = data
    runs = []
    for jit in (False, True):
        model = make_model()
        trainer = gz.wrap(model)
        trainer.compile(optimizer=Halving(), loss="mse", jit_compile=jit)
        trainer.fit(x, y, batch_size=32, epochs=2, verbose=0)
        runs.append(weights(model))
    assert_same(*runs, atol=1e-5)


def test_solver_in_unwrapped_model_names_the_fix(data):
    x, y, _ = data
    model = make_model()
    model.compile(optimizer=FixedStep(), loss="mse")
    with pytest.raises(ValueError, match=r"wrap"):
        model.fit(x, y, verbose=0)


def test_ordinary_optimizer_through_wrapper_trains_like_plain_keras(data):
    x, y, _ = data
    wrapped = make_model()
    trainer = gz.wrap(wrapped)
    trainer.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    trainer.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    plain = make_model()
    plain.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    plain.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    assert_same(weights(wrapped), weights(plain))


def test_callbacks_validation_and_metrics(data, tmp_path):
    x, y, _ = data
    model = make_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=Halving(), loss="mse", metrics=["mae"])
    history = trainer.fit(
        x,
        y,
        batch_size=32,
        epochs=4,
        verbose=0,
        validation_data=(x, y),
        callbacks=[
            keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras")),
            keras.callbacks.TensorBoard(str(tmp_path / "logs")),
            keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9),
        ],
    )
    # EarlyStopping with an impossible min_delta: the first epoch sets the
    # baseline, the second fails to beat it by 1e9 and stops the run.
    assert len(history.history["loss"]) == 2
    for key in ("loss", "mae", "val_loss", "val_mae", "step_size", "evaluations"):
        assert key in history.history
    # the logged loss is the loss at the starting point, as in Keras
    fresh = make_model()
    np.testing.assert_allclose(
        history.history["loss"][0],
        float(keras.losses.MeanSquaredError()(y, fresh(x))),
        rtol=1e-5,
    )
    assert (tmp_path / "best.keras").exists()
    assert any((tmp_path / "logs").rglob("*tfevents*"))



def test_metrics_read_as_keras_orders_resets_and_updates(data):
    # A solver's fit applies Keras's per-epoch metric reset inside its next
    # step and answers the epoch-end read from that step: whoever reads the
    # metrics (a callback, get_metrics_result, evaluate) still sees what
    # Keras's own order gives. Each value is checked against NumPy.
    x, y, _ = data
    model = make_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.LBFGS(), loss="mse", metrics=["mae"])
    mae = lambda: float(np.mean(np.abs(model.predict(x, verbose=0) - y)))
    at_start, after_reset = [], []

    class Reader(keras.callbacks.Callback):
        def __init__(self, read_metrics):
            super().__init__()
            self.read_metrics = read_metrics

        def on_epoch_begin(self, epoch, logs=None):
            at_start.append(mae())  # the weights the epoch's step starts from
            if self.read_metrics and epoch > 0:  # (built by the first step)
                results = [m.result() for m in self.model.metrics]
                results = tf.nest.flatten([r if isinstance(r, dict) else [r] for r in results])
                after_reset.append([float(r) for r in results])

    # Nobody reads the metrics between epochs: the step applies each reset.
    history = trainer.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[Reader(False)])
    np.testing.assert_allclose(history.history["mae"], at_start, rtol=1e-5)
    # A callback reads them right after Keras's reset: zeros.
    at_start.clear()
    history = trainer.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[Reader(True)])
    np.testing.assert_array_equal(after_reset, np.zeros((2, 2)))
    np.testing.assert_allclose(history.history["mae"], at_start, rtol=1e-5)
    kept = trainer.get_metrics_result()
    assert set(kept) == {"loss", "mae"}
    np.testing.assert_allclose(float(kept["mae"]), at_start[-1], rtol=1e-5)
    final = mae()
    # evaluate resets first: the last epoch's training update is not mixed in
    result = trainer.evaluate(x, y, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["mae"], final, rtol=1e-5)
    np.testing.assert_allclose(float(trainer.get_metrics_result()["mae"]), final, rtol=1e-5)
    trainer.reset_metrics()
    assert all(float(v) == 0.0 for v in trainer.get_metrics_result().values())
    # train_on_batch reports its own batch at its starting weights
    start = np.mean(np.abs(model.predict(x[:8], verbose=0) - y[:8]))
    logs = trainer.train_on_batch(x[:8], y[:8], return_dict=True)
    np.testing.assert_allclose(logs["mae"], start, rtol=1e-5)

def test_save_load_resume_keeps_solver_state(data, tmp_path):
    x, y, _ = data
    model = make_model()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=FixedStep(0.05), loss="mse")
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    trainer.save(tmp_path / "run.keras")
    restored = keras.saving.load_model(tmp_path / "run.keras")
    assert isinstance(restored, gz.SolverModel)
    assert float(restored.optimizer.solver_state["count"].numpy()) == 2
    restored.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    trainer.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert_same(weights(restored), weights(model))
    assert float(restored.optimizer.solver_state["count"].numpy()) == 4


def test_solver_asking_to_stop_stops_fit_with_a_warning(data):
    x, y, _ = data
    trainer = gz.wrap(make_model())
    trainer.compile(optimizer=Gives(0.0, stop=1.0), loss="mse")
    with pytest.warns(UserWarning, match="told to stop by the test"):
        history = trainer.fit(x, y, batch_size=8, epochs=5, verbose=0)
    assert len(history.history["loss"]) == 1
    assert int(trainer.optimizer.iterations.numpy()) == 1


def test_non_finite_proposal_is_rejected_and_training_stops(data):
    x, y, _ = data
    model = make_model()
    before = weights(model)
    trainer = gz.wrap(model)
    trainer.compile(optimizer=Gives(float("nan")), loss="mse")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert_same(weights(model), before, atol=0)
    assert all(np.isfinite(w).all() for w in weights(model))


def test_wrap_rejects_non_models_and_is_idempotent():
    with pytest.raises(ValueError, match="model"):
        gz.wrap("not a model")
    trainer = gz.wrap(make_model())
    assert gz.wrap(trainer) is trainer
    assert isinstance(trainer, keras.Model)


@pytest.mark.parametrize("distributed", [False, True])
def test_steps_per_execution_runs_the_same_iterations_in_one_call(data, mirrored, distributed):
    """4 batches an epoch with steps_per_execution=3: calls of 3 then 1."""
    x, y, _ = data
    runs = []
    for steps_per_execution in (1, 3):
        scope = mirrored.scope() if distributed else tf.distribute.get_strategy().scope()
        with scope:
            model = make_model()
            trainer = gz.wrap(model)
            trainer.compile(
                optimizer=Halving(), loss="mse", steps_per_execution=steps_per_execution
            )
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        history = trainer.fit(dataset, epochs=2, verbose=0)
        assert int(trainer.optimizer.iterations.numpy()) == 8
        runs.append((weights(model), history.history["loss"]))
    assert_same(runs[0][0], runs[1][0], atol=1e-6)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-6)
