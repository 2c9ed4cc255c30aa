"""Per-example Jacobians, Gauss-Newton matrices and Hessians.

Second-order solvers need more than the gradient of the batch loss. This
module computes, for a model seen as a function `predict(w, x)` of one flat
weight vector w (m numbers), the quantities of the lecture's
"Levenberg-Marquardt" and "Newton's method" slides:

* per-example Jacobians J_i = d y_pred_i / d w (K x m for K outputs per
  example), vectorized over the examples of a batch with `tf.vectorized_map`
  (one small backward pass per example and output, never
  `tape.jacobian` of the whole batch output, which costs O(n^2));
* the Gauss-Newton system g = 1/n sum J_i' e_i, A = 1/n sum J_i' J_i,
  accumulated over chunks of examples in a `tf.while_loop`, so memory is
  m^2 + chunk*K*m numbers whatever the batch size;
* its sample-space form for n*K < m, (mu I + J'J/n)^-1 J'e/n =
  J' (n mu I + J J')^-1 e, an (n K) x (n K) system instead of m x m;
* the exact Hessian of the batch loss.

Losses. For the mean squared error the residual of example i is
e_i = y_pred_i - y_i (times sqrt(sample_weight_i)) and the lecture's scaling
is used: E = 1/(2n) sum e_i'e_i, g = dE/dw = 1/n sum J_i'e_i,
A = 1/n sum J_i'J_i. Keras's "mse" is 1/(nK) sum e^2 = (2/K) E, so a solver
that compares loss values may use either.

Cross-entropies (binary, categorical, sparse categorical) use the
generalized Gauss-Newton matrix (Schraudolph, 2002)
A = 1/n sum J_i' H_i J_i, where H_i is the Hessian of the per-example loss
L_i with respect to the model output and g = 1/n sum J_i' dL_i/dy_pred_i is
the gradient of the mean loss E = 1/n sum L_i. H_i and dL_i/dy_pred_i come
from automatic differentiation of the compiled per-example loss itself, so
sample weights, label smoothing and Keras's clipping of probabilities are
taken exactly as Keras applies them. The derivatives are taken with respect
to what the model outputs: logits when the loss has `from_logits=True`
(then H_i = diag(p) - p p' for softmax, the Fisher matrix), probabilities
otherwise (then, with one-hot targets, J_i' H_i J_i is the outer product of
the example's gradient with itself, a weaker curvature model: prefer
logits). For the categorical cross-entropies on probabilities H_i is
projected onto the complement of the all-ones vector, (I - 11'/K) H_i
(I - 11'/K): this leaves J_i' H_i J_i unchanged for softmax outputs (whose
Jacobian rows sum to zero) and removes the negative-definite part that
Keras's renormalization p / sum(p) adds. Other losses are refused: their
output Hessian need not be positive semi-definite.

Note: the matrices are built from the per-example losses only; weight
regularization penalties (`model.losses`) are not part of g, A or H.
Layers that mix examples (BatchNormalization in training mode) are treated
as if each example were alone in its batch.
"""


import numpy as np
import tensorflow as tf


#: Losses with a positive semi-definite (generalized) Gauss-Newton matrix.
GAUSS_NEWTON_LOSSES = (
    "mean_squared_error",
    "binary_crossentropy",
    "categorical_crossentropy",
    "sparse_categorical_crossentropy",
)

#: Default bytes for the per-example Jacobians of one chunk of examples.
DEFAULT_MEMORY_BUDGET = 256 * 2**20

# Up to this many outputs per example, the per-example Jacobian is K plain
# backward passes; beyond, one vectorized `tape.jacobian`.
_UNROLLED_OUTPUTS = 16


# ---------------------------------------------------------------------------
# Building blocks (pure functions of tensors)
# ---------------------------------------------------------------------------


@tf.autograph.experimental.do_not_convert
def per_example_jacobian(predict, w, x):
    """Model output and its Jacobian for each example of a batch.

    Args:
        predict: function `(w, x) -> y_pred` of a flat weight vector w ([m])
            and a batch x (a tensor or a nested structure of tensors whose
            first axis is the example axis).
        w: the flat weights, [m].
        x: the batch, n examples.

    Returns:
        `(y_pred, jacobian)`: y_pred as `predict(w, x)` returns it, [n, ...],
        and jacobian [n, K, m] with K the number of outputs per example,
        jacobian[i, k, j] = d y_pred[i, k] / d w[j] (outputs flattened).

    The examples are vectorized with `tf.vectorized_map`; each example costs
    K small backward passes through the model on that example alone.
    """

    def one_example(x_i):
        # A local copy, so the tape inside the vectorized function sees the
        # weights the model reads (a captured outer tensor is not watched).
        w_local = tf.identity(w)
        batch_of_one = tf.nest.map_structure(lambda t: t[None], x_i)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(w_local)
            y_pred = predict(w_local, batch_of_one)
            outputs = tf.reshape(y_pred, [-1])
            num_outputs = outputs.shape[0]
            if num_outputs <= _UNROLLED_OUTPUTS:
                singles = [outputs[k] for k in range(num_outputs)]
        if num_outputs <= _UNROLLED_OUTPUTS:
            # K plain backward passes: faster to trace and to run than a
            # vectorized Jacobian nested in the vectorized map.
            jacobian = tf.stack([tape.gradient(single, w_local) for single in singles])
        else:
            jacobian = tape.jacobian(outputs, w_local, experimental_use_pfor=True)
        return y_pred[0], jacobian

    return tf.vectorized_map(one_example, x)


@tf.autograph.experimental.do_not_convert
def loss_derivatives(loss_fn, y_pred, num_outputs):
    """Per-example loss, its gradient and Hessian w.r.t. the model output.

    Args:
        loss_fn: maps y_pred ([n, ...]) to the per-example losses [n]; loss i
            may depend on y_pred[i] only.
        y_pred: the model output, [n, ...].
        num_outputs: K, the number of outputs per example.

    Returns:
        `(losses [n], gradients [n, K], hessians [n, K, K])`; the Hessians
        cost K vectorized backward passes through the loss alone.
    """
    n = tf.shape(y_pred)[0]
    flat = tf.reshape(y_pred, [n, num_outputs])
    with tf.GradientTape() as outer:
        outer.watch(flat)
        with tf.GradientTape() as inner:
            inner.watch(flat)
            losses = loss_fn(tf.reshape(flat, tf.shape(y_pred)))
            total = tf.reduce_sum(losses)
        gradients = inner.gradient(total, flat)
    return losses, gradients, outer.batch_jacobian(gradients, flat)


def damped_solve(matrix, rhs, damping):
    """Solve (matrix + damping * I) x = rhs by Cholesky factorization.

    Args:
        matrix: symmetric positive semi-definite [m, m].
        rhs: [m].
        damping: scalar mu >= 0.

    Returns:
        `(x, ok)`: ok is False when the factorization failed (matrix +
        damping * I not numerically positive definite, or not finite); x is
        then not finite either. Never raises: TensorFlow's Cholesky returns
        NaN on failure.

    Matrices of float32 (or narrower) are factorized in float64: for small
    damping the system's condition number is large, and it multiplies the
    round-off of the factorization. The cost, O(m^3) once per solve, is
    small next to building the matrix.
    """
    dtype = matrix.dtype
    solve_dtype = tf.float64 if dtype.size < 8 else dtype
    size = tf.shape(matrix)[0]
    damped = tf.cast(matrix, solve_dtype) + tf.cast(damping, solve_dtype) * tf.eye(
        size, dtype=solve_dtype
    )
    factor = tf.linalg.cholesky(damped)
    solution = tf.linalg.cholesky_solve(factor, tf.cast(rhs, solve_dtype)[:, None])[:, 0]
    solution = tf.cast(solution, dtype)
    ok = tf.reduce_all(tf.math.is_finite(solution))
    return solution, ok


class SampleSpaceSystem:
    """The Gauss-Newton system in sample space (for n*K < m).

    With Jt = the stacked [N, m] matrix of scaled per-example Jacobians
    (N = n*K rows) and u the matching [N] residuals, A = Jt'Jt/n and
    g = Jt'u/n, so by the push-through identity

        (mu I + A)^-1 g = Jt' (n mu I + Jt Jt')^-1 u,

    an N x N system. For the mean squared error Jt_i = sqrt(s_i) J_i and
    u_i = sqrt(s_i) e_i (s_i the sample weight); for the cross-entropies
    Jt_i = B_i' J_i with H_i = B_i B_i' and B_i u_i = dL_i/dy_pred_i.

    Attributes:
        jacobian: Jt, [N, m].
        residuals: u, [N].
        count: n, scalar.
        gram: Jt Jt', [N, N] (computed once, reused for every damping).
        trace: trace(A) = trace(Jt Jt') / n, the scale of A.
    """

    def __init__(self, jacobian, residuals, count):
        self.jacobian = jacobian
        self.residuals = residuals
        self.count = tf.cast(count, jacobian.dtype)
        self.gram = symmetrize(tf.matmul(jacobian, jacobian, transpose_b=True))
        self.trace = tf.linalg.trace(self.gram) / self.count

    def solve(self, damping):
        """`(delta, ok)` with delta = (damping I + A)^-1 g."""
        dual, ok = damped_solve(
            self.gram, self.residuals, self.count * tf.cast(damping, self.gram.dtype)
        )
        return tf.linalg.matvec(self.jacobian, dual, transpose_a=True), ok


class DenseSystem:
    """The Gauss-Newton system in parameter space: A ([m, m]) and g ([m]).

    Attributes:
        matrix: A.
        gradient: g.
        trace: trace(A), the scale of A.
    """

    def __init__(self, matrix, gradient):
        self.matrix = matrix
        self.gradient = gradient
        self.trace = tf.linalg.trace(matrix)

    def solve(self, damping):
        """`(delta, ok)` with delta = (damping I + A)^-1 g."""
        return damped_solve(self.matrix, self.gradient, damping)


class _ChunkTerms:
    """What one chunk of examples contributes to the Gauss-Newton system.

    jacobian [c, K, m]; gradients q [c, K] with g = sum J_i' q_i; losses [c];
    hessians [c, K, K] (H_i), or, for the mean squared error, residuals
    e [c, K] and weights s [c] (H_i = s_i I, q_i = s_i e_i; None: s_i = 1).
    """

    def __init__(self, jacobian, gradients, losses, hessians=None, weights=None, residuals=None):
        self.jacobian = jacobian
        self.gradients = gradients
        self.losses = losses
        self.hessians = hessians
        self.weights = weights
        self.residuals = residuals


def symmetrize(matrix):
    return 0.5 * (matrix + tf.transpose(matrix))


def _map_batch(fn, structure):
    return tf.nest.map_structure(lambda t: None if t is None else fn(t), structure)


def _num_examples(x):
    first = tf.nest.flatten(x)[0]
    static = first.shape[0]
    return static if static is not None else tf.shape(first)[0]


@tf.autograph.experimental.do_not_convert
def sum_over_chunks(fn, batch, chunk, initial):
    """Sum `fn(chunk_batch, mask)` over chunks of at most `chunk` examples.

    Args:
        fn: maps (a slice of `batch`, a boolean [chunk] mask of the real
            examples in it) to a nested structure of tensors.
        batch: nested structure of tensors (or None) sharing the first axis.
        chunk: Python int, examples per chunk.
        initial: zeros with fn's output structure.

    The batch is padded with zeros to a multiple of `chunk` so every chunk
    has the same static shape (XLA-friendly); padded examples are masked.
    A batch that fits in one chunk is processed without a loop.
    """
    n = _num_examples(batch)
    if isinstance(n, int) and n <= chunk:
        return fn(batch, None)
    num_chunks = (n + chunk - 1) // chunk
    padded_size = num_chunks * chunk

    def pad(t):
        rank = len(t.shape)
        paddings = [[0, padded_size - n]] + [[0, 0]] * (rank - 1)
        return tf.pad(t, paddings)

    padded = _map_batch(pad, batch)
    mask = tf.range(padded_size) < n

    def body(i, total):
        start = i * chunk
        piece = _map_batch(lambda t: t[start : start + chunk], padded)
        part = fn(piece, mask[start : start + chunk])
        return i + 1, tf.nest.map_structure(tf.add, total, part)

    _, total = tf.while_loop(
        lambda i, _: i < num_chunks, body, (tf.constant(0), initial), parallel_iterations=1
    )
    return total


def _masked(values, mask):
    if mask is None:
        return values
    mask = tf.reshape(mask, [-1] + [1] * (len(values.shape) - 1))
    return tf.where(mask, values, tf.zeros_like(values))


def _per_example(values):
    """Reduce a per-example loss of rank > 1 to one number per example."""
    if len(values.shape) > 1:
        values = tf.reduce_mean(values, axis=list(range(1, len(values.shape))))
    return values


def _ones_projection(hessians):
    """(I - 11'/K) H (I - 11'/K) for a batch of [K, K] Hessians."""
    centered = hessians - tf.reduce_mean(hessians, axis=-1, keepdims=True)
    return centered - tf.reduce_mean(centered, axis=-2, keepdims=True)


def _factor_psd(hessians):
    """B with H = B B' for a batch of symmetric PSD [K, K] matrices.

    Returns `(B, pinv_factor)` where pinv_factor maps a gradient q in the
    range of H to u with B u = q (pseudo-inverse on the positive
    eigenvalues; round-off negatives are clamped to zero).
    """
    eigenvalues, eigenvectors = tf.linalg.eigh(symmetrize_batch(hessians))
    largest = tf.reduce_max(tf.abs(eigenvalues), axis=-1, keepdims=True)
    eps = tf.constant(
        10 * hessians.shape[-1] * machine_epsilon(hessians.dtype), hessians.dtype
    )
    positive = eigenvalues > eps * largest
    root = tf.sqrt(tf.where(positive, eigenvalues, tf.zeros_like(eigenvalues)))
    inverse_root = tf.where(
        positive, 1.0 / tf.where(positive, root, tf.ones_like(root)), tf.zeros_like(root)
    )
    factor = eigenvectors * root[..., None, :]
    pinv_factor = tf.linalg.matrix_transpose(eigenvectors * inverse_root[..., None, :])
    return factor, pinv_factor


def symmetrize_batch(matrices):
    return 0.5 * (matrices + tf.linalg.matrix_transpose(matrices))


def machine_epsilon(dtype):
    """The spacing of floating-point numbers of `dtype` at 1."""
    if tf.as_dtype(dtype) == tf.bfloat16:  # NumPy has no finfo for it
        return 2.0**-7
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).eps)


def smallest_normal(dtype):
    """The smallest positive normal number of `dtype`."""
    if tf.as_dtype(dtype) == tf.bfloat16:
        return 2.0**-126
    return float(np.finfo(tf.as_dtype(dtype).as_numpy_dtype).tiny)


# The curvature of a model objective, composed from the blocks above.
from keras_gdzoo.model_curvature import ModelCurvature  # noqa: E402,F401
