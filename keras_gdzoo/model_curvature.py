"""`ModelCurvature`: the Gauss-Newton matrices and Hessians of a model's
per-example losses, composed from the building blocks of
`keras_gdzoo.curvature` (see its docstring for the equations and scalings).
"""

import math

import tensorflow as tf

from keras_gdzoo.curvature import DEFAULT_MEMORY_BUDGET
from keras_gdzoo.curvature import GAUSS_NEWTON_LOSSES
from keras_gdzoo.curvature import SampleSpaceSystem
from keras_gdzoo.curvature import _ChunkTerms
from keras_gdzoo.curvature import _factor_psd
from keras_gdzoo.curvature import _map_batch
from keras_gdzoo.curvature import _masked
from keras_gdzoo.curvature import _ones_projection
from keras_gdzoo.curvature import _per_example
from keras_gdzoo.curvature import loss_derivatives
from keras_gdzoo.curvature import per_example_jacobian
from keras_gdzoo.curvature import sum_over_chunks
from keras_gdzoo.curvature import symmetrize
from keras_gdzoo.curvature import symmetrize_batch


class ModelCurvature:
    """Gauss-Newton matrices and Hessians of a model's per-example losses.

    Composed by `keras_gdzoo.objectives.ModelObjective` (and by the test
    fakes) from what it knows of the model, passed explicitly:

    Args:
        predict: `(w, x) -> y_pred`, the stateless forward pass at weights w.
        per_example_loss: `(y, y_pred, sample_weight) -> [n]` losses, sample
            weights applied.
        replica_sum: `(fn, *args) -> sum over replicas of fn(x, y,
            sample_weight, *args)` on each replica's shard.
        count: the global number of examples n.
        size, dtype: m and the dtype of the flat weight vector w.
        loss_name, from_logits: which loss that is (see `GAUSS_NEWTON_LOSSES`).
        num_replicas: replicas in sync (the sample-space form needs one).
        loss_description: how to name the loss in a refusal.
        check: optional function replacing `check_gauss_newton_loss`.
        memory_budget: bytes allowed for the per-example Jacobians (and
            Hessian intermediates) of one chunk of examples; the chunk size
            follows from it.

    Every method divides the replica sums by n, so the results are the means
    of the lecture (E = 1/n sum E_i).
    """

    def __init__(
        self,
        predict,
        per_example_loss,
        replica_sum,
        count,
        size,
        dtype,
        loss_name=None,
        from_logits=False,
        num_replicas=1,
        loss_description=None,
        check=None,
        memory_budget=DEFAULT_MEMORY_BUDGET,
    ):
        self.predict = predict
        self.per_example_loss = per_example_loss
        self.replica_sum = replica_sum
        self.count = count
        self.size = int(size)
        self.dtype = tf.as_dtype(dtype)
        self.loss_name = loss_name
        self.from_logits = bool(from_logits)
        self.num_replicas = int(num_replicas)
        self.loss_description = loss_description
        self.memory_budget = memory_budget
        self._check = check

    # -- what the solvers call ----------------------------------------------
    @tf.autograph.experimental.do_not_convert
    def gauss_newton(self, w):
        """(E, g, A): see the module docstring for E's scaling per loss."""
        self._check_gauss_newton_loss()
        value, gradient, matrix = self.replica_sum(self._local_gauss_newton, w)
        count = tf.cast(self.count, self.dtype)
        return value / count, gradient / count, symmetrize(matrix) / count

    @tf.autograph.experimental.do_not_convert
    def gauss_newton_sample_space(self, w):
        """(E, g, SampleSpaceSystem) for the current batch.

        Needs the Jacobian of the whole batch on one device, so it is only
        used with a single replica (see `prefers_sample_space`).
        """
        self._check_gauss_newton_loss()
        value, gradient, jacobian, residuals = self.replica_sum(self._local_sample_space, w)
        count = tf.cast(self.count, self.dtype)
        return value / count, gradient / count, SampleSpaceSystem(jacobian, residuals, count)

    @tf.autograph.experimental.do_not_convert
    def prefers_sample_space(self, w):
        """Whether n*K < m: a Python bool when the batch size is static, else
        a boolean tensor; always False under several replicas.

        The Gauss-Newton matrix then has rank at most n*K and the
        (n K) x (n K) system is the cheaper one to solve.
        """
        if self._num_replicas() > 1:
            return False

        def local(x, y, sample_weight, w):
            n = tf.nest.flatten(x)[0].shape[0]
            return tf.constant([-1 if n is None else n, self._num_outputs(w, x)])

        shape = self.replica_sum(local, w)
        static = tf.get_static_value(shape)
        if static is not None and static[0] >= 0:
            return int(static[0]) * int(static[1]) < self.size
        rows = tf.cast(self.count, tf.float64) * tf.cast(shape[1], tf.float64)
        return rows < float(self.size)

    @tf.autograph.experimental.do_not_convert
    def hessian(self, w):
        """(E, g, H) with the exact Hessian H of E = 1/n sum L_i."""
        value, gradient, matrix = self.replica_sum(self._local_hessian, w)
        count = tf.cast(self.count, self.dtype)
        return value / count, gradient / count, symmetrize(matrix) / count

    # -- per-replica sums ---------------------------------------------------
    def _local_gauss_newton(self, x, y, sample_weight, w):
        num_outputs = self._num_outputs(w, x)
        size = self.size
        # J, H J (or s J) and the vectorized backward passes: ~4 K m numbers
        # per example.
        chunk = self._chunk_size(4 * num_outputs * size)

        def accumulate(batch, mask):
            terms = self._chunk_terms(w, *batch, mask, num_outputs)
            jacobian = terms.jacobian
            if terms.residuals is not None:  # mean squared error: H_i = s_i I
                weighted = jacobian
                if terms.weights is not None:
                    weighted = jacobian * terms.weights[:, None, None]
            else:
                weighted = tf.matmul(terms.hessians, jacobian)
            matrix = tf.matmul(
                tf.reshape(jacobian, [-1, size]),
                tf.reshape(weighted, [-1, size]),
                transpose_a=True,
            )
            gradient = tf.einsum("ikm,ik->m", jacobian, terms.gradients)
            return tf.reduce_sum(terms.losses), gradient, matrix

        initial = (
            tf.zeros([], self.dtype),
            tf.zeros([size], self.dtype),
            tf.zeros([size, size], self.dtype),
        )
        return sum_over_chunks(accumulate, (x, y, sample_weight), chunk, initial)

    def _local_sample_space(self, x, y, sample_weight, w):
        num_outputs = self._num_outputs(w, x)
        terms = self._chunk_terms(w, x, y, sample_weight, None, num_outputs)
        if terms.residuals is not None:  # Jt_i = sqrt(s_i) J_i, u_i = sqrt(s_i) e_i
            scaled_jacobian, scaled_residuals = terms.jacobian, terms.residuals
            if terms.weights is not None:
                root = tf.sqrt(tf.maximum(terms.weights, 0.0))
                scaled_jacobian = scaled_jacobian * root[:, None, None]
                scaled_residuals = scaled_residuals * root[:, None]
        else:  # Jt_i = B_i' J_i, u_i = B_i^+ dL_i/dy_pred_i
            factor, pinv_factor = _factor_psd(terms.hessians)
            scaled_jacobian = tf.matmul(factor, terms.jacobian, transpose_a=True)
            scaled_residuals = tf.linalg.matvec(pinv_factor, terms.gradients)
        return (
            tf.reduce_sum(terms.losses),
            tf.einsum("ikm,ik->m", terms.jacobian, terms.gradients),
            tf.reshape(scaled_jacobian, [-1, self.size]),
            tf.reshape(scaled_residuals, [-1]),
        )

    def _chunk_terms(self, w, x, y, sample_weight, mask, num_outputs):
        """Per-example Jacobians and loss derivatives for one chunk."""
        y_pred, jacobian = per_example_jacobian(self.predict, w, x)
        y_pred = tf.cast(y_pred, self.dtype)
        jacobian = _masked(tf.cast(jacobian, self.dtype), mask)
        n = tf.shape(y_pred)[0]
        if self.loss_name == "mean_squared_error":
            targets = tf.reshape(tf.cast(y, self.dtype), [n, num_outputs])
            residuals = _masked(tf.reshape(y_pred, [n, num_outputs]) - targets, mask)
            squares = tf.reduce_sum(residuals * residuals, axis=1)
            if sample_weight is None:  # s_i = 1, padding already zeroed
                return _ChunkTerms(jacobian, residuals, 0.5 * squares, residuals=residuals)
            # The per-example loss of a unit residual is the sample weight s_i.
            unit_loss = self.per_example_loss(
                tf.zeros_like(y_pred), tf.ones_like(y_pred), sample_weight
            )
            weights = _masked(_per_example(tf.cast(unit_loss, self.dtype)), mask)
            return _ChunkTerms(
                jacobian,
                weights[:, None] * residuals,
                0.5 * weights * squares,
                weights=weights,
                residuals=residuals,
            )

        def loss_fn(prediction):
            losses = self.per_example_loss(y, prediction, sample_weight)
            return _masked(_per_example(tf.cast(losses, self.dtype)), mask)

        losses, gradients, hessians = loss_derivatives(loss_fn, y_pred, num_outputs)
        if not self.from_logits and self.loss_name in (
            "categorical_crossentropy",
            "sparse_categorical_crossentropy",
        ):
            # Softmax outputs sum to one, so their Jacobian rows sum to zero
            # and the all-ones direction of H and of dL/dy_pred never counts.
            hessians = _ones_projection(hessians)
            gradients = gradients - tf.reduce_mean(gradients, axis=-1, keepdims=True)
        return _ChunkTerms(
            jacobian=jacobian,
            gradients=gradients,
            losses=losses,
            hessians=symmetrize_batch(hessians),
        )

    def _local_hessian(self, x, y, sample_weight, w):
        size = self.size
        num_outputs = self._num_outputs(w, x)
        # The Hessian's vectorized second backward pass holds about m copies
        # of a chunk's activations; K + 64 numbers per example is a guess of
        # their size.
        chunk = self._chunk_size(size * (num_outputs + 64))

        def accumulate(batch, mask):
            x_c, y_c, sw_c = batch
            w_local = tf.identity(w)
            with tf.GradientTape() as outer:
                outer.watch(w_local)
                with tf.GradientTape() as inner:
                    inner.watch(w_local)
                    y_pred = tf.cast(self.predict(w_local, x_c), self.dtype)
                    losses = _per_example(
                        tf.cast(self.per_example_loss(y_c, y_pred, sw_c), self.dtype)
                    )
                    total = tf.reduce_sum(_masked(losses, mask))
                gradient = inner.gradient(total, w_local)
            matrix = outer.jacobian(gradient, w_local, experimental_use_pfor=True)
            return total, gradient, matrix

        zero = tf.zeros([], self.dtype)
        initial = (zero, tf.zeros([size], self.dtype), tf.zeros([size, size], self.dtype))
        return sum_over_chunks(accumulate, (x, y, sample_weight), chunk, initial)

    # -- helpers --------------------------------------------------------------
    def _num_outputs(self, w, x):
        one = _map_batch(lambda t: t[:1], x)
        y_pred = self.predict(w, one)
        if not isinstance(y_pred, tf.Tensor) and not hasattr(y_pred, "shape"):
            raise ValueError(
                "Gauss-Newton and Hessian computations support models with one "
                f"output tensor. Received an output of type {type(y_pred).__name__}."
            )
        shape = y_pred.shape[1:]
        if not shape.is_fully_defined():
            raise ValueError(
                "Gauss-Newton and Hessian computations need a model output of "
                f"known size per example. Received output shape {y_pred.shape}."
            )
        return max(1, int(math.prod(shape)))

    def _chunk_size(self, numbers_per_example):
        itemsize = tf.as_dtype(self.dtype).size
        return max(1, int(self.memory_budget // (numbers_per_example * itemsize)))

    def _num_replicas(self):
        return self.num_replicas

    def _check_gauss_newton_loss(self):
        if self._check is not None:
            return self._check()
        return self.check_gauss_newton_loss()

    def check_gauss_newton_loss(self):
        """Refuse, by name, a loss without a PSD Gauss-Newton form."""
        check_gauss_newton_loss(self.loss_name, self.loss_description)


def check_gauss_newton_loss(loss_name, description=None):
    """Refuse, by name, a loss without a PSD (generalized) Gauss-Newton form."""
    if loss_name not in GAUSS_NEWTON_LOSSES:
        raise ValueError(
            "The Gauss-Newton matrix (Levenberg-Marquardt) is available for "
            "the losses " + ", ".join(f'"{name}"' for name in GAUSS_NEWTON_LOSSES)
            + "; for other losses it need not be positive semi-definite. "
            "Use Newton or a first-order method. "
            f"Received: loss={loss_name or description}"
        )
