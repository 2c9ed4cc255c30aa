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

import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo import _keras_adapter
from keras_gdzoo import validation
from keras_gdzoo.objectives import ModelObjective
from keras_gdzoo.objectives import overrides_compute_loss
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver

__all__ = ["ModelObjective", "SolverModel", "wrap"]

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


class _MetricsShortcut:
    """Keras's `fit` resets the metrics eagerly at each epoch's start and
    reads them eagerly at its end: two eager passes over the metric
    variables, which cost about as much as a small solver iteration (~0.5
    ms each, timed inside `fit` on bench_fit_overhead.py's problem). With a solver
    on one replica, `SolverModel` instead (a) defers a reset to the next
    train step, which applies it in its graph, and (b) answers an eager
    `get_metrics_result` right after a train call from the results that
    call computed. Every other reader (the `metrics` property, `evaluate`'s
    test function, a later `get_metrics_result`) applies a deferred reset
    first, so what anyone reads is what Keras's own order would give."""

    def __init__(self):
        self.reset_pending = False
        self.results = None  # metric results of the last train call

    def take_reset(self):
        pending, self.reset_pending = self.reset_pending, False
        return pending


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class SolverModel(keras.Model):
    """A Keras model whose `fit` can drive any keras_gdzoo solver.

    Build it with `keras_gdzoo.wrap(model)`. It calls the wrapped model, shares
    its weights (train the wrapper, predict with either) and compiles like
    any model. With a `keras_gdzoo.solvers.Solver` as optimizer, each fit
    batch is one solver iteration on that batch; with any other optimizer
    it trains exactly like the wrapped model would.

    What is minimized (see `keras_gdzoo.objectives`): the compiled loss(es)
    plus the model's penalties (`model.losses`); or the wrapped model's own
    `compute_loss` when it overrides it and `compile` gets no `loss`; or
    the least-squares objective of `residuals`.

    Solver diagnostics (`step_size`, `damping`, `evaluations`...) are added
    to the logs, so they show in the progress bar, `History` and
    TensorBoard. When a solver cannot go on (damping over its cap, line
    search failing along -g) training stops with a warning that says why.

    Args:
        model: the `keras.Model` to train. The wrapper takes its dtype
            policy, so a float64 model trains in float64.
        residuals: optional `fn(model, x, y)` returning a tensor or a list of
            tensors of residuals, each [n_e, k_e]: the objective is then
            sum_e lambda_e / (2 n_e) * sum r_e^2 (+ penalties), for every
            solver, Levenberg-Marquardt included; compile without `loss`.
        residual_weights: optional list of lambda_e, one per residual tensor
            (default all 1).
        batch_mode: whether every fit batch is the whole data set, so a
            solver may reuse the loss and gradient its last step computed.
            None (the default) decides per `fit` call: True when `x` is
            in-memory data (NumPy arrays or tensors) and `batch_size` is at
            least its length, False otherwise (datasets, generators,
            `train_on_batch`). Pass True for a dataset that yields the same
            full batch every step.
        micro_batch_size: None (the default) or an integer b >= 1: every
            objective evaluation a solver makes (E, g, the metrics pass,
            Gauss-Newton- and Hessian-vector products, curvature diagonals,
            dense Gauss-Newton matrices and Hessians) runs over pieces of at
            most b examples of the batch and sums them, so peak activations
            are those of b examples while the objective stays that of the
            whole batch (equal to rounding). For batch mode on data sets
            whose forward pass does not fit at once. Needs a compiled loss
            (refused with `residuals` or a custom `compute_loss`); ordinary
            Keras optimizers train as without it.

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.LevenbergMarquardt(), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    >>> predictions = model.predict(x, verbose=0)
    """

    def __init__(
        self,
        model,
        residuals=None,
        residual_weights=None,
        batch_mode=None,
        micro_batch_size=None,
        **kwargs,
    ):
        if not isinstance(model, keras.Model):
            raise ValueError(
                f"Argument `model` must be a keras.Model. Received: model={model!r}"
            )
        if residuals is not None and not callable(residuals):
            raise ValueError(
                "Argument `residuals` must be a function (model, x, y) -> residuals. "
                f"Received: residuals={residuals!r}"
            )
        if residual_weights is not None:
            if residuals is None:
                raise ValueError(
                    "Argument `residual_weights` needs `residuals`. "
                    f"Received: residual_weights={residual_weights!r}"
                )
            if not isinstance(residual_weights, (list, tuple)):
                residual_weights = [residual_weights]
            residual_weights = [
                validation.non_negative("residual_weights", w) for w in residual_weights
            ]
        if batch_mode is not None:
            batch_mode = validation.boolean("batch_mode", batch_mode)
        if micro_batch_size is not None:
            micro_batch_size = validation.integer("micro_batch_size", micro_batch_size, minimum=1)
            if residuals is not None:
                raise ValueError(
                    "Argument `micro_batch_size` needs a compiled loss: a residual "
                    "function sees the whole batch (its entries need not be rows of x). "
                    f"Received: micro_batch_size={micro_batch_size} with residuals"
                )
        kwargs.setdefault("dtype", _policy_of(model))
        super().__init__(**kwargs)
        self.model = model
        self.residuals = residuals
        self.residual_weights = residual_weights
        self.batch_mode = batch_mode
        self.micro_batch_size = micro_batch_size
        self._gz_loss = None
        self._gz_loss_weights = None
        self._stationary = False
        self.__dict__["_gz_metrics"] = _MetricsShortcut()  # not tracked by Keras
        if model.built:
            self.built = True

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape=None):
        if not self.model.built and input_shape is not None:
            self.model.build(input_shape)
        self.built = True

    def compute_output_spec(self, inputs, training=None):
        return self.model.compute_output_spec(inputs)

    def export(self, filepath, format="tf_saved_model", verbose=None, **kwargs):
        """Export the wrapped model (what serves predictions; the wrapper
        only adds training)."""
        return self.model.export(filepath, format=format, verbose=verbose, **kwargs)

    def get_config(self):
        config = super().get_config()
        config["model"] = keras.saving.serialize_keras_object(self.model)
        if self.residuals is not None:
            config["residuals"] = keras.saving.serialize_keras_object(self.residuals)
            config["residual_weights"] = self.residual_weights
        if self.batch_mode is not None:
            config["batch_mode"] = self.batch_mode
        if self.micro_batch_size is not None:
            config["micro_batch_size"] = self.micro_batch_size
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        residuals = config.pop("residuals", None)
        if residuals is not None:
            residuals = keras.saving.deserialize_keras_object(
                residuals, custom_objects=custom_objects
            )
        for key in ("trainable", "dtype"):
            config.pop(key, None)
        return cls(model, residuals=residuals, **config)

    # -- compile and the objective -------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, **kwargs):
        if self.residuals is not None and loss is not None:
            raise ValueError(
                "This wrapper minimizes its `residuals`; compile it without a `loss`. "
                f"Received: loss={loss!r}"
            )
        self._gz_loss = loss
        self._gz_loss_weights = loss_weights
        if loss is None and self.residuals is None and isinstance(optimizer, Solver):
            if not overrides_compute_loss(self.model):
                raise ValueError(
                    f"{type(optimizer).__name__} needs an objective: compile with a "
                    "`loss`, give the wrapped model a `compute_loss` method, or wrap "
                    "it with `keras_gdzoo.wrap(model, residuals=fn)`. Received: loss=None"
                )
        super().compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, **kwargs)
        if isinstance(getattr(self.optimizer, "inner_optimizer", None), Solver):
            # mixed_float16: Keras wraps the optimizer to scale the loss; a solver
            # evaluates the loss itself (in float32 weights), so it needs none.
            self.optimizer = self.optimizer.inner_optimizer
        self._objective_loss = keras.metrics.Mean(name="loss")
        self.__dict__["_gz_metrics"] = _MetricsShortcut()  # new metrics: nothing deferred

    def compile_from_config(self, config):
        _keras_adapter.compile_from_config(self, config)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The objective on a batch: residuals, the wrapped model's own
        `compute_loss`, or the compiled loss (any optimizer sees the same)."""
        if self.residuals is not None:
            objective = ModelObjective(self, (x, y, sample_weight), tf.distribute.get_strategy())
            return objective.value(objective.current())
        if self._gz_loss is None and overrides_compute_loss(self.model):
            return self.model.compute_loss(x, y, y_pred, sample_weight, training=training)
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    @property
    def metrics(self):
        self._settle_metrics()
        own = getattr(self, "_objective_loss", None)
        metrics = [m for m in super().metrics if m is not own]
        if not self._uses_solver or own is None:
            return metrics
        # The loss a solver logs is its objective at the step's start, in the
        # weights' dtype: our own tracker, in place of Keras's compiled one.
        return [self._objective_loss] + [m for m in metrics if m.name != "loss"]

    def reset_metrics(self):
        shortcut = self.__dict__.get("_gz_metrics")
        if shortcut is None or not self._defers_metric_resets():
            return super().reset_metrics()
        shortcut.reset_pending = True  # applied by the next step (`_MetricsShortcut`)
        shortcut.results = None

    def get_metrics_result(self):
        shortcut = self.__dict__.get("_gz_metrics")
        if shortcut is not None and shortcut.results is not None and tf.executing_eagerly():
            return dict(shortcut.results)
        return super().get_metrics_result()

    def _defers_metric_resets(self):
        return self._uses_solver and self.distribute_strategy.num_replicas_in_sync == 1

    def _settle_metrics(self):
        """Apply a deferred metrics reset now (eagerly; at trace time the
        step applies it)."""
        shortcut = self.__dict__.get("_gz_metrics")
        if shortcut is not None and shortcut.reset_pending and tf.executing_eagerly():
            shortcut.reset_pending = False
            super().reset_metrics()

    def _reset_metrics_in_graph(self):
        for metric in self.metrics:
            metric.reset_state()
        return tf.constant(True)

    # -- training -----------------------------------------------------------
    @property
    def _uses_solver(self):
        return isinstance(getattr(self, "optimizer", None), Solver)

    def fit(self, x=None, y=None, batch_size=None, callbacks=None, **kwargs):
        if self._uses_solver:
            callbacks = list(callbacks or []) + [_SolverMonitor()]
            if not self.trainable_variables and self.model.built:
                raise ValueError(
                    "The model has no trainable weights: there is nothing for "
                    f"{type(self.optimizer).__name__} to train. Received: "
                    f"model={self.model.name!r}"
                )
            stationary = self.batch_mode
            if stationary is None:
                stationary = _is_whole_batch(x, batch_size, kwargs)
            self._set_stationary(stationary)
            if stationary and self._in_memory(x, kwargs):
                # Batch mode on arrays: one repeated full batch, in the model's
                # dtype. Keras would rebuild its input pipeline every epoch
                # (tens of ms, more than a cheap solver step) and cast floats
                # to the global float type.
                dataset = self._full_batch_dataset(x, y, kwargs.pop("sample_weight", None))
                kwargs.pop("shuffle", None)
                if self.distribute_strategy.num_replicas_in_sync == 1:
                    # The one batch the dataset repeats: the train function
                    # takes it instead of pulling it from Keras's iterator.
                    self.__dict__["_gz_batch"] = next(iter(dataset))
                try:
                    return super().fit(
                        dataset, steps_per_epoch=1, shuffle=False, callbacks=callbacks, **kwargs
                    )
                finally:
                    self.__dict__["_gz_batch"] = None
                    self.__dict__["_gz_batch_function"] = None  # (holds the batch)
        return super().fit(x, y, batch_size=batch_size, callbacks=callbacks, **kwargs)

    def _in_memory(self, x, fit_kwargs):
        strategy = self.distribute_strategy
        return (
            (strategy.num_replicas_in_sync == 1 or _multi_worker(strategy))
            and fit_kwargs.get("class_weight") is None
            and all(isinstance(a, (np.ndarray, tf.Tensor)) for a in tf.nest.flatten(x))
        )

    def _full_batch_dataset(self, x, y, sample_weight):
        dtype = tf.as_dtype(self.trainable_variables[0].dtype) if self.trainable_variables else None

        def tensor(a):
            a = tf.convert_to_tensor(a)
            if a.dtype.is_floating and dtype is not None and a.dtype != dtype:
                a = tf.cast(a, dtype)
            return a

        def structure(part):
            # tf.data reads a Python list as one tensor: make lists tuples.
            part = tf.nest.map_structure(tensor, part)
            return tuple(part) if isinstance(part, list) else part

        data = (structure(x),)
        if y is not None:
            data += (structure(y),)
            if sample_weight is not None:
                data += (structure(sample_weight),)
        dataset = tf.data.Dataset.from_tensors(data).repeat()
        if _multi_worker(self.distribute_strategy):
            # As in Keras, every worker passes the whole data set; Keras splits
            # each batch into one piece per replica and worker i keeps piece i
            # (DATA sharding: the pieces cover the batch once, in any order).
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = (
                tf.data.experimental.AutoShardPolicy.DATA
            )
            dataset = dataset.with_options(options)
        return dataset

    def train_on_batch(self, *args, **kwargs):
        if self._uses_solver:
            self._set_stationary(bool(self.batch_mode))
        batch, self.__dict__["_gz_batch"] = self.__dict__.get("_gz_batch"), None
        try:  # (called from a callback inside fit: its own batch)
            return super().train_on_batch(*args, **kwargs)
        finally:
            self.__dict__["_gz_batch"] = batch

    def _set_stationary(self, stationary):
        stationary = bool(stationary)
        if stationary != self._stationary:
            self._stationary = stationary
            self.train_function = None  # traced for the other mode
        if self.optimizer.built:
            # Values kept from an earlier call were computed on other data.
            self.optimizer.forget_evaluations()

    def make_train_function(self, force=False):
        if not self._uses_solver:
            return super().make_train_function(force)
        if self.train_function is not None and not force:
            return self.train_function
        if not self.trainable_variables:
            raise ValueError(
                "The model has no trainable weights: there is nothing for "
                f"{type(self.optimizer).__name__} to train. Received: "
                f"model={self.model.name!r}"
            )
        solver = self.optimizer
        if not solver.built:
            with self.distribute_strategy.scope():
                solver.build(self.trainable_variables)
        jit_compile = (
            bool(self.jit_compile) and self.distribute_strategy.num_replicas_in_sync == 1
        )
        step = tf.function(self._solver_step, reduce_retracing=True, jit_compile=jit_compile)
        shortcut = self.__dict__["_gz_metrics"]
        defer = self._defers_metric_resets()
        flags = (tf.constant(False), tf.constant(True))

        def solver_step(data):
            reset = flags[shortcut.take_reset()] if defer else None
            function = step
            if data is self.__dict__.get("_gz_batch"):
                # Batch mode's one batch: its traced function, called without
                # tf.function's per-call signature matching (~0.1 ms).
                kept = self.__dict__.get("_gz_batch_function")
                if kept is None or kept[0] is not data:
                    kept = (data, step.get_concrete_function(data, reset))
                    self.__dict__["_gz_batch_function"] = kept
                function = kept[1]
            logs, results = function(data, reset)
            if defer:
                shortcut.results = results
            return logs

        self.train_function = _keras_adapter.train_function(
            solver_step, self.steps_per_execution, lambda: self.__dict__.get("_gz_batch")
        )
        return self.train_function

    def make_test_function(self, force=False):
        if not (self._uses_solver and _multi_worker(self.distribute_strategy)):
            super().make_test_function(force)  # (Keras 3.15's returns None)
            function = self.test_function
            if getattr(function, "_gz_settles_metrics", False):
                return function

            def test_function(iterator):
                # A deferred reset (evaluate's own) first; the results kept
                # from the last train call no longer hold.
                self._settle_metrics()
                self.__dict__["_gz_metrics"].results = None
                return function(iterator)

            test_function._gz_settles_metrics = True
            self.test_function = test_function
            return test_function
        if self.test_function is not None and not force:
            return self.test_function
        # Keras's own reduces the test step's logs with
        # strategy.reduce("MEAN", v, axis=0), which MultiWorkerMirroredStrategy
        # refuses for scalars: evaluate in cross-replica context instead, as
        # the train function does (the metrics sum over the workers).
        step = tf.function(self._evaluate_step, reduce_retracing=True)
        self.test_function = _keras_adapter.train_function(step, self.steps_per_execution)
        return self.test_function

    def _evaluate_step(self, data):
        objective = ModelObjective(self, data, self.distribute_strategy)
        objective.replica_sum(self._update_metrics, objective, objective.current())
        return self.get_metrics_result()

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Keras's own reduces the first batch across replicas, which
        # MultiWorkerMirroredStrategy refuses; see `_keras_adapter`.
        if iterator is not None and _multi_worker(self.distribute_strategy):
            data_batch = _keras_adapter.symbolic_build_batch(self.distribute_strategy, iterator)
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def solve(
        self, x, y=None, sample_weight=None, iterations=1000, gtol=None, ftol=None,
        jit_compile=None,
    ):
        """Run up to `iterations` solver iterations on the whole data set in
        one graph call (a `tf.while_loop`, no Python per iteration).

        For long full-batch runs (physics-informed networks take tens of
        thousands of L-BFGS iterations) where `fit`'s per-epoch callbacks
        are not wanted. The data is one batch (batch mode: E and g are
        reused between iterations). Stops early when the solver asks to
        stop, when ||g|| <= `gtol`, or when the loss falls by less than
        `ftol` * |loss| in one iteration. The state is kept in the solver's
        variables as in `fit`, so `solve` and `fit` can be mixed and a saved
        model resumes exactly.

        Args:
            x, y, sample_weight: the data set, in memory.
            iterations: the most iterations, an integer >= 1.
            gtol: optional gradient-norm tolerance (> 0).
            ftol: optional relative loss-decrease tolerance (> 0).
            jit_compile: whether to compile the loop with XLA; None (the
                default) follows the model's `jit_compile` (off under a
                distribution strategy with several replicas). With XLA the
                graph is traced for each value of `iterations` (its log
                arrays need a static size).

        Returns:
            A dict of NumPy arrays, one entry per iteration: `loss` (at the
            iteration's start, as `fit` logs it), every solver log
            (`evaluations`, `step_size`...), and `iterations` (the count run).
        """
        if not self._uses_solver:
            raise ValueError(
                "`solve` needs a keras_gdzoo solver as the optimizer. Received: "
                f"optimizer={self.optimizer!r}"
            )
        iterations = validation.integer("iterations", iterations, minimum=1)
        gtol = None if gtol is None else validation.positive("gtol", gtol)
        ftol = None if ftol is None else validation.positive("ftol", ftol)
        if jit_compile is None:
            jit_compile = bool(self.jit_compile)
        jit_compile = validation.boolean("jit_compile", jit_compile) and (
            self.distribute_strategy.num_replicas_in_sync == 1
        )
        if not self.trainable_variables:
            raise ValueError(
                "The model has no trainable weights: there is nothing for "
                f"{type(self.optimizer).__name__} to train."
            )
        solver = self.optimizer
        if not solver.built:
            solver.build(self.trainable_variables)
        solver.forget_evaluations()
        data = self._full_batch_dataset(x, y, sample_weight)
        batch = next(iter(data))
        spec = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), batch)
        # XLA needs the log arrays' size, `iterations`, known when tracing.
        static = iterations if jit_compile else None
        key = (str(spec), gtol, ftol, id(solver), jit_compile, static)
        cache = self.__dict__.setdefault("_gz_solve_cache", {})
        if key not in cache:  # one trace per data shape and tolerances
            cache.clear()
            cache[key] = self._solve_function(
                self._solve_log_names(batch), gtol, ftol, jit_compile, static
            )
        history = cache[key](batch, tf.constant(iterations))
        count = int(history.pop("iterations"))
        result = {key: value.numpy()[:count] for key, value in history.items()}
        result["iterations"] = count
        return result

    def _solve_log_names(self, batch):
        """The solver's log names (traced once, without running)."""
        objective_spec = {}

        def probe(batch):
            objective = ModelObjective(self, batch, self.distribute_strategy, stationary=True)
            w = objective.current()
            _, _, logs = self.optimizer.step(w, self.optimizer.read_state(), objective)
            objective_spec.update({key: None for key in logs})
            return tf.constant(0)

        tf.function(probe).get_concrete_function(
            tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype), batch)
        )
        return sorted(objective_spec)

    def _solve_function(self, names, gtol, ftol, jit_compile=False, static_iterations=None):
        solver = self.optimizer

        def run(batch, iterations):
            objective = ModelObjective(self, batch, self.distribute_strategy, stationary=True)
            dtype = objective.dtype
            w0 = solver.resume_point(objective.current(), objective.rounded)
            size = iterations if static_iterations is None else static_iterations
            logs = {key: tf.TensorArray(dtype, size=size) for key in names + ["loss"]}

            def body(i, w, state, previous, done, logs):
                value, gradient = _start_point(objective, w, state, gtol is not None)
                w_new, state_new, step_logs = solver.step(w, state, objective)
                step_logs = dict(step_logs, loss=value)
                logs = {key: logs[key].write(i, tf.cast(step_logs[key], dtype)) for key in logs}
                stop = tf.cast(step_logs.get(STOP, 0.0), dtype) > 0
                if gtol is not None:
                    stop |= tf.norm(gradient) <= gtol
                if ftol is not None:
                    stop |= (i > 0) & (previous - value <= ftol * tf.abs(value))
                finite = tf.reduce_all(tf.math.is_finite(w_new))
                w_new = tf.where(finite, w_new, w)
                state_new = _finite_state(state_new, state)
                return i + 1, w_new, state_new, value, stop | ~finite, logs

            count, w, state, _, _, logs = tf.while_loop(
                lambda i, w, state, previous, done, logs: (i < iterations) & ~done,
                body,
                (tf.constant(0), w0, solver.read_state(), tf.constant(0.0, dtype),
                 tf.constant(False), logs),
            )
            objective.assign(w)
            solver.keep_iterate(w)
            solver.write_state(state)
            solver.iterations.assign_add(tf.cast(count, solver.iterations.dtype))
            out = {key: array.stack() for key, array in logs.items()}
            out["iterations"] = count
            return out

        return tf.function(run, jit_compile=jit_compile)

    def _update_metrics(self, x, y, sample_weight, objective, w):
        """Update the loss (the objective, in the weights' dtype) and the
        compiled metrics on this replica's shard."""
        value, y_pred = objective.local_value(x, y, sample_weight, w)
        count = tf.cast(objective.count, value.dtype)
        rows = tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], value.dtype)
        # This replica's share of E, as a mean over its own examples.
        self._objective_loss.update_state(value * count / rows, sample_weight=rows)
        if y_pred is None:
            y_pred = self(x, training=True)
        self.compute_metrics(x, y, y_pred, sample_weight)
        return tf.constant(0)

    def test_step(self, data):
        if not self._uses_solver:
            return super().test_step(data)
        # evaluate() reports the same objective as fit's logs.
        objective = ModelObjective(self, data, tf.distribute.get_strategy())
        objective.replica_sum(self._update_metrics, objective, objective.current())
        return self.get_metrics_result()

    def _loss_is_kept(self, state):
        """Whether the loss to log at a step's start can come from what the
        solver kept of its last step (`_start_point`) instead of a metrics
        forward pass: batch mode, one replica, and no metric but the loss
        (Python bool, decided when tracing)."""
        return (
            self._stationary
            and self.distribute_strategy.num_replicas_in_sync == 1
            and "point_known" in state
            and ("point_value" in state or "loss" in state)
            and all(m is self._objective_loss for m in self.metrics)
        )

    def _solver_step(self, data, reset_metrics=None):
        """One solver iteration on one (possibly distributed) batch; first
        the metrics reset when `reset_metrics` (a bool tensor: a reset
        deferred by `reset_metrics`, see `_MetricsShortcut`) holds. Returns
        the logs and the metric results."""
        if reset_metrics is not None:
            tf.cond(reset_metrics, self._reset_metrics_in_graph, lambda: tf.constant(False))
        strategy = self.distribute_strategy
        solver = self.optimizer
        objective = ModelObjective(self, data, strategy, stationary=self._stationary)
        w = solver.resume_point(objective.current(), objective.rounded)
        state = solver.read_state()

        # Metrics (and the loss shown in the logs) at the starting point, as
        # Keras's own train step reports them; the loss is the objective.
        if self._loss_is_kept(state):
            # Batch mode, one replica, no compiled metrics: the solver kept E
            # at w from its last step, so no forward pass is needed for it.
            value, _ = _start_point(objective, w, state, need_gradient=False)
            rows = tf.cast(tf.shape(tf.nest.flatten(data)[0])[0], value.dtype)
            self._objective_loss.update_state(value, sample_weight=rows)
        else:
            objective.replica_sum(self._update_metrics, objective, w)

        w_new, new_state, logs = solver.step(w, state, objective)
        finite = tf.reduce_all(tf.math.is_finite(w_new))
        w_new = tf.where(finite, w_new, w)
        objective.assign(w_new)
        solver.keep_iterate(w_new)
        solver.write_state(_finite_state(new_state, state))
        solver.iterations.assign_add(1)

        logs = dict(logs)
        stop = tf.cast(tf.logical_not(finite), w.dtype)
        logs[STOP] = tf.maximum(tf.cast(logs.get(STOP, 0.0), w.dtype), stop)
        metric_results = dict(self.get_metrics_result())
        results = dict(metric_results)
        results.update(logs)
        return results, metric_results


def _start_point(objective, w, state, need_gradient):
    """E (and g, when `need_gradient`, else None) at an iteration's start:
    what the solver kept in its state (batch mode), else evaluated. Only
    what is missing is evaluated: LM and Newton keep no gradient, and the
    log needs only E."""
    dtype = objective.dtype
    known = state["point_known"] > 0 if "point_known" in state else None
    if known is not None and "point" in state:
        known &= tf.reduce_all(tf.equal(tf.cast(state["point"], dtype), w))
    if known is not None and "point_value" in state and not need_gradient:
        return tf.cond(
            known, lambda: tf.cast(state["point_value"], dtype), lambda: objective.value(w)
        ), None
    if known is not None and "point_gradient" in state and "point_value" in state:
        return tf.cond(
            known,
            lambda: (tf.cast(state["point_value"], dtype), tf.cast(state["point_gradient"], dtype)),
            lambda: objective.value_and_gradient(w),
        )
    if need_gradient:
        return objective.value_and_gradient(w)
    if known is not None and "loss" in state:  # Levenberg-Marquardt
        return tf.cond(known, lambda: tf.cast(state["loss"], dtype), lambda: objective.value(w)), None
    return objective.value(w), None


def _policy_of(model):
    """The wrapped model's dtype policy; for a model built from layers of
    another float type than its own policy (float64 layers under the float32
    default), that of its weights."""
    policy = model.dtype_policy
    dtypes = {v.dtype for v in model.weights}
    if len(dtypes) == 1 and policy.variable_dtype not in dtypes:
        return dtypes.pop()
    return policy


def _finite_state(state, previous):
    """A solver's new state, with any non-finite entry kept at its old value
    (a solver never stores NaN or infinity: it would be saved and reused)."""
    return {
        key: tf.where(tf.math.is_finite(value), value, previous[key])
        if value.dtype.is_floating
        else value
        for key, value in state.items()
    }


def _multi_worker(strategy):
    """Whether `strategy` spans several processes (each its own data pipeline)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _is_whole_batch(x, batch_size, fit_kwargs):
    """Batch mode of a `fit` call: in-memory data in one batch per epoch."""
    if fit_kwargs.get("steps_per_epoch") is not None or fit_kwargs.get("validation_split"):
        return False
    arrays = tf.nest.flatten(x)
    if not arrays or not all(hasattr(a, "shape") and len(a.shape) > 0 for a in arrays):
        return False
    if isinstance(x, tf.data.Dataset) or any(isinstance(a, tf.data.Dataset) for a in arrays):
        return False
    n = int(arrays[0].shape[0])
    if batch_size is None:
        batch_size = 32
    return int(batch_size) >= n


def wrap(model, residuals=None, residual_weights=None, batch_mode=None, micro_batch_size=None):
    """Make `model` trainable by every keras_gdzoo solver.

    Args:
        model: a `keras.Model` (Sequential, functional or subclassed).
        residuals: optional `fn(model, x, y)` of residuals for a
            least-squares objective (see `SolverModel`).
        residual_weights: optional weights of the residual tensors.
        batch_mode: see `SolverModel` (None decides per `fit` call).
        micro_batch_size: optional integer b >= 1: solvers evaluate the
            objective in pieces of at most b examples (see `SolverModel`).

    Returns:
        A `SolverModel` that shares `model`'s weights. Compile and fit it;
        `model` itself holds the trained weights afterwards.
    """
    if (
        isinstance(model, SolverModel)
        and residuals is None
        and batch_mode is None
        and micro_batch_size is None
    ):
        return model
    return SolverModel(
        model,
        residuals=residuals,
        residual_weights=residual_weights,
        batch_mode=batch_mode,
        micro_batch_size=micro_batch_size,
    )
