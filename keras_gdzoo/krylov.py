"""Preconditioned conjugate gradients on a matrix-vector product, the
linear solver under `keras_gdzoo.matrix_free` (re-exported there)."""

import tensorflow as tf


def _as_tensor(value, dtype):
    """`value` in `dtype`; a Python float straight to it (`tf.cast` of a
    Python float goes through float32: 0.3 would become 0.30000001)."""
    if isinstance(value, (tf.Tensor, tf.Variable)) or hasattr(value, "dtype"):
        return tf.cast(value, dtype)
    return tf.constant(value, dtype)


def conjugate_gradient(
    matvec, rhs, x0=None, preconditioner=None, tolerance=1e-4, max_iterations=100
):
    """Solve C x = rhs by preconditioned conjugate gradients.

    Nocedal & Wright's Algorithm 5.3: r = rhs - C x, z = M^-1 r, p = z; then
    alpha = r'z / p'Cp, x += alpha p, r -= alpha C p, z = M^-1 r,
    beta = r'z (new) / r'z (old), p = z + beta p; one product C p per
    iteration, in a `tf.while_loop`.

    Args:
        matvec: v -> C v, C symmetric.
        rhs: [m].
        x0: the starting point (warm start); None: zeros.
        preconditioner: r -> M^-1 r with M symmetric positive definite, an
            approximation of C; None: the identity.
        tolerance: stop once ||r|| <= tolerance * ||rhs|| (relative
            residual).
        max_iterations: most products C p.

    Returns:
        `(x, iterations, ok)`. ok is False when C met a direction p of
        non-positive curvature, p'Cp <= 0 (C is not positive definite:
        truncated Newton stops there, Nocedal & Wright's Algorithm 7.1), or
        when a number went non-finite; x is then the last iterate before
        that (x0 if it happened at the first iteration). Reaching
        `max_iterations` before the tolerance still gives ok=True: a
        truncated solve.
    """
    rhs = tf.convert_to_tensor(rhs)
    dtype = rhs.dtype
    x = tf.zeros_like(rhs) if x0 is None else tf.cast(x0, dtype)
    precondition = preconditioner if preconditioner is not None else (lambda r: r)
    r = rhs - matvec(x) if x0 is not None else rhs
    z = precondition(r)
    rz = tf.tensordot(r, z, 1)
    target = _as_tensor(tolerance, dtype) * tf.norm(rhs)

    def keep_going(i, x, r, z, p, rz, ok):
        return ok & (tf.norm(r) > target)

    def iterate(i, x, r, z, p, rz, ok):
        cp = matvec(p)
        curvature_along_p = tf.tensordot(p, cp, 1)
        positive = tf.math.is_finite(curvature_along_p) & (curvature_along_p > 0)
        alpha = rz / tf.where(positive, curvature_along_p, tf.ones_like(curvature_along_p))
        x_new = x + alpha * p
        r_new = r - alpha * cp
        z_new = precondition(r_new)
        rz_new = tf.tensordot(r_new, z_new, 1)
        beta = rz_new / tf.where(rz != 0, rz, tf.ones_like(rz))
        p_new = z_new + beta * p
        ok_new = positive & tf.reduce_all(tf.math.is_finite(x_new)) & tf.math.is_finite(rz_new)
        keep = lambda new, old: tf.where(ok_new, new, old)  # noqa: E731
        return (
            i + 1,
            keep(x_new, x),
            keep(r_new, r),
            keep(z_new, z),
            keep(p_new, p),
            keep(rz_new, rz),
            ok_new,
        )

    ok = tf.reduce_all(tf.math.is_finite(r)) & tf.math.is_finite(rz)
    iterations, x, _, _, _, _, ok = tf.while_loop(
        keep_going,
        iterate,
        (tf.constant(0), x, r, z, z, rz, ok),
        maximum_iterations=max_iterations,
    )
    return x, iterations, ok
