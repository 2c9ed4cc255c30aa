"""What one Levenberg-Marquardt iteration solves with: E, g, diag(A) and the
damped system, dense (m x m), in sample space ((nK) x (nK)) or matrix-free
(conjugate gradients on Gauss-Newton-vector products)."""

import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo import matrix_free
from keras_gdzoo.solvers.newton import AUTO_DENSE_LIMIT

#: With CG beyond AUTO_DENSE_LIMIT weights, the Rademacher probes of the
#: Hutchinson estimate of diag(A).
DIAGONAL_PROBES = 4


def _factor_solve(matrix, damping, rhs):
    """`(x, y, ok)`: x = (matrix + damping I)^-1 rhs and y = L^-1 x, L the
    Cholesky factor (so ||y||^2 = x' (matrix + damping I)^-1 x), in float64
    for narrower dtypes; ok is False when the factorization failed."""
    dtype = matrix.dtype
    wide = tf.float64 if dtype.size < 8 else dtype
    size = tf.shape(matrix)[0]
    damped = tf.cast(matrix, wide) + tf.cast(damping, wide) * tf.eye(size, dtype=wide)
    factor = tf.linalg.cholesky(damped)
    x = tf.linalg.cholesky_solve(factor, tf.cast(rhs, wide)[:, None])
    y = tf.linalg.triangular_solve(factor, x, lower=True)[:, 0]
    x = x[:, 0]
    ok = tf.reduce_all(tf.math.is_finite(x)) & tf.reduce_all(tf.math.is_finite(y))
    return tf.cast(x, dtype), tf.cast(y, dtype), ok


class _RadiusSystem:
    """The scaled system B = S^-1 A S^-1, b = S^-1 g for the trust-region
    rule: `solve(mu)` gives q = (B + mu I)^-1 b = S delta and
    q' (B + mu I)^-1 q (= -1/2 d||q||^2/dmu, the secular equation's slope),
    one Cholesky factorization each, as MINPACK's `lmpar` (which
    factorizes J by QR instead; Cholesky of B keeps the accuracy of
    columns of very different sizes, an eigendecomposition would not)."""

    def __init__(self, matrix, gradient):
        self.matrix = matrix
        self.gradient = gradient
        self.gradient_norm = tf.norm(gradient)

    def solve(self, damping):
        q, y, ok = _factor_solve(self.matrix, damping, self.gradient)
        return q, tf.reduce_sum(y * y), ok


class _SampleSpaceRadiusSystem:
    """`_RadiusSystem` in sample space: with Js = Jt S^-1 ([N, m]), G = Js Js'
    and u the residuals, B = Js'Js/n and b = Js'u/n, so q = Js' z with
    z = (G + n mu I)^-1 u, and q'(B + mu I)^-1 q = n z'G (G + n mu I)^-1 z."""

    def __init__(self, jacobian, residuals, count):
        self.jacobian = jacobian
        self.residuals = residuals
        self.count = tf.cast(count, jacobian.dtype)
        self.gram = curvature.symmetrize(tf.matmul(jacobian, jacobian, transpose_b=True))
        self.gradient_norm = (
            tf.norm(tf.linalg.matvec(jacobian, residuals, transpose_a=True)) / self.count
        )

    def solve(self, damping):
        n_mu = self.count * damping
        z, _, ok_z = _factor_solve(self.gram, n_mu, self.residuals)
        t, _, ok_t = _factor_solve(self.gram, n_mu, z)
        q = tf.linalg.matvec(self.jacobian, z, transpose_a=True)
        slope = self.count * tf.reduce_sum(z * tf.linalg.matvec(self.gram, t))
        return q, slope, ok_z & ok_t


class _DenseTerms:
    """E, g and A ([m, m]) in parameter space."""

    def __init__(self, energy, gradient, matrix):
        self.energy = energy
        self.gradient = gradient
        self.matrix = matrix

    def diagonal(self):
        return tf.linalg.diag_part(self.matrix)

    def system(self, root=None):
        """The system (S^-1 A S^-1, S^-1 g) whose solve(mu) gives S delta."""
        if root is None:
            return curvature.DenseSystem(self.matrix, self.gradient)
        root = tf.cast(root, self.matrix.dtype)
        scaled = self.matrix / (root[:, None] * root[None, :])
        return curvature.DenseSystem(curvature.symmetrize(scaled), self.gradient / root)

    def radius_system(self, root):
        """The `_RadiusSystem` of S^-1 A S^-1 (S = diag(root); None: I)."""
        if root is None:
            return _RadiusSystem(self.matrix, self.gradient)
        root = tf.cast(root, self.matrix.dtype)
        scaled = curvature.symmetrize(self.matrix / (root[:, None] * root[None, :]))
        return _RadiusSystem(scaled, self.gradient / root)


class _SampleSpaceTerms:
    """E, g and the sample-space system Jt ([N, m]) for n*K < m."""

    def __init__(self, energy, gradient, system):
        self.energy = energy
        self.gradient = gradient
        self.sample_system = system

    def diagonal(self):
        system = self.sample_system
        return tf.reduce_sum(system.jacobian * system.jacobian, axis=0) / system.count

    def system(self, root=None):
        if root is None:
            return self.sample_system
        system = self.sample_system
        root = tf.cast(root, system.jacobian.dtype)
        return curvature.SampleSpaceSystem(system.jacobian / root, system.residuals, system.count)

    def radius_system(self, root):
        """The `_SampleSpaceRadiusSystem` of Jt S^-1 (S = diag(root); None: I)."""
        system = self.sample_system
        if root is None:
            return _SampleSpaceRadiusSystem(system.jacobian, system.residuals, system.count)
        root = tf.cast(root, system.jacobian.dtype)
        return _SampleSpaceRadiusSystem(system.jacobian / root, system.residuals, system.count)


class _MatrixFreeTerms:
    """E, g, the exact diag(A) and a `matrix_free.MatrixFreeSystem`: no
    Jacobian and no m x m matrix."""

    def __init__(self, objective, w, tolerance, max_iterations):
        self.objective = objective
        self.w = w
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.energy, self.gradient = matrix_free.gauss_newton_gradient(objective, w)
        self._diagonal = None

    def diagonal(self):
        # Exact up to AUTO_DENSE_LIMIT weights, where the dense path is the
        # alternative and the iterates match it; beyond, the exact one's K
        # backward passes per example cost more than CG itself (about 3.2 s
        # against 0.3 s an iteration on digits, 64-128-10). Hutchinson's
        # estimate, not the more accurate `sampled_gauss_newton_diagonal`
        # (60% off on the 280k-weight CNN of benchmarks/bench_scale.py
        # against Hutchinson's 270%): with an accurate diag(A), Marquardt's
        # scaling barely damps the flat directions (A_jj ~ 1e-10 on a
        # 1-1000-1 tanh fit), the first steps overshoot and mu climbs to
        # 1e5; Hutchinson's zeros (scale 1) damp those directions instead.
        if self._diagonal is None:
            if int(self.w.shape[0]) <= AUTO_DENSE_LIMIT:
                self._diagonal = matrix_free.gauss_newton_diagonal(self.objective, self.w)
            else:
                self._diagonal = matrix_free.gauss_newton_diagonal(
                    self.objective, self.w, probes=DIAGONAL_PROBES
                )
        return self._diagonal

    def system(self, root=None):
        """The system whose solve_from(mu, x0) gives S delta (delta without
        `root`), as `_DenseTerms.system`'s."""
        return matrix_free.MatrixFreeSystem(
            self.objective,
            self.w,
            tolerance=self.tolerance,
            max_iterations=self.max_iterations,
            value=self.energy,
            gradient=self.gradient,
            scale=root,
            diagonal=self.diagonal(),
        )
