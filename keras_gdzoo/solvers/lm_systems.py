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


class _MatrixFreeTerms:
    """E, g, the exact diag(A) and a `matrix_free.MatrixFreeSystem`: no
    Jacobian and no m x m matrix."""

    def __init__(self, objective, w, tolerance, max_iterations):
        self.objective = objective
        self.w = w
        self.tolerance = tolerance
        self.max_iterations = max_iterations
        self.energy, self.gradient = matrix_free.gauss_newton_gradient(objective, w)

    def diagonal(self):
        # Exact up to AUTO_DENSE_LIMIT weights, where the dense path is the
        # alternative and the iterates match it; beyond, the exact one's K
        # backward passes per example cost more than CG itself (about 3.2 s
        # against 0.3 s an iteration on digits, 64-128-10).
        if int(self.w.shape[0]) <= AUTO_DENSE_LIMIT:
            return matrix_free.gauss_newton_diagonal(self.objective, self.w)
        return matrix_free.gauss_newton_diagonal(
            self.objective, self.w, probes=DIAGONAL_PROBES
        )

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
        )
