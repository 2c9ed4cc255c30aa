"""Matrix-free curvature: Gauss-Newton- and Hessian-vector products, and CG.

Hessian-free optimization (Martens, 2010) never forms an m x m matrix. It
solves the damped system (C + mu I) delta = g of Newton's method (C = H)
or Levenberg-Marquardt (C = A, the Gauss-Newton matrix) by conjugate
gradients, which only need products C v:

* Gauss-Newton-vector products (Schraudolph, 2002),

      A v = 1/n sum_i J_i' H_i (J_i v),

  in three passes over the batch and no Jacobian: a forward-mode JVP
  (`tf.autodiff.ForwardAccumulator`) gives u_i = J_i v for the whole batch,
  the loss's output Hessian multiplies it, u_i <- H_i u_i, and one
  reverse-mode VJP gives sum_i J_i' u_i. H_i is `keras_gdzoo.curvature`'s:
  s_i I for the mean squared error (the lecture's scaling, s_i the sample
  weight), otherwise the Hessian of the compiled per-example loss with
  respect to the model output, applied by a Hessian-vector product of the
  loss alone (automatic differentiation, so sample weights, label smoothing
  and clipping count as Keras applies them), with the same projection on
  the complement of the all-ones vector for categorical cross-entropies on
  probabilities. The results equal `objective.gauss_newton(w)`'s A times v.
* Hessian-vector products H v of E = 1/n sum L_i (forward-over-reverse:
  the JVP of the gradient), equal to `objective.hessian(w)`'s H times v.

Several compiled losses (one per output of a multi-output model, with
`loss_weights`) use the autodiff H_i of their weighted sum over the
concatenated outputs, as the dense matrix does. Residual objectives
(`gz.wrap(model, residuals=fn)`, with `residual_entries(x, y, w)`) stack
their entries into one vector r = [sqrt(lambda_e / n_e) r_e]_e, so that
E = 1/2 r'r + P and A v = J'(J v), J the Jacobian of r: the same three
passes (JVP, VJP) over the residual function.

Memory is O(m) plus the batch's activations (about twice them: the forward
pass is recorded for the VJP with its tangents).

diag(A) (for preconditioning, Marquardt's scaling and gtol) is exact from
per-example Jacobians (`gauss_newton_diagonal`, K backward passes per
example), or estimated by back-propagating random output vectors
(`sampled_gauss_newton_diagonal`, Chapelle & Erhan 2011: p backward
passes, a relative spread of at most sqrt(2/p) per weight) or by
Hutchinson's probes in weight space (`gauss_newton_diagonal(probes=p)`).

The products take an objective with `keras_gdzoo.curvature`'s attribute
contract (`predict`, `per_example_loss`, `loss_name`, `from_logits`,
`replica_sum`, `count`, `size`, `dtype`), sum over replicas with
`objective.replica_sum` and divide by `objective.count`. An objective
without `predict` (a `FunctionObjective`) gets its Hessian-vector products
from `objective.hessian_vector_product`.

Penalties. An objective that says `has_penalty()` and gives its
penalties P(w) (`model.losses`) with `forward(w, x) -> (y_pred, P)`, as
`keras_gdzoo.objectives.ModelObjective` does, gets them in the products as
in its dense matrices: for the Gauss-Newton system g + c dP/dw and
A + c d2P/dw2 (c = K/2 for the mean squared error, the lecture's scaling,
else 1); the Hessian products differentiate the objective's whole E when
it offers `local_value(x, y, sample_weight, w)` (this replica's share of E).

References:
    Martens, J. (2010). Deep learning via Hessian-free optimization. ICML.
    Schraudolph, N. N. (2002). Fast curvature matrix-vector products for
    second-order gradient descent. Neural Computation 14(7).
    Chapelle, O. & Erhan, D. (2011). Improved preconditioner for Hessian
    free optimization. NIPS Workshop on Deep Learning and Unsupervised
    Feature Learning.
    Nocedal, J. & Wright, S. J. (2006). Numerical Optimization, 2nd ed.,
    Algorithm 5.3 (preconditioned CG), p. 119; Algorithm 7.1 (line-search
    Newton-CG), p. 169.
"""

import contextlib

import numpy as np
import tensorflow as tf

from keras_gdzoo.krylov import _as_tensor
from keras_gdzoo.krylov import conjugate_gradient  # noqa: F401 (part of this API)

from keras_gdzoo import curvature

_CATEGORICAL = ("categorical_crossentropy", "sparse_categorical_crossentropy")


# ---------------------------------------------------------------------------
# Products (functions of an objective)
# ---------------------------------------------------------------------------


def has_products(objective):
    """Whether `objective` offers the attribute contract the products need."""
    return all(
        hasattr(objective, name)
        for name in ("predict", "per_example_loss", "replica_sum", "count", "loss_name")
    )


def has_gauss_newton_products(objective):
    """Whether the Gauss-Newton products cover `objective`'s form: one
    compiled loss, one loss per output of a multi-output model, or
    residuals (a loss without a Gauss-Newton form is still refused by name
    when a product is asked for)."""
    if not has_products(objective):
        return False
    return (
        objective.loss_name is not None
        or _is_residual(objective)
        or _several_losses(objective)
    )


def _is_residual(objective):
    """A residual objective, giving its entries by `residual_entries`."""
    return getattr(objective, "kind", None) == "residuals" and hasattr(
        objective, "residual_entries"
    )


def _several_losses(objective):
    """Compiled losses per output of a multi-output model (no single name)."""
    return (
        objective.loss_name is None
        and getattr(objective, "kind", "compiled") == "compiled"
        and bool(getattr(objective, "multi_output", False))
    )


def _residual_vector(objective, x, y, w, rows):
    """(r, P): this replica's stacked residuals r = [sqrt(lambda_e / n_e)
    r_e]_e (E = 1/2 r'r + P over replicas, n_e the global rows of entry e)
    and its penalty P (None without)."""
    entries, weights, penalty = objective.residual_entries(x, y, w)
    scaled = [
        tf.reshape(entry, [-1]) * tf.sqrt(tf.cast(weight, rows.dtype) / rows[index])
        for index, (entry, weight) in enumerate(zip(entries, weights))
    ]
    return tf.concat(scaled, 0), penalty


@tf.autograph.experimental.do_not_convert
def gauss_newton_gradient(objective, w):
    """(E, g) in the scaling of `objective.gauss_newton` (one forward and one
    backward pass): for the mean squared error E = 1/(2n) sum s_i e_i'e_i
    and g = 1/n sum s_i J_i'e_i, otherwise E = 1/n sum L_i and its gradient."""
    _check_gauss_newton_loss(objective)
    if _is_residual(objective):
        return _residual_gradient(objective, w)

    def local(x, y, sample_weight, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            y_pred = objective.predict(w, x)
        outputs = _detached(y_pred, objective.dtype)
        value, q = _output_gradient(objective, y, outputs, sample_weight)
        gradient = tape.gradient(y_pred, w, output_gradients=tf.cast(q, y_pred.dtype))
        count = tf.cast(objective.count, objective.dtype)
        value, gradient = value / count, tf.cast(gradient, objective.dtype) / count
        if penalized:
            scale = _penalty_scale(objective, outputs)
            penalty, slope, _ = _penalty_terms(objective, x, w)
            value, gradient = value + scale * penalty, gradient + scale * slope
        return value, gradient

    penalized = _has_penalty(objective)
    return objective.replica_sum(local, w)


@tf.autograph.experimental.do_not_convert
def gauss_newton_product(objective, w, v):
    """A v = 1/n sum_i J_i' H_i J_i v, without forming J or A."""
    _check_gauss_newton_loss(objective)
    v = tf.cast(v, w.dtype)
    if _is_residual(objective):
        return _residual_product(objective, w, v)

    def local(x, y, sample_weight, w, v):
        with tf.GradientTape() as tape:
            tape.watch(w)
            with tf.autodiff.ForwardAccumulator(w, v) as accumulator:
                y_pred = objective.predict(w, x)
        jv = accumulator.jvp(y_pred, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        outputs = _detached(y_pred, objective.dtype)
        jv = tf.cast(jv, outputs.dtype)
        u = _output_hessian_product(objective, y, outputs, sample_weight, jv)
        product = tape.gradient(y_pred, w, output_gradients=tf.cast(u, y_pred.dtype))
        product = tf.cast(product, objective.dtype) / tf.cast(objective.count, objective.dtype)
        if penalized:
            _, _, curvature_v = _penalty_terms(objective, x, w, v)
            product = product + _penalty_scale(objective, outputs) * curvature_v
        return product

    penalized = _has_penalty(objective)
    return objective.replica_sum(local, w, v)


def _residual_gradient(objective, w):
    """(E, g) of a residual objective: E = 1/2 r'r + P, g = J'r + dP/dw."""
    rows = objective.residual_rows(w)
    share = 1.0 / _replicas(objective)

    def local(x, y, sample_weight, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            r, penalty = _residual_vector(objective, x, y, w, rows)
            value = 0.5 * tf.reduce_sum(r * r)
            if penalty is not None:
                value = value + share * tf.cast(penalty, value.dtype)
        gradient = tape.gradient(value, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.cast(value, objective.dtype), tf.cast(gradient, objective.dtype)

    return objective.replica_sum(local, w)


def _residual_product(objective, w, v):
    """A v = J'(J v) + d2P/dw2 v for a residual objective, in one pass: the
    JVP of r and of dP/dw, then the VJP of r."""
    rows = objective.residual_rows(w)
    share = 1.0 / _replicas(objective)
    zero = tf.UnconnectedGradients.ZERO

    def local(x, y, sample_weight, w, v):
        with tf.GradientTape() as tape:
            tape.watch(w)
            with tf.autodiff.ForwardAccumulator(w, v) as accumulator:
                with tf.GradientTape() as penalty_tape:
                    penalty_tape.watch(w)
                    r, penalty = _residual_vector(objective, x, y, w, rows)
                slope = None
                if penalty is not None:
                    slope = penalty_tape.gradient(penalty, w, unconnected_gradients=zero)
        jv = accumulator.jvp(r, unconnected_gradients=zero)
        product = tape.gradient(r, w, output_gradients=jv, unconnected_gradients=zero)
        product = tf.cast(product, objective.dtype)
        if slope is not None:
            curvature_v = accumulator.jvp(slope, unconnected_gradients=zero)
            product = product + share * tf.cast(curvature_v, objective.dtype)
        return product

    return objective.replica_sum(local, w, v)


def _residual_diagonal(objective, w):
    """diag(A) of a residual objective: the column sums of J * J, J the
    whole replica's [rows, m] Jacobian of r (as the dense matrix needs it),
    and c * d2P/dw2 1 for the penalty (see `gauss_newton_diagonal`)."""
    rows = objective.residual_rows(w)

    def local(x, y, sample_weight, w):
        w_local = tf.identity(w)
        with tf.GradientTape() as tape:
            tape.watch(w_local)
            r, _ = _residual_vector(objective, x, y, w_local, rows)
        jacobian = tape.jacobian(
            r, w_local, experimental_use_pfor=True, unconnected_gradients="zero"
        )
        diagonal = tf.reduce_sum(tf.cast(jacobian, w.dtype) ** 2, axis=0)
        _, _, product = _penalty_terms(objective, x, w, tf.ones_like(w), y)
        return diagonal + product

    return objective.replica_sum(local, w)


@tf.autograph.experimental.do_not_convert
def value_and_gradient(objective, w):
    """(E, g) of the E `hessian_product` differentiates (`objective.hessian`'s
    E and g)."""
    if not has_products(objective) or hasattr(objective, "local_value"):
        value, gradient = objective.value_and_gradient(w)
        return tf.cast(value, w.dtype), tf.cast(gradient, w.dtype)

    def local(x, y, sample_weight, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            total = _total_loss(objective, w, x, y, sample_weight)
        return total, tf.cast(tape.gradient(total, w), objective.dtype)

    value, gradient = objective.replica_sum(local, w)
    count = tf.cast(objective.count, objective.dtype)
    return value / count, gradient / count


@tf.autograph.experimental.do_not_convert
def hessian_product(objective, w, v):
    """H v with H the Hessian of E (forward-over-reverse: the JVP of the
    gradient). E is the objective's whole E(w) when it offers
    `local_value(x, y, sample_weight, w)` (this replica's share of E, with
    penalties), else E = 1/n sum L_i; an objective without `predict` uses
    its own `hessian_vector_product`."""
    v = tf.cast(v, w.dtype)
    if not has_products(objective):
        return tf.cast(objective.hessian_vector_product(w, v), w.dtype)
    whole = hasattr(objective, "local_value")

    def local(x, y, sample_weight, w, v):
        with tf.autodiff.ForwardAccumulator(w, v) as accumulator:
            with tf.GradientTape() as tape:
                tape.watch(w)
                if whole:
                    total = tf.cast(objective.local_value(x, y, sample_weight, w)[0], w.dtype)
                else:
                    total = _total_loss(objective, w, x, y, sample_weight)
            gradient = tape.gradient(total, w, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        product = accumulator.jvp(gradient, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return tf.cast(product, objective.dtype)

    product = objective.replica_sum(local, w, v)
    if whole:
        return product
    return product / tf.cast(objective.count, objective.dtype)


def _has_penalty(objective):
    """Whether the objective adds penalties (`model.losses`) to its curvature:
    it says so with `has_penalty()` and gives them with `forward(w, x)`."""
    check = getattr(objective, "has_penalty", None)
    return check is not None and hasattr(objective, "forward") and bool(check())


def _penalty_scale(objective, outputs):
    """The penalty in the units of the Gauss-Newton value: the lecture's
    E = 1/(2n) sum e'e is K/2 times Keras's mean squared error."""
    if objective.loss_name == "mean_squared_error":
        return 0.5 * max(1, int(np.prod(outputs.shape[1:])))
    return 1.0


def _replicas(objective):
    strategy = getattr(objective, "strategy", None) or tf.distribute.get_strategy()
    return float(strategy.num_replicas_in_sync)


def _penalty_terms(objective, x, w, v=None, y=None):
    """This replica's share of (P, dP/dw, d2P/dw2 v) (the product None
    without v); zeros when the model has no penalty after all. A residual
    objective's P is the one its residual function leaves (y: the targets
    it is given)."""
    if not getattr(objective, "in_first_micro_batch", True):
        # A later micro-batch (`micro_batch_size`): P counts once, on the first.
        nothing = tf.zeros_like(w)
        return tf.zeros([], w.dtype), nothing, None if v is None else nothing
    zero = tf.UnconnectedGradients.ZERO
    forward_mode = tf.autodiff.ForwardAccumulator(w, v) if v is not None else None
    with forward_mode or contextlib.nullcontext():
        with tf.GradientTape() as tape:
            tape.watch(w)
            if _is_residual(objective):
                _, _, penalty = objective.residual_entries(x, y, w)
            else:
                _, penalty = objective.forward(w, x)
            penalty = tf.zeros([], w.dtype) if penalty is None else tf.cast(penalty, w.dtype)
        gradient = tape.gradient(penalty, w, unconnected_gradients=zero)
    share = 1.0 / _replicas(objective)
    product = None
    if forward_mode is not None:
        product = share * tf.cast(forward_mode.jvp(gradient, unconnected_gradients=zero), w.dtype)
    return share * penalty, share * tf.cast(gradient, w.dtype), product


def _check_gauss_newton_loss(objective):
    if _is_residual(objective):  # a least-squares form by construction
        return
    check = getattr(objective, "_check_gauss_newton_loss", None)
    if check is not None:  # the objective's own refusal message
        check()
    if _several_losses(objective):  # each output's loss checked just above
        return
    if objective.loss_name is None:
        raise ValueError(
            "Matrix-free Gauss-Newton products need compiled losses with a "
            "Gauss-Newton form or residuals (`keras_gdzoo.wrap(model, "
            "residuals=fn)`). Received: an objective without either"
        )
    if objective.loss_name not in curvature.GAUSS_NEWTON_LOSSES:
        raise ValueError(
            "Gauss-Newton-vector products are available for the losses "
            + ", ".join(f'"{name}"' for name in curvature.GAUSS_NEWTON_LOSSES)
            + f". Received: loss={objective.loss_name}"
        )


def _total_loss(objective, w, x, y, sample_weight):
    y_pred = tf.cast(objective.predict(w, x), objective.dtype)
    return tf.reduce_sum(_loss_of_outputs(objective, y, y_pred, sample_weight))


def _detached(y_pred, dtype):
    """The model output as a new tensor: a plain function of it from here on
    (Keras's cross-entropies read the logits a softmax output carries,
    bypassing the output itself), as `keras_gdzoo.curvature` takes it."""
    return tf.identity(tf.cast(tf.stop_gradient(y_pred), dtype))


def _flat(outputs):
    return tf.reshape(outputs, [tf.shape(outputs)[0], -1])


def _mse_weights(objective, outputs, sample_weight):
    """s_i: the per-example loss of a unit residual (None without weights)."""
    if sample_weight is None:
        return None
    unit = objective.per_example_loss(tf.zeros_like(outputs), tf.ones_like(outputs), sample_weight)
    return _per_example(tf.cast(unit, objective.dtype))


def _output_gradient(objective, y, outputs, sample_weight):
    """(sum of the losses, q) with g = sum_i J_i' q_i, q shaped like outputs."""
    if objective.loss_name == "mean_squared_error":
        residuals = outputs - tf.reshape(tf.cast(y, objective.dtype), tf.shape(outputs))
        squares = tf.reduce_sum(_flat(residuals * residuals), axis=1)
        weights = _mse_weights(objective, outputs, sample_weight)
        if weights is None:
            return 0.5 * tf.reduce_sum(squares), residuals
        shaped = tf.reshape(weights, [-1] + [1] * (len(outputs.shape) - 1))
        return 0.5 * tf.reduce_sum(weights * squares), shaped * residuals
    with tf.GradientTape() as tape:
        tape.watch(outputs)
        total = tf.reduce_sum(_loss_of_outputs(objective, y, outputs, sample_weight))
    q = tape.gradient(total, outputs)
    if _projects(objective):
        q = _center(q)
    return total, q


def _output_hessian_product(objective, y, outputs, sample_weight, u):
    """H_i u_i for every example (u shaped like outputs)."""
    if objective.loss_name == "mean_squared_error":
        weights = _mse_weights(objective, outputs, sample_weight)
        if weights is None:
            return u
        return tf.reshape(weights, [-1] + [1] * (len(outputs.shape) - 1)) * u
    projects = _projects(objective)
    if projects:
        u = _center(u)
    # Loss i depends on output i only, so the Hessian of the summed loss is
    # block diagonal and one Hessian-vector product gives every H_i u_i.
    with tf.GradientTape() as outer:
        outer.watch(outputs)
        with tf.GradientTape() as inner:
            inner.watch(outputs)
            total = tf.reduce_sum(_loss_of_outputs(objective, y, outputs, sample_weight))
        q = inner.gradient(total, outputs)
        projected = tf.reduce_sum(q * tf.stop_gradient(u))
    product = outer.gradient(projected, outputs)
    if projects:
        product = _center(product)
    return product


def _loss_of_outputs(objective, y, outputs, sample_weight):
    losses = objective.per_example_loss(y, outputs, sample_weight)
    return _per_example(tf.cast(losses, objective.dtype))


def _projects(objective):
    # Softmax outputs sum to one: the all-ones direction never counts (see
    # `keras_gdzoo.curvature`).
    return (not objective.from_logits) and objective.loss_name in _CATEGORICAL


def _center(values, axis=-1):
    """(I - 11'/K) u for every example, K the given axis."""
    return values - tf.reduce_mean(values, axis=axis, keepdims=True)


def _per_example(values):
    if len(values.shape) > 1:
        values = tf.reduce_mean(values, axis=list(range(1, len(values.shape))))
    return values


# ---------------------------------------------------------------------------
# Conjugate gradients (pure functions of tensors)
# ---------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert
def gauss_newton_diagonal(
    objective, w, memory_budget=curvature.DEFAULT_MEMORY_BUDGET, probes=None
):
    """diag(A), A = 1/n sum_i J_i' H_i J_i.

    With `probes` (an int), Hutchinson's estimate 1/p sum_k v_k * (A v_k)
    over p fixed Rademacher vectors v_k, clamped at 0: p products, unbiased
    but noisy (Bekas, Kokiopoulou & Saad, 2007). Otherwise exact,
    from per-example Jacobians
    (`curvature.per_example_jacobian`, K backward passes per example) over
    chunks of examples whose Jacobians fit in `memory_budget` bytes: memory
    O(chunk K m), never m x m, but K times the cost of a gradient per
    example. Penalties add c * d2P/dw2 1, their Hessian's diagonal when it
    is diagonal (L1 and L2 penalties; an approximation otherwise)."""
    _check_gauss_newton_loss(objective)
    size = int(w.shape[0])
    if probes is None and _is_residual(objective):
        return _residual_diagonal(objective, w)
    if probes is not None:
        total = tf.zeros([size], w.dtype)
        for k in range(int(probes)):
            seed = tf.constant([3, k], tf.int32)
            signs = tf.random.stateless_uniform([size], seed, 0, 2, dtype=tf.int32)
            v = tf.cast(2 * signs - 1, w.dtype)
            total = total + v * gauss_newton_product(objective, w, v)
        return tf.maximum(total / float(probes), 0.0)

    def local(x, y, sample_weight, w):
        one = tf.nest.map_structure(lambda t: t[:1], x)
        outputs = max(1, int(np.prod(objective.predict(w, one).shape[1:])))
        chunk = max(1, int(memory_budget // (3 * outputs * size * tf.as_dtype(w.dtype).size)))

        def accumulate(batch, mask):
            x_c, y_c, s_c = batch
            y_pred, jacobian = curvature.per_example_jacobian(objective.predict, w, x_c)
            y_pred = tf.cast(y_pred, w.dtype)
            jacobian = tf.cast(jacobian, w.dtype)  # [c, K, m]
            if mask is not None:
                jacobian = tf.where(mask[:, None, None], jacobian, tf.zeros_like(jacobian))
            if objective.loss_name == "mean_squared_error":
                weights = _mse_weights(objective, y_pred, s_c)
                squares = tf.reduce_sum(jacobian * jacobian, axis=1)
                if weights is None:
                    return tf.reduce_sum(squares, axis=0)
                return tf.reduce_sum(weights[:, None] * squares, axis=0)

            def loss_fn(prediction):
                return _loss_of_outputs(objective, y_c, prediction, s_c)

            _, _, hessians = curvature.loss_derivatives(loss_fn, y_pred, outputs)
            if _projects(objective):
                hessians = _center(_center(hessians), axis=-2)
            weighted = tf.matmul(curvature.symmetrize_batch(hessians), jacobian)
            return tf.reduce_sum(jacobian * weighted, axis=[0, 1])

        diagonal = curvature.sum_over_chunks(
            accumulate, (x, y, sample_weight), chunk, tf.zeros([size], w.dtype)
        )
        diagonal = diagonal / tf.cast(objective.count, w.dtype)
        if penalized:
            _, _, product = _penalty_terms(objective, x, w, tf.ones_like(w))
            diagonal = diagonal + _penalty_scale(objective, tf.zeros([1, outputs])) * product
        return diagonal

    penalized = _has_penalty(objective)
    return objective.replica_sum(local, w)


@tf.autograph.experimental.do_not_convert
def sampled_gauss_newton_diagonal(objective, w, samples=8):
    """diag(A), A = 1/n sum_i J_i' H_i J_i, estimated from `samples`
    back-propagated random output vectors (Chapelle & Erhan, 2011).

    With B_i B_i' = H_i and z_i Rademacher vectors of the outputs' size,
    one VJP of the whole batch gives s = sum_i J_i' B_i z_i, and

        E[s * s] = sum_i diag(J_i' H_i J_i) = n diag(A)

    (element-wise; the z_i of different examples are independent, so no
    cross terms remain). The estimate 1/(n p) sum_k s_k * s_k over p =
    `samples` fixed draws is unbiased and never negative, with a relative
    standard deviation of at most sqrt(2 / p) for every weight whatever the
    coupling between weights; Hutchinson's v * (A v) in weight space
    (`gauss_newton_diagonal(probes=...)`) has the off-diagonal entries of A
    in its variance (a relative error of 2.7 with 4 probes on a 280k-weight
    CNN). Cost: one forward pass and p backward passes, no JVP; H_i and its
    factor are K x K per example (`keras_gdzoo.curvature`'s, projected as
    there), so memory is O(n K^2) besides O(m). A residual objective has
    H = I on its stacked residuals. Penalties add c * d2P/dw2 1 as in
    `gauss_newton_diagonal`."""
    _check_gauss_newton_loss(objective)
    samples = int(samples)
    residual = _is_residual(objective)
    rows = objective.residual_rows(w) if residual else None

    def draw(shape, k):
        seed = tf.constant([5, k], tf.int32)
        signs = tf.random.stateless_uniform(shape, seed, 0, 2, dtype=tf.int32)
        return tf.cast(2 * signs - 1, w.dtype)

    def local(x, y, sample_weight, w):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(w)
            if residual:
                y_pred, _ = _residual_vector(objective, x, y, w, rows)
            else:
                y_pred = objective.predict(w, x)
        if residual:
            factor = None
            flat_shape = tf.shape(y_pred)[:1]
        else:
            outputs = _detached(y_pred, w.dtype)
            factor = _output_factor(objective, y, outputs, sample_weight)
            flat_shape = tf.shape(_flat(outputs))
        total = tf.zeros([int(w.shape[0])], w.dtype)
        for k in range(samples):
            z = draw(flat_shape, k)
            if factor is not None:
                z = factor(z)
            u = tf.cast(tf.reshape(z, tf.shape(y_pred)), y_pred.dtype)
            s = tape.gradient(
                y_pred, w, output_gradients=u, unconnected_gradients=tf.UnconnectedGradients.ZERO
            )
            s = tf.cast(s, w.dtype)
            total = total + s * s
        del tape
        count = 1.0 if residual else tf.cast(objective.count, w.dtype)
        diagonal = total / (float(samples) * count)
        if penalized:
            _, _, product = _penalty_terms(objective, x, w, tf.ones_like(w), y)
            scale = 1.0 if residual else _penalty_scale(objective, outputs)
            diagonal = diagonal + scale * product
        return diagonal

    penalized = _has_penalty(objective)
    return objective.replica_sum(local, w)


def _output_factor(objective, y, outputs, sample_weight):
    """z -> B_i z_i for every example ([n, K] to [n, K]), B_i B_i' = H_i."""
    if objective.loss_name == "mean_squared_error":
        weights = _mse_weights(objective, outputs, sample_weight)
        if weights is None:
            return lambda z: z
        root = tf.sqrt(tf.maximum(weights, 0.0))[:, None]
        return lambda z: root * z
    size = max(1, int(np.prod(outputs.shape[1:])))

    def loss_fn(prediction):
        return _loss_of_outputs(objective, y, prediction, sample_weight)

    _, _, hessians = curvature.loss_derivatives(loss_fn, outputs, size)
    if _projects(objective):
        hessians = _center(_center(hessians), axis=-2)
    factor, _ = curvature._factor_psd(curvature.symmetrize_batch(hessians))
    return lambda z: tf.linalg.matvec(factor, z)


@tf.autograph.experimental.do_not_convert
def squared_gradient_diagonal(objective, w, memory_budget=curvature.DEFAULT_MEMORY_BUDGET):
    """1/n sum_i g_i * g_i (element-wise), g_i the gradient of example i's
    loss in `gauss_newton_gradient`'s scaling: the diagonal of the empirical
    Fisher matrix, Martens' (2010) preconditioner. Per-example gradients in
    a `tf.vectorized_map`, over chunks of examples whose gradients fit in
    `memory_budget` bytes (one backward pass per example)."""
    _check_gauss_newton_loss(objective)
    size = int(w.shape[0])
    chunk = max(1, int(memory_budget // (4 * size * tf.as_dtype(w.dtype).size)))

    def example_loss(w_local, x_i, y_i, s_i):
        one = lambda t: None if t is None else t[None]  # noqa: E731
        y_pred = tf.cast(objective.predict(w_local, tf.nest.map_structure(one, x_i)), w.dtype)
        if objective.loss_name == "mean_squared_error":
            e = y_pred - tf.reshape(tf.cast(y_i, w.dtype), tf.shape(y_pred))
            weight = 1.0 if s_i is None else _mse_weights(objective, y_pred, one(s_i))[0]
            return 0.5 * weight * tf.reduce_sum(e * e)
        losses = objective.per_example_loss(one(y_i), y_pred, one(s_i))
        return tf.reduce_sum(_per_example(tf.cast(losses, w.dtype)))

    def local(x, y, sample_weight, w):
        def accumulate(batch, mask):
            x_c, y_c, s_c = batch

            def gradient_of(example):
                x_i, y_i, s_i = example
                w_local = tf.identity(w)
                with tf.GradientTape() as tape:
                    tape.watch(w_local)
                    loss = example_loss(w_local, x_i, y_i, s_i)
                return tape.gradient(loss, w_local, unconnected_gradients="zero")

            if s_c is None:
                gradients = tf.vectorized_map(
                    lambda example: gradient_of((example[0], example[1], None)), (x_c, y_c)
                )
            else:
                gradients = tf.vectorized_map(gradient_of, (x_c, y_c, s_c))
            if mask is not None:
                gradients = tf.where(mask[:, None], gradients, tf.zeros_like(gradients))
            return tf.reduce_sum(gradients * gradients, axis=0)

        return curvature.sum_over_chunks(
            accumulate, (x, y, sample_weight), chunk, tf.zeros([size], w.dtype)
        )

    total = objective.replica_sum(local, w)
    return total / tf.cast(objective.count, w.dtype)


def diagonal_preconditioner(diagonal, damping, exponent=0.75):
    """r -> r / (diagonal + damping)^exponent, Martens' (2010, Section 4.7)
    Jacobi-style preconditioner (he takes the diagonal of the empirical
    Fisher matrix, the mean of squared per-example gradients, and 3/4)."""
    scale = tf.pow(diagonal + _as_tensor(damping, diagonal.dtype), exponent)
    return lambda r: r / scale


# ---------------------------------------------------------------------------
# The damped system, as `curvature.DenseSystem` offers it
# ---------------------------------------------------------------------------


class MatrixFreeSystem:
    """The damped system (C + mu I) delta = g, solved by CG on products C v.

    A drop-in for `keras_gdzoo.curvature.DenseSystem`: `solve(damping)` ->
    `(delta, ok)`, and `trace`, besides `solve_from(damping, x0)` for warm
    starts and the CG iteration count.

    Args:
        objective: the objective (see the module docstring).
        w: the weights, [m].
        curvature: `"gauss_newton"` (C = A, Levenberg-Marquardt) or
            `"hessian"` (C = H, Newton).
        tolerance: CG's relative residual ||r|| / ||g|| at which to stop.
        max_iterations: CG's most products per solve.
        preconditioner: None, or a function `damping -> (r -> M^-1 r)`
            (for example `lambda mu: diagonal_preconditioner(d, mu)`).
        value, gradient: E and g at w when the caller has them already
            (`gauss_newton_gradient`'s or `value_and_gradient`'s); None:
            computed here (one forward and backward pass).
        scale: None, or s ([m], positive) for the scaled system in
            u = S delta, S = diag(s): (S^-1 C S^-1 + mu I) u = S^-1 g
            (Levenberg-Marquardt's `scaled` damping, as
            `curvature.DenseSystem` of the scaled matrix); `solve` then
            returns u = S delta.
        diagonal: None, or diag(C) (exact or estimated) when the caller
            has it: `trace` is then its sum (over s^2 with `scale`), no
            product.

    Attributes:
        value, gradient: E and g at w (`objective.gauss_newton`'s or
            `objective.hessian`'s, to match the dense systems).
        trace: an estimate of trace(C), the scale of C: the sum of
            `diagonal`, else Hutchinson's v'Cv with one fixed Rademacher
            vector v (unbiased; never negative for a positive semi-definite
            C; one more product, computed on each access).
    """

    def __init__(
        self,
        objective,
        w,
        curvature="gauss_newton",
        tolerance=1e-4,
        max_iterations=100,
        preconditioner=None,
        value=None,
        gradient=None,
        scale=None,
        diagonal=None,
    ):
        if curvature not in ("gauss_newton", "hessian"):
            raise ValueError(
                "Argument `curvature` must be one of 'gauss_newton', 'hessian'. "
                f"Received: curvature={curvature!r}"
            )
        self.objective = objective
        self.w = w
        self.curvature = curvature
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.preconditioner = preconditioner
        if gradient is not None:
            self.value, self.gradient = value, gradient
        elif curvature == "gauss_newton":
            self.value, self.gradient = gauss_newton_gradient(objective, w)
        else:
            self.value, self.gradient = value_and_gradient(objective, w)
        self.gradient = tf.cast(self.gradient, w.dtype)
        self.scale = None if scale is None else tf.cast(scale, w.dtype)
        if self.scale is not None:
            self.gradient = self.gradient / self.scale
        self.diagonal = None if diagonal is None else tf.cast(diagonal, w.dtype)

    def product(self, v):
        """C v (S^-1 C S^-1 v with `scale`)."""
        if self.scale is not None:
            v = v / self.scale
        if self.curvature == "gauss_newton":
            product = gauss_newton_product(self.objective, self.w, v)
        else:
            product = hessian_product(self.objective, self.w, v)
        return product if self.scale is None else product / self.scale

    def _probe(self):
        seed = tf.constant([1, 2], tf.int32)
        signs = tf.random.stateless_uniform([self.w.shape[0]], seed, 0, 2, dtype=tf.int32)
        return tf.cast(2 * signs - 1, self.w.dtype)

    @property
    def trace(self):
        if self.diagonal is not None:
            if self.scale is None:
                return tf.reduce_sum(self.diagonal)
            return tf.reduce_sum(self.diagonal / (self.scale * self.scale))
        v = self._probe()
        return tf.tensordot(v, self.product(v), 1)

    def frobenius_estimate(self):
        """||C v||^2 for the fixed Rademacher v, Hutchinson's unbiased
        estimate of ||C||_F^2 (one product)."""
        product = self.product(self._probe())
        return tf.tensordot(product, product, 1)

    def solve_from(self, damping, x0=None, diagonal=None):
        """`(delta, iterations, ok)` with delta ~ (C + damping D)^-1 g by CG
        from x0 (None: zeros); D = diag(`diagonal`), None: I; ok as
        `conjugate_gradient` returns it."""
        damping = _as_tensor(damping, self.w.dtype)
        preconditioner = None if self.preconditioner is None else self.preconditioner(damping)
        scale = damping if diagonal is None else damping * tf.cast(diagonal, self.w.dtype)
        return conjugate_gradient(
            lambda v: self.product(v) + scale * v,
            self.gradient,
            x0=x0,
            preconditioner=preconditioner,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
        )

    def solve(self, damping, diagonal=None):
        """`(delta, ok)` with delta ~ (C + damping D)^-1 g, from zero."""
        delta, _, ok = self.solve_from(damping, diagonal=diagonal)
        return delta, ok
