"""What `gz.wrap(model)` minimizes: the objective of a Keras model on a batch.

`ModelObjective` is the `keras_gdzoo.solvers.Objective` a solver sees when
Keras's `fit` drives it: E(w) on the current batch as a function of one flat
weight vector w (the trainable variables, flattened and concatenated in
`model.trainable_variables` order). Evaluations are stateless
(`keras.StatelessScope`): the model's variables keep their values until
`assign` writes the solver's result.

Three kinds of objective, chosen by how the wrapper was built and compiled:

* **compiled losses** (`trainer.compile(loss=...)`, one loss or one per
  output as a list or dict, with `loss_weights`):
  E = sum_j lambda_j * 1/n sum_i s_i L_j(y_ij, f_j(x_i; w)) + P(w), with
  lambda_j the loss weights (1 by default), s_i the sample weights and P the
  model's penalties (`model.losses`: `kernel_regularizer` and the like,
  `add_loss`). The per-example losses are computed here in the weights'
  dtype, so a float64 model keeps float64 all the way (Keras's compiled loss
  would compute in the global float type).
* **the wrapped model's own `compute_loss`** (a subclassed model that
  overrides it, the usual Keras 3 way to write a physics-informed loss; then
  `compile` takes no `loss`): E(w) is what that method returns, evaluated
  at w. The method may differentiate the model with respect to its inputs
  (nested `tf.GradientTape`); it sees the trial weights through the
  stateless scope.
* **residuals** (`gz.wrap(model, residuals=fn)`): `fn(model, x, y)` returns
  a tensor or a list of tensors r_e of shape [n_e, k_e] (or [n_e]); then

      E(w) = sum_e lambda_e / (2 n_e) * sum_{i < n_e, k < k_e} r_e[i, k]^2 + P(w)

  with lambda_e the `residual_weights` (1 by default) and n_e the global
  number of rows of entry e: each entry is a mean over its rows, so
  interior and boundary points of a PDE count as two means whatever their
  numbers. Gauss-Newton: g = sum_e lambda_e/n_e J_e' r_e and
  A = sum_e lambda_e/n_e J_e' J_e with J_e the Jacobian of entry e's rows.

The curvature the second-order solvers ask for (`gauss_newton`, `hessian`)
always includes P: its exact gradient and Hessian (for L2 and L1 penalties
the Hessian is also their Gauss-Newton term, 2*l2*I and 0).

Distribution: every evaluation runs on each replica's shard with
`strategy.run` and the pieces are summed (`strategy.reduce`), the data
terms divided by the global number of examples, so E is the mean over the
global batch whatever the shard sizes.

Micro-batches (`gz.wrap(model, micro_batch_size=b)`): every evaluation
(E, g, the metrics pass, Gauss-Newton- and Hessian-vector products, the
curvature diagonals, the dense Gauss-Newton matrix and Hessian, the
sample-space Jacobian) runs over each shard in consecutive pieces of at
most b examples and sums them (`over_micro_batches`), so only one piece's
activations are alive at a time. The sums are those of the whole batch:

    E = sum_pieces sum_{i in piece} (per-example terms) / n + P(w),

n the global number of examples, the penalties P added once (on each
shard's first piece, P / replicas). Penalties are taken as functions of
the weights, as under replicas; models with an `activity_regularizer`
(a penalty that sums over the examples) are refused. Layers that mix
examples (BatchNormalization in training mode) see one piece at a time.
Only compiled losses are split: a residual function or a custom
`compute_loss` sees the whole batch (its terms need not be sums over the
rows of x), so `micro_batch_size` refuses them.
"""

import math
import threading

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo.loss_terms import _outputs
from keras_gdzoo.model_curvature import check_gauss_newton_loss
from keras_gdzoo.loss_terms import _rows
from keras_gdzoo.loss_terms import _select
from keras_gdzoo.loss_terms import objective_of as _objective_of
from keras_gdzoo.loss_terms import overrides_compute_loss  # noqa: F401 (re-exported)
from keras_gdzoo.solvers.base import Objective
from keras_gdzoo.solvers.base import solver_dtype

class ModelObjective(Objective):
    """The objective of a wrapped Keras model on one batch, as a function of w.

    Args:
        model: the `SolverModel` (its `.model` is the wrapped network; its
            compile arguments and `residuals` define the objective).
        data: the batch, `(x, y, sample_weight)` or any form
            `keras.utils.unpack_x_y_sample_weight` accepts.
        strategy: the `tf.distribute` strategy (the default one without).
        stationary: True when the batch is the whole data set every step
            (batch mode): solvers may then reuse E and g from their last step.

    Attributes (besides `Objective`'s):
        count: the global number of examples n in the batch.
        loss_name, from_logits: the compiled loss, for Gauss-Newton forms.
        curvature: the `keras_gdzoo.curvature.ModelCurvature` composed from
            this objective's forward pass, per-example losses and replica
            sums (Gauss-Newton matrices, sample-space systems, Hessians).
        memory_budget: bytes for one chunk of per-example Jacobians.
    """

    memory_budget = curvature.DEFAULT_MEMORY_BUDGET

    def __init__(self, model, data, strategy, stationary=False):
        self.model = model
        self.network = getattr(model, "model", model)
        self.strategy = strategy
        self.stationary = bool(stationary)
        self.data = keras.utils.unpack_x_y_sample_weight(data)
        self.variables = list(model.trainable_variables)
        if not self.variables:
            raise ValueError(
                "The model has no trainable weights: there is nothing for a solver "
                f"to train. Received: model={self.network.name!r} with "
                f"{len(model.weights)} non-trainable weights"
            )
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.size = int(sum(self.sizes))
        # The solver's arithmetic is float64 for float32 (and narrower) models.
        self.dtype = solver_dtype(self.variables[0].dtype)
        self.kind, self.terms, self.residuals, self.residual_weights = _objective_of(model)
        self.micro_batch_size = getattr(model, "micro_batch_size", None)
        if self.micro_batch_size is not None:
            _check_micro_batches(self.kind, self.network, self.micro_batch_size)
        self._pieces = threading.local()
        self.output_names = list(getattr(self.network, "output_names", None) or [])
        single = self.kind == "compiled" and len(self.terms) == 1 and self.terms[0].output is None
        self.loss_name = self.terms[0].name if single else None
        self.from_logits = self.terms[0].from_logits if single else False
        self.count = self._replica_sum_whole(
            lambda x, y, sample_weight: tf.cast(_rows(tf.nest.flatten(x)[0]), self.dtype)
        )

    @property
    def curvature(self):
        return self._curvature(self.replica_sum)

    def _curvature(self, replica_sum):
        return curvature.ModelCurvature(
            predict=self.predict,
            per_example_loss=self.per_example_loss,
            replica_sum=replica_sum,
            count=self.count,
            size=self.size,
            dtype=self.dtype,
            loss_name=self.loss_name,
            from_logits=self.from_logits,
            num_replicas=self.strategy.num_replicas_in_sync,
            loss_description=", ".join(term.describe() for term in self.terms) or self.kind,
            check=self._check_gauss_newton_loss,
            memory_budget=self.memory_budget,
        )

    # -- flat view ----------------------------------------------------------
    def unflatten(self, w):
        pieces = tf.split(w, self.sizes)
        return [
            tf.cast(tf.reshape(p, s), v.dtype)
            for p, s, v in zip(pieces, self.shapes, self.variables)
        ]

    def current(self):
        return tf.concat(
            [tf.reshape(tf.cast(v.value, self.dtype), [-1]) for v in self.variables], 0
        )

    def rounded(self, w):
        """w rounded to the variables' dtypes (what `assign` stores), in
        the solver's dtype."""
        return tf.concat(
            [tf.reshape(tf.cast(p, self.dtype), [-1]) for p in self.unflatten(w)], 0
        )

    def assign(self, w):
        for variable, value in zip(self.variables, self.unflatten(w)):
            variable.assign(value)

    def _scope(self, w):
        return keras.StatelessScope(state_mapping=list(zip(self.variables, self.unflatten(w))))

    # -- distribution -------------------------------------------------------
    def replica_sum(self, fn, *args):
        """Run fn(x, y, sample_weight, *args) per replica and sum the results;
        with `micro_batch_size`, fn runs on each shard's micro-batches and
        their results are summed too (fn must be a sum over the examples)."""
        if self.micro_batch_size is not None:
            fn = self._over_micro_batches(fn)
        return self._replica_sum_whole(fn, *args)

    @property
    def in_first_micro_batch(self):
        """False while a shard's micro-batches after the first are traced:
        the penalties, which count once, are added on the first only."""
        return getattr(self._pieces, "first", True)

    def _over_micro_batches(self, fn):
        def chunked(x, y, sample_weight, *args):
            def piece(batch, first):
                # Thread-local: MirroredStrategy traces each replica in a thread.
                outer = self.in_first_micro_batch
                self._pieces.first = outer and first
                try:
                    return fn(*batch, *args)
                finally:
                    self._pieces.first = outer

            return over_micro_batches(piece, (x, y, sample_weight), self.micro_batch_size)

        return chunked

    def _replica_sum_whole(self, fn, *args):
        """`replica_sum` on whole shards (no micro-batches)."""
        x, y, sample_weight = self.data
        if self.strategy.num_replicas_in_sync == 1 and not _is_distributed(x):
            return fn(x, y, sample_weight, *args)
        context = tf.distribute.get_replica_context()
        if not _is_distributed(x) and context is not None and context.num_replicas_in_sync > 1:
            # Already inside a replica function (Keras's evaluate): sum with
            # the other replicas.
            return context.all_reduce(tf.distribute.ReduceOp.SUM, fn(x, y, sample_weight, *args))
        per_replica = self.strategy.run(fn, args=(x, y, sample_weight) + args)
        return tf.nest.map_structure(
            lambda t: self.strategy.reduce(tf.distribute.ReduceOp.SUM, t, axis=None),
            per_replica,
        )

    def _local_data(self, structure):
        """The first replica's shard of a (possibly distributed) structure."""
        return tf.nest.map_structure(
            lambda t: self.strategy.experimental_local_results(t)[0] if _is_distributed(t) else t,
            structure,
        )

    def _replicas(self):
        return float(self.strategy.num_replicas_in_sync)

    # -- one replica's pieces -------------------------------------------------
    def forward(self, w, x):
        """(model output, penalty sum(model.losses)) at weights w."""
        with self._scope(w):
            y_pred = self.network(x, training=True)
            losses = self.network.losses
        penalty = tf.add_n([tf.cast(p, self.dtype) for p in losses]) if losses else None
        return y_pred, penalty

    @property
    def multi_output(self):
        """Whether the compiled losses are per output of a multi-output model."""
        return any(term.output is not None for term in self.terms)

    def predict(self, w, x):
        """The model output at w; several outputs flattened and concatenated
        into one [n, K] tensor (what `keras_gdzoo.curvature` works on)."""
        y_pred, _ = self.forward(w, x)
        outputs = _outputs(y_pred)
        if len(outputs) == 1:
            return outputs[0]
        return tf.concat([tf.reshape(o, [_rows(o), -1]) for o in outputs], axis=1)

    def _split(self, y_pred_flat):
        """The per-output tensors of a flattened concatenated output."""
        shapes = self._output_shapes()
        sizes = [max(1, math.prod(s[1:])) for s in shapes]
        pieces = tf.split(y_pred_flat, sizes, axis=1)
        return [tf.reshape(p, [_rows(p)] + list(s[1:])) for p, s in zip(pieces, shapes)]

    def _output_shapes(self):
        if not hasattr(self, "_shapes_cache"):
            one = tf.nest.map_structure(lambda t: t[:1], self._local_data(self.data[0]))
            one = tf.nest.map_structure(tf.convert_to_tensor, one)
            y_pred, _ = self.forward(self.current(), one)
            self._shapes_cache = [(None,) + tuple(o.shape[1:]) for o in _outputs(y_pred)]
        return self._shapes_cache

    def per_example_loss(self, y, y_pred, sample_weight):
        """[n] weighted per-example data losses, sum_j lambda_j s_ij L_ij."""
        if isinstance(y_pred, (list, tuple, dict)):
            outputs = _outputs(y_pred)
        elif self.multi_output:
            outputs = self._split(y_pred)
        else:
            outputs = [y_pred]
        total = None
        for term in self.terms:
            index = term.output
            prediction = outputs[0 if index is None else index]
            target = _select(y, index, self.output_names)
            weights = _select(sample_weight, index, self.output_names)
            losses = term.function(target, prediction)
            losses = tf.reshape(tf.cast(losses, self.dtype), [_rows(prediction), -1])
            losses = tf.reduce_mean(losses, axis=1)
            if weights is not None:
                losses = losses * tf.reshape(tf.cast(weights, self.dtype), [-1])
            if term.reduction == "sum":
                # Keras's "sum" is not divided by n: undo the 1/n applied later.
                losses = losses * tf.cast(self.count, self.dtype)
            losses = term.weight * losses
            total = losses if total is None else total + losses
        return total

    def local_value(self, x, y, sample_weight, w):
        """This replica's share of E(w) (its terms summed over replicas give
        E), and the model output."""
        if self.kind == "residuals":
            return self._residual_value(x, y, w), None
        if self.kind == "custom":
            with self._scope(w):
                y_pred = self.network(x, training=True)
                loss = self.network.compute_loss(x, y, y_pred, sample_weight, training=True)
            rows = tf.cast(_rows(tf.nest.flatten(x)[0]), self.dtype)
            return tf.cast(loss, self.dtype) * rows / tf.cast(self.count, self.dtype), y_pred
        y_pred, penalty = self.forward(w, x)
        outputs = _outputs(y_pred)
        prediction = outputs if self.multi_output else outputs[0]
        value = tf.reduce_sum(self.per_example_loss(y, prediction, sample_weight))
        value = value / tf.cast(self.count, self.dtype)
        if penalty is not None and self.in_first_micro_batch:
            value = value + penalty / self._replicas()
        return value, y_pred

    def _local_loss(self, x, y, sample_weight, w):
        return self.local_value(x, y, sample_weight, w)[0]

    def _local_value_and_gradient(self, x, y, sample_weight, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            value = self._local_loss(x, y, sample_weight, w)
        return value, tape.gradient(value, w)

    # -- residual objectives ------------------------------------------------
    def _entries(self, x, y, w):
        with self._scope(w):
            entries = self.residuals(self.network, x, y)
            losses = self.network.losses
        entries = entries if isinstance(entries, (list, tuple)) else [entries]
        if self.residual_weights is not None and len(self.residual_weights) != len(entries):
            raise ValueError(
                f"`residual_weights` has {len(self.residual_weights)} entries but the "
                f"residual function returned {len(entries)} tensors. Received: "
                f"residual_weights={self.residual_weights!r}"
            )
        shaped = []
        for index, entry in enumerate(entries):
            entry = tf.cast(entry, self.dtype)
            if entry.shape.rank == 1:
                entry = entry[:, None]
            if entry.shape.rank != 2:
                raise ValueError(
                    "Each residual tensor must have shape [n_i, k_i] (or [n_i]). "
                    f"Received: residual {index} of shape {entry.shape}"
                )
            shaped.append(entry)
        penalty = tf.add_n([tf.cast(p, self.dtype) for p in losses]) if losses else None
        return shaped, penalty

    def _weights(self, count):
        if self.residual_weights is None:
            return [1.0] * count
        return list(self.residual_weights)

    def residual_entries(self, x, y, w):
        """This replica's residual tensors r_e ([n_e, k_e]) at w, their
        weights lambda_e and the penalty P (None without): what
        `keras_gdzoo.matrix_free` stacks for its products."""
        entries, penalty = self._entries(x, y, w)
        return entries, self._weights(len(entries)), penalty

    def residual_rows(self, w):
        """The global number of rows n_e of every residual entry, [E]."""
        def local(x, y, sample_weight, w):
            entries, _ = self._entries(x, y, w)
            return tf.stack([tf.cast(_rows(e), self.dtype) for e in entries])

        return self.replica_sum(local, w)

    def _residual_value(self, x, y, w, rows=None):
        rows = self.residual_rows(w) if rows is None else rows
        entries, penalty = self._entries(x, y, w)
        weights = self._weights(len(entries))
        value = tf.add_n(
            [
                weight / (2.0 * rows[i]) * tf.reduce_sum(e * e)
                for i, (e, weight) in enumerate(zip(entries, weights))
            ]
        )
        if penalty is not None:
            value = value + penalty / self._replicas()
        return value

    def _residual_gauss_newton(self, w):
        rows = self.residual_rows(w)

        def local(x, y, sample_weight, w):
            w_local = tf.identity(w)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(w_local)
                entries, _ = self._entries(x, y, w_local)
                weights = self._weights(len(entries))
                scaled = [
                    tf.reshape(e, [-1]) * tf.sqrt(weight / rows[i])
                    for i, (e, weight) in enumerate(zip(entries, weights))
                ]
                stacked = tf.concat(scaled, 0)
            jacobian = tape.jacobian(stacked, w_local, experimental_use_pfor=True)
            del tape
            value = 0.5 * tf.reduce_sum(stacked * stacked)
            gradient = tf.linalg.matvec(jacobian, stacked, transpose_a=True)
            return value, gradient, tf.matmul(jacobian, jacobian, transpose_a=True)

        return self.replica_sum(local, w)

    # -- penalties ----------------------------------------------------------
    def _local_penalty_curvature(self, x, y, sample_weight, w):
        """(P, dP/dw, d2P/dw2) of this replica's penalties, each / replicas."""
        if self.micro_batch_size is not None:
            # P depends on the weights only: the first micro-batch's forward
            # pass (as the value's) gives it.
            x = first_micro_batch(x, self.micro_batch_size)
        w_local = tf.identity(w)
        with tf.GradientTape() as outer:
            outer.watch(w_local)
            with tf.GradientTape() as inner:
                inner.watch(w_local)
                if self.kind == "residuals":
                    _, penalty = self._entries(x, y, w_local)
                else:
                    _, penalty = self.forward(w_local, x)
                if penalty is None:
                    penalty = tf.zeros([], self.dtype)
                penalty = penalty / self._replicas()
            gradient = inner.gradient(penalty, w_local, unconnected_gradients="zero")
        hessian = outer.jacobian(
            gradient, w_local, experimental_use_pfor=True, unconnected_gradients="zero"
        )
        return penalty, gradient, hessian

    def has_penalty(self):
        """Whether the model has penalties (`model.losses`) to add to the
        curvature (a custom `compute_loss` includes its own)."""
        if not hasattr(self, "_has_penalty"):
            x = self.data[0]
            if self.kind == "custom":
                self._has_penalty = False
            elif self.kind == "residuals" or _is_distributed(x):
                self._has_penalty = True
            else:
                one = tf.nest.map_structure(lambda t: t[:1], x)
                _, penalty = self.forward(self.current(), one)
                self._has_penalty = penalty is not None
        return self._has_penalty

    def _add_penalty(self, value, gradient, matrix, w, scale):
        if self.kind == "custom" or not self.has_penalty():
            return value, gradient, matrix
        scale = scale() if callable(scale) else scale
        penalty, slope, curvature_ = self._replica_sum_whole(self._local_penalty_curvature, w)
        return (
            value + scale * penalty,
            gradient + scale * slope,
            matrix + scale * curvature.symmetrize(curvature_),
        )

    # -- Objective ----------------------------------------------------------
    def value(self, w):
        return self.replica_sum(self._local_loss, w)

    def value_and_gradient(self, w):
        return self.replica_sum(self._local_value_and_gradient, w)

    def gauss_newton(self, w):
        if self.kind == "residuals":
            value, gradient, matrix = self._residual_gauss_newton(w)
            return self._add_penalty(value, gradient, symmetrize(matrix), w, 1.0)
        if self.kind == "custom":
            raise ValueError(
                "Levenberg-Marquardt needs a least-squares form of the loss, which a "
                "custom `compute_loss` does not give. Use `keras_gdzoo.wrap(model, "
                "residuals=fn)` with the residuals of your loss, or Newton / a "
                "first-order solver."
            )
        self._check_targets()
        value, gradient, matrix = self.curvature.gauss_newton(w)
        return self._add_penalty(value, gradient, matrix, w, self._penalty_scale)

    def gauss_newton_sample_space(self, w):
        self._check_targets()
        if self.micro_batch_size is None:
            return self.curvature.gauss_newton_sample_space(w)
        # The sample-space rows of the micro-batches, concatenated in order.
        self._check_gauss_newton_loss()
        model_curvature = self.curvature

        def local(x, y, sample_weight, w):
            return over_micro_batches(
                lambda batch, first: model_curvature._local_sample_space(*batch, w),
                (x, y, sample_weight),
                self.micro_batch_size,
                concatenated=(2, 3),
            )

        value, gradient, jacobian, residuals = self._replica_sum_whole(local, w)
        count = tf.cast(self.count, self.dtype)
        return (
            value / count,
            gradient / count,
            curvature.SampleSpaceSystem(jacobian, residuals, count),
        )

    def prefers_sample_space(self, w):
        if self.kind != "compiled" or self.loss_name is None or self.has_penalty():
            # Penalties (and residual entries) are added to A in parameter space.
            return False
        # Shapes only (n and K): on whole shards.
        return self._curvature(self._replica_sum_whole).prefers_sample_space(w)

    def hessian(self, w):
        if self.kind == "compiled":
            value, gradient, matrix = self.curvature.hessian(w)
            return self._add_penalty(value, gradient, matrix, w, 1.0)

        def local(x, y, sample_weight, w):
            w_local = tf.identity(w)
            with tf.GradientTape() as outer:
                outer.watch(w_local)
                value, gradient = self._local_value_and_gradient(x, y, sample_weight, w_local)
            return value, gradient, outer.jacobian(gradient, w_local, experimental_use_pfor=True)

        value, gradient, matrix = self.replica_sum(local, w)
        return value, gradient, symmetrize(matrix)

    # -- checks -------------------------------------------------------------
    def _penalty_scale(self):
        """Penalties in the units of the Gauss-Newton value: the lecture's
        E = 1/(2n) sum e'e is K/2 times Keras's mean squared error."""
        if self.loss_name == "mean_squared_error":
            shapes = self._output_shapes()
            return 0.5 * max(1, math.prod(shapes[0][1:]))
        return 1.0

    def _check_gauss_newton_loss(self):
        if self.loss_name is not None or self.kind != "compiled" or not self.multi_output:
            return check_gauss_newton_loss(
                self.loss_name, ", ".join(t.describe() for t in self.terms) or self.kind
            )
        for term in self.terms:
            if term.name not in curvature.GAUSS_NEWTON_LOSSES or (
                not term.from_logits
                and term.name in ("categorical_crossentropy", "sparse_categorical_crossentropy")
            ):
                raise ValueError(
                    "Levenberg-Marquardt on a model with several outputs needs a "
                    "Gauss-Newton form for each output's loss: mean squared error, "
                    "binary cross-entropy, or a categorical cross-entropy with "
                    f"from_logits=True. Received: loss={term.describe()!r} for output "
                    f"{term.output}"
                )

    def _check_targets(self):
        if self.loss_name != "mean_squared_error":
            return
        y = self._local_data(self.data[1])
        if isinstance(y, tf.Tensor) or hasattr(y, "shape"):
            target = tuple(y.shape[1:])
            output = self._output_shapes()[0][1:]
            if None in target or None in output:
                return
            if math.prod(target) != math.prod(output) and math.prod(target) != 1:
                raise ValueError(
                    "The targets and the model output differ in size per example: "
                    f"targets of shape {tuple(y.shape)} against an output of shape "
                    f"{self._output_shapes()[0]}. The mean squared error needs one "
                    "target per output."
                )


def symmetrize(matrix):
    return curvature.symmetrize(matrix)


def _is_distributed(value):
    return any(isinstance(v, tf.distribute.DistributedValues) for v in tf.nest.flatten(value))


# -- micro-batches ------------------------------------------------------------
def _check_micro_batches(kind, network, micro_batch_size):
    if kind == "residuals":
        raise ValueError(
            "Argument `micro_batch_size` needs a compiled loss: a residual function "
            "sees the whole batch (its entries need not be rows of x). Received: "
            f"micro_batch_size={micro_batch_size} with residuals"
        )
    if kind == "custom":
        raise ValueError(
            "Argument `micro_batch_size` needs a compiled loss: a custom `compute_loss` "
            "need not be a sum over the examples. Received: "
            f"micro_batch_size={micro_batch_size} with {type(network).__name__}.compute_loss"
        )
    for layer in _all_layers(network):
        if getattr(layer, "activity_regularizer", None) is not None:
            raise ValueError(
                "Argument `micro_batch_size` needs penalties that depend on the weights "
                "only; an activity regularizer sums over the examples. Received: "
                f"micro_batch_size={micro_batch_size} with layer {layer.name!r} "
                f"(activity_regularizer={layer.activity_regularizer!r})"
            )


def _all_layers(layer):
    yield layer
    for inner in getattr(layer, "layers", None) or []:
        if inner is not layer:
            yield from _all_layers(inner)


def _pieces(n, size):
    """(p, h): p = ceil(n / size) pieces (at least 1), the first of h = n -
    (p - 1) size examples; Python ints for a static n, else tensors."""
    if isinstance(n, int):
        pieces = max(1, -(-n // size))
    else:
        pieces = tf.maximum((n + size - 1) // size, 1)
    return pieces, n - (pieces - 1) * size


def first_micro_batch(batch, size):
    """The first piece `over_micro_batches` gives fn (its first h examples)."""
    batch = curvature._map_batch(tf.convert_to_tensor, batch)
    _, head = _pieces(curvature._num_examples(batch), size)
    return curvature._map_batch(lambda t: t[:head], batch)


def _blocks(t, size):
    """[p size, ...] -> [p, size, ...] (static inner shape where known)."""
    inner = t.shape[1:]
    if inner.is_fully_defined():
        return tf.reshape(t, [-1, size] + inner.as_list())
    return tf.reshape(t, tf.concat([[-1, size], tf.shape(t)[1:]], 0))


@tf.autograph.experimental.do_not_convert
def over_micro_batches(fn, batch, size, concatenated=()):
    """Sum `fn(piece, first)` over the micro-batches of a batch.

    Args:
        fn: maps (a piece of `batch`, first) to a nested structure of
            tensors; `first` is a Python bool, True for the first piece only
            (where terms that count once per batch go).
        batch: nested structure of tensors (or None) sharing the first axis,
            n examples.
        size: the most examples per piece, a Python int >= 1.
        concatenated: positions, in `tf.nest.flatten` of fn's output, of
            the results concatenated along their first axis in the order of
            the examples (rows of a Jacobian) instead of summed.

    The pieces are consecutive: with p = ceil(n / size), the first has the
    n - (p - 1) size examples left over (between 1 and size), the others
    exactly `size`. No example is padded or masked, and for a static n
    every shape is static. The p - 1 full pieces run in a `tf.while_loop`,
    one at a time (`parallel_iterations=1`), so only one piece's
    activations are alive. A batch of at most `size` examples is one
    piece: fn(batch, True), no loop.
    """
    batch = curvature._map_batch(tf.convert_to_tensor, batch)
    n = curvature._num_examples(batch)
    if isinstance(n, int) and n <= size:
        return fn(batch, True)
    pieces, head = _pieces(n, size)
    first = fn(curvature._map_batch(lambda t: t[:head], batch), True)
    blocks = curvature._map_batch(lambda t: _blocks(t[head:], size), batch)
    flat = [tf.convert_to_tensor(t) for t in tf.nest.flatten(first)]
    joined = sorted(set(concatenated))
    summed = [k for k in range(len(flat)) if k not in joined]

    def body(i, sums, arrays):
        piece = curvature._map_batch(lambda t: t[i], blocks)
        out = tf.nest.flatten(fn(piece, False))
        sums = [total + tf.cast(out[k], total.dtype) for total, k in zip(sums, summed)]
        arrays = [array.write(i, out[k]) for array, k in zip(arrays, joined)]
        return i + 1, sums, arrays

    arrays = [tf.TensorArray(flat[k].dtype, size=pieces - 1) for k in joined]
    _, sums, arrays = tf.while_loop(
        lambda i, sums, arrays: i < pieces - 1,
        body,
        (tf.constant(0), [flat[k] for k in summed], arrays),
        parallel_iterations=1,
    )
    results = list(flat)
    for total, k in zip(sums, summed):
        results[k] = total
    for array, k in zip(arrays, joined):
        results[k] = tf.concat([flat[k], array.concat()], 0)
    return tf.nest.pack_sequence_as(first, results)
