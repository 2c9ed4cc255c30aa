"""FunctionObjective's derivatives against closed forms on a quadratic."""

import numpy as np
import tensorflow as tf

from keras_gdzoo.solvers.base import FunctionObjective


def test_quadratic_gradient_hessian_and_hessian_vector_product():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 4))
    a = m @ m.T + 4 * np.eye(4)  # E(w) = 1/2 w'Aw - b'w, H = A, g = Aw - b
    b = rng.normal(size=4)
    objective = FunctionObjective(
        lambda w: 0.5 * tf.tensordot(w, tf.linalg.matvec(a, w), 1) - tf.tensordot(b, w, 1),
        size=4,
        dtype="float64",
    )
    w = tf.constant(rng.normal(size=4))
    v = tf.constant(rng.normal(size=4))
    _, gradient, hessian = objective.hessian(w)
    np.testing.assert_allclose(gradient.numpy(), a @ w.numpy() - b, rtol=1e-12)
    np.testing.assert_allclose(hessian.numpy(), a, rtol=1e-12)
    np.testing.assert_allclose(
        objective.hessian_vector_product(w, v).numpy(), a @ v.numpy(), rtol=1e-12
    )
