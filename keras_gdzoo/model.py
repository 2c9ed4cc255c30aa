"""`wrap(model)` / `SolverModel`: Keras `fit` driving full-batch solvers.

Keras's own train step asks an optimizer for one thing: "here is the
gradient, update the weights". Line searches, conjugate gradients, BFGS,
Rprop's error test and Levenberg-Marquardt need more: the loss of the *same
batch* at trial points, and sometimes its Jacobians or Hessian. `SolverModel`
gives a solver that: its train function hands the solver a `ModelObjective`,
the loss on the current batch as a function of one flat weight vector, and
runs the whole iteration, line search included, in one `tf.function`.

One fit batch is one solver iteration, so `batch_size=len(x)` is the
lecture's batch mode.

Distribution: the solver runs in cross-replica context. Each evaluation of
the objective runs the forward/backward pass on every replica's shard with
`strategy.run` and sums the results (`strategy.reduce`), so every decision
the solver takes (step accepted, damping raised...) is taken once, on the
global batch, and the iterates equal those of one device. (A solver cannot
run inside the replica function: MirroredStrategy does not allow a
cross-replica reduction inside a `tf.while_loop`, and line searches are
while loops.)
"""

import math
import warnings

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Objective
from keras_gdzoo.solvers.base import Solver

# Canonical names of the losses the curvature module knows.
_LOSS_NAMES = {
    "mse": "mean_squared_error",
    "mean_squared_error": "mean_squared_error",
    "meansquarederror": "mean_squared_error",
    "binary_crossentropy": "binary_crossentropy",
    "binarycrossentropy": "binary_crossentropy",
    "categorical_crossentropy": "categorical_crossentropy",
    "categoricalcrossentropy": "categorical_crossentropy",
    "sparse_categorical_crossentropy": "sparse_categorical_crossentropy",
    "sparsecategoricalcrossentropy": "sparse_categorical_crossentropy",
}


def _resolve_loss(loss):
    """(per-example loss function, canonical name or None, from_logits)."""
    if isinstance(loss, (list, tuple, dict)):
        raise ValueError(
            "Second-order solvers need a single loss for a single-output "
            f"model. Received: loss={loss!r}"
        )
    if isinstance(loss, str):
        function = keras.losses.get(loss)
        name = _LOSS_NAMES.get(loss.lower())
        return function, name, False
    if isinstance(loss, keras.losses.Loss):
        config = loss.get_config()
        name = _LOSS_NAMES.get(type(loss).__name__.lower())
        return loss.call, name, bool(config.get("from_logits", False))
    if callable(loss):
        name = _LOSS_NAMES.get(getattr(loss, "__name__", "").lower())
        return loss, name, False
    raise ValueError(f"Cannot use this loss with a solver. Received: loss={loss!r}")


class ModelObjective(curvature.CurvatureMixin, Objective):
    """The compiled loss of a Keras model on one batch, as a function of w.

    w is the concatenation of the flattened trainable variables, in
    `model.trainable_variables` order. Evaluations are stateless
    (`keras.StatelessScope`): the model's variables keep their values until
    `assign` writes the solver's result.

    Attributes (besides `Objective`'s) used by `keras_gdzoo.curvature`:
        count: the global number of examples n in the batch.
        loss_name, from_logits: the compiled loss, for Gauss-Newton forms.
    """

    def __init__(self, model, data, strategy):
        self.model = model
        self.strategy = strategy
        self.data = keras.utils.unpack_x_y_sample_weight(data)
        self.variables = list(model.trainable_variables)
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = int(sum(self.sizes))
        self.dtype = tf.as_dtype(self.variables[0].dtype)
        self._per_example, self.loss_name, self.from_logits = _resolve_loss(model.loss)
        self.count = self.replica_sum(
            lambda x, y, sample_weight: tf.cast(
                tf.shape(tf.nest.flatten(x)[0])[0], self.dtype
            )
        )

    # -- flat view ----------------------------------------------------------
    def unflatten(self, w):
        pieces = tf.split(w, self.sizes)
        return [tf.reshape(p, s) for p, s in zip(pieces, self.shapes)]

    def current(self):
        return tf.concat(
            [tf.reshape(tf.cast(v.value, self.dtype), [-1]) for v in self.variables], 0
        )

    def assign(self, w):
        for variable, value in zip(self.variables, self.unflatten(w)):
            variable.assign(value)

    # -- distribution -------------------------------------------------------
    def replica_sum(self, fn, *args):
        """Run fn(x, y, sample_weight, *args) per replica and sum the results."""
        x, y, sample_weight = self.data
        if self.strategy.num_replicas_in_sync == 1 and not _is_distributed(x):
            return fn(x, y, sample_weight, *args)
        per_replica = self.strategy.run(fn, args=(x, y, sample_weight) + args)
        return tf.nest.map_structure(
            lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
            per_replica,
        )

    # -- evaluations (inside one replica) ------------------------------------
    def predict(self, w, x):
        mapping = list(zip(self.variables, self.unflatten(w)))
        with keras.StatelessScope(state_mapping=mapping):
            return self.model(x, training=True)

    def per_example_loss(self, y, y_pred, sample_weight):
        losses = self._per_example(y, y_pred)
        losses = tf.reshape(tf.cast(losses, self.dtype), [tf.shape(y_pred)[0], -1])
        losses = tf.reduce_mean(losses, axis=1)
        if sample_weight is not None:
            losses = losses * tf.reshape(tf.cast(sample_weight, self.dtype), [-1])
        return losses

    def _local_loss(self, x, y, sample_weight, w):
        mapping = list(zip(self.variables, self.unflatten(w)))
        with keras.StatelessScope(state_mapping=mapping):
            y_pred = self.model(x, training=True)
            loss = self.model.compute_loss(x, y, y_pred, sample_weight, training=True)
        return tf.cast(loss, self.dtype)

    def _local_value_and_gradient(self, x, y, sample_weight, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            loss = self._local_loss(x, y, sample_weight, w)
        return loss, tape.gradient(loss, w)

    # -- Objective ----------------------------------------------------------
    def value(self, w):
        return self.replica_sum(self._local_loss, w)

    def value_and_gradient(self, w):
        return self.replica_sum(self._local_value_and_gradient, w)


def _is_distributed(value):
    return any(
        isinstance(v, tf.distribute.DistributedValues) for v in tf.nest.flatten(value)
    )


class _SolverMonitor(keras.callbacks.Callback):
    """Stops `fit` when the solver says it cannot go on, and says why."""

    def on_train_batch_end(self, batch, logs=None):
        if logs and float(logs.get(STOP, 0.0)) > 0:
            optimizer = self.model.optimizer
            warnings.warn(
                f"{type(optimizer).__name__} stopped training: "
                f"{optimizer.stop_message}.",
                stacklevel=2,
            )
            self.model.stop_training = True


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class SolverModel(keras.Model):
    """A Keras model whose `fit` can drive any keras_gdzoo solver.

    Build it with `keras_gdzoo.wrap(model)`. It calls the wrapped model, shares
    its weights (train the wrapper, predict with either) and compiles like
    any model. With a `keras_gdzoo.solvers.Solver` as optimizer, each fit
    batch is one solver iteration on that batch; with any other optimizer
    it trains exactly like the wrapped model would.

    Solver diagnostics (`step_size`, `damping`, `evaluations`...) are added
    to the logs, so they show in the progress bar, `History` and
    TensorBoard. When a solver cannot go on (damping over its cap, line
    search failing along -g) training stops with a warning that says why.

    Args:
        model: the `keras.Model` to train.

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.LevenbergMarquardt(), loss="mse")
    >>> trainer.fit(x, y, batch_size=len(x), epochs=50)
    >>> model.predict(x)
    """

    def __init__(self, model, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Argument `model` must be a keras.Model. Received: model={model!r}"
            )
        self.model = model

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape=None):
        if not self.model.built and input_shape is not None:
            self.model.build(input_shape)
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        return self.model.compute_output_spec(inputs)

    def get_config(self):
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.model)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(model, **config)

    # -- training -----------------------------------------------------------
    @property
    def _uses_solver(self):
        return isinstance(getattr(self, "optimizer", None), Solver)

    def fit(self, *args, callbacks=None, **kwargs):
        if self._uses_solver:
            callbacks = list(callbacks or []) + [_SolverMonitor()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def make_train_function(self, force=False):
        if not self._uses_solver:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        solver = self.optimizer
        if not solver.built:
            with self.distribute_strategy.scope():
                solver.build(self.trainable_variables)
        jit_compile = (
            bool(self.jit_compile) and self.distribute_strategy.num_replicas_in_sync == 1
        )
        step = tf.function(self._solver_step, reduce_retracing=True, jit_compile=jit_compile)

        def train_function(iterator):
            # steps_per_execution iterations per call: Keras's callbacks and
            # logs handling run once per call. (The loop stays in Python: a
            # tf.while_loop around whole solver iterations measured slower.)
            logs = None
            for _ in range(self.steps_per_execution):
                try:
                    data = next(iterator)
                except StopIteration:
                    if logs is None:
                        raise
                    break
                logs = step(data)
            return logs

        self.train_function = train_function
        return train_function

    def _solver_step(self, data):
        """One solver iteration on one (possibly distributed) batch."""
        strategy = self.distribute_strategy
        solver = self.optimizer
        objective = ModelObjective(self, data, strategy)
        x, y, sample_weight = objective.data

        # Metrics (and the loss shown in the logs) at the starting point, as
        # Keras's own train step reports them.
        def update_metrics(x, y, sample_weight):
            y_pred = self(x, training=True)
            loss = self.compute_loss(x, y, y_pred, sample_weight, training=True)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            self._loss_tracker.update_state(
                loss * replicas,
                sample_weight=tf.shape(tf.nest.flatten(x)[0])[0],
            )
            self.compute_metrics(x, y, y_pred, sample_weight)
            return tf.constant(0)

        objective.replica_sum(update_metrics)

        w = objective.current()
        w_new, state, logs = solver.step(w, solver.read_state(), objective)
        finite = tf.reduce_all(tf.math.is_finite(w_new))
        w_new = tf.where(finite, w_new, w)
        objective.assign(w_new)
        solver.write_state(state)
        solver.iterations.assign_add(1)

        logs = dict(logs)
        stop = tf.cast(tf.logical_not(finite), w.dtype)
        logs[STOP] = tf.maximum(tf.cast(logs.get(STOP, 0.0), w.dtype), stop)
        results = dict(self.get_metrics_result())
        results.update(logs)
        return results


def wrap(model):
    """Make `model` trainable by every keras_gdzoo solver.

    Args:
        model: a `keras.Model` (Sequential, functional or subclassed).

    Returns:
        A `SolverModel` that shares `model`'s weights. Compile and fit it;
        `model` itself holds the trained weights afterwards.
    """
    if isinstance(model, SolverModel):
        return model
    return SolverModel(model)
