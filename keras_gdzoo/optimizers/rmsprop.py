"""RMSProp: per-parameter learning rates from an exponentially averaged
squared gradient."""

import keras
from keras import ops

from keras_gdzoo import validation
from keras_gdzoo.optimizers.base import PerParameterOptimizer


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class RMSProp(PerParameterOptimizer):
    """RMSProp (root mean square propagation).

    For every weight w_j, with g_j = dE/dw_j on the current batch,
    a = `learning_rate`, rho = `rho` (the forgetting factor) and
    eps = `epsilon`:

        G_j(0) = g_j(0)^2
        G_j(tau) = rho * G_j(tau - 1) + (1 - rho) * g_j(tau)^2,   tau >= 1
        w_j(tau + 1) = w_j(tau) - a / sqrt(G_j(tau) + eps) * g_j(tau)

    Reference: Hinton (2012), Neural Networks for Machine Learning,
    lecture 6e (Coursera).

    Args:
        learning_rate: base learning rate a > 0, a float or a
            `LearningRateSchedule`. Defaults to 0.001.
        rho: forgetting factor, 0 < rho < 1. Defaults to 0.9.
        epsilon: eps >= 0, inside the square root. Defaults to 1e-8.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: the average starts from the first squared gradient,
    G(0) = g(0)^2, as in the lecture, so the first step has size about a in
    every weight. `keras.optimizers.RMSprop` and `torch.optim.RMSprop` start
    from G = 0 instead (first step about a / sqrt(1 - rho)), so they differ
    from this class at every step.
    """

    def __init__(self, learning_rate=0.001, rho=0.9, epsilon=1e-8, name=None, **kwargs):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.rho = validation.open_unit("rho", rho)
        self.epsilon = validation.non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = [
            self.add_variable_from_reference(v, name="velocity") for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = self._gradient(gradient, variable)
        velocity = self._velocities[self._get_variable_index(variable)]
        # G += c * (g^2 - G) with c = 1 on the first step (G was 0, so
        # G(0) = g(0)^2) and c = 1 - rho afterwards (the exponential average).
        # c is a scalar: the first-step rule costs no element-wise work.
        coefficient = ops.where(
            ops.greater(self.iterations, 0),
            ops.convert_to_tensor(1.0 - self.rho, dtype=dtype),
            ops.convert_to_tensor(1.0, dtype=dtype),
        )
        self.assign_add(
            velocity,
            ops.multiply(ops.subtract(ops.square(gradient), velocity), coefficient),
        )
        self.assign_sub(
            variable,
            ops.divide(
                ops.multiply(gradient, lr),
                ops.sqrt(ops.add(velocity, self.epsilon)),
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config
