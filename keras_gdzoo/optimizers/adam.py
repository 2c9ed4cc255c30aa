"""Adam and its two variants from Kingma & Ba (Adamax) and Dozat (Nadam)."""

import keras
from keras import ops

from keras_gdzoo import validation
from keras_gdzoo.optimizers.base import PerParameterOptimizer


class _AdamFamily(PerParameterOptimizer):
    """Shared construction, slots and config of Adam, Adamax and Nadam."""

    # Name of the second-moment slot (Adamax keeps an infinity norm instead).
    _second_moment = "velocity"

    def __init__(
        self, learning_rate, beta_1, beta_2, epsilon, name=None, **kwargs
    ):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.beta_1 = validation.half_open_unit("beta_1", beta_1)
        self.beta_2 = validation.half_open_unit("beta_2", beta_2)
        self.epsilon = validation.non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._momentums = [
            self.add_variable_from_reference(v, name="momentum") for v in var_list
        ]
        self._velocities = [
            self.add_variable_from_reference(v, name=self._second_moment)
            for v in var_list
        ]

    def _step(self, dtype):
        """t = tau + 1, the 1-based step count, as a `dtype` scalar."""
        return ops.cast(self.iterations + 1, dtype)

    @staticmethod
    def _power(beta, step):
        """beta^t; beta goes straight to t's dtype, not through float32 (as
        `ops.cast` of a Python float would), so float64 training keeps
        float64 bias corrections."""
        return ops.power(ops.convert_to_tensor(beta, dtype=step.dtype), step)

    def _moments(self, gradient, variable):
        """Update m and G (the Adam moments) in place; return them."""
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        velocity = self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - self.beta_1))
        self.assign_add(
            velocity,
            ops.multiply(
                ops.subtract(ops.square(gradient), velocity), 1.0 - self.beta_2
            ),
        )
        return m, velocity

    def get_config(self):
        config = super().get_config()
        config.update(
            {"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}
        )
        return config


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Adam(_AdamFamily):
    """Adam (adaptive moment estimation).

    For every weight w_j, with g_j = dE/dw_j on the current batch,
    a = `learning_rate`, b1 = `beta_1`, b2 = `beta_2`, eps = `epsilon` and
    t = tau + 1 the 1-based step count (m(-1) = G(-1) = 0):

        m_j(tau) = b1 * m_j(tau - 1) + (1 - b1) * g_j(tau)        (1st moment)
        G_j(tau) = b2 * G_j(tau - 1) + (1 - b2) * g_j(tau)^2      (2nd moment)
        m_hat = m_j / (1 - b1^t),  G_hat = G_j / (1 - b2^t)      (bias corrections)
        w_j(tau + 1) = w_j(tau) - a * m_hat / sqrt(G_hat + eps)

    Reference: Kingma & Ba (2015), "Adam: a method for stochastic
    optimization", ICLR, Algorithm 1.

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`.
            Defaults to 0.001.
        beta_1: b1 in [0, 1). Defaults to 0.9.
        beta_2: b2 in [0, 1). Defaults to 0.999.
        epsilon: eps >= 0. Defaults to 1e-8.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: eps sits inside the square root, as in the lecture; the paper,
    `keras.optimizers.Adam` and `torch.optim.Adam` add it outside,
    a * m_hat / (sqrt(G_hat) + eps). The two agree for eps = 0. The update
    is computed as a * sqrt(1 - b2^t) / (1 - b1^t) * m / sqrt(G + eps * (1 - b2^t)),
    the same formula with the bias corrections folded into two scalars per
    step, as Keras does.
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        name=None,
        **kwargs,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = self._gradient(gradient, variable)
        step = self._step(dtype)
        beta_1_power = self._power(self.beta_1, step)
        beta_2_power = self._power(self.beta_2, step)
        # sqrt(G / c2 + eps) = sqrt(G + eps * c2) / sqrt(c2), c2 = 1 - b2^t.
        second_correction = 1.0 - beta_2_power
        alpha = lr * ops.sqrt(second_correction) / (1.0 - beta_1_power)
        epsilon = self.epsilon * second_correction
        m, velocity = self._moments(gradient, variable)
        self.assign_sub(
            variable,
            ops.divide(ops.multiply(m, alpha), ops.sqrt(ops.add(velocity, epsilon))),
        )


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Adamax(_AdamFamily):
    """Adamax: Adam with the infinity norm in place of the second moment.

    With the symbols of `Adam` (u(-1) = 0, t = tau + 1):

        m_j(tau) = b1 * m_j(tau - 1) + (1 - b1) * g_j(tau)
        u_j(tau) = max(b2 * u_j(tau - 1), |g_j(tau)|)
        w_j(tau + 1) = w_j(tau) - a / (1 - b1^t) * m_j(tau) / (u_j(tau) + eps)

    Reference: Kingma & Ba (2015), "Adam: a method for stochastic
    optimization", ICLR, section 7.1 (Algorithm 2).

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`.
            Defaults to 0.002.
        beta_1: b1 in [0, 1). Defaults to 0.9.
        beta_2: b2 in [0, 1). Defaults to 0.999.
        epsilon: eps >= 0, added to u. Defaults to 1e-8.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: the paper has no eps; this is the same update as
    `keras.optimizers.Adamax`. `torch.optim.Adamax` takes
    max(b2 * u, |g| + eps) instead; all three agree for eps = 0.
    """

    _second_moment = "norm"

    def __init__(
        self,
        learning_rate=0.002,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        name=None,
        **kwargs,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = self._gradient(gradient, variable)
        alpha = lr / (1.0 - self._power(self.beta_1, self._step(dtype)))
        index = self._get_variable_index(variable)
        m = self._momentums[index]
        u = self._velocities[index]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), 1.0 - self.beta_1))
        self.assign(u, ops.maximum(ops.multiply(u, self.beta_2), ops.abs(gradient)))
        self.assign_sub(
            variable, ops.divide(ops.multiply(m, alpha), ops.add(u, self.epsilon))
        )


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Nadam(_AdamFamily):
    """Nadam: Adam with a Nesterov look-ahead on the first moment.

    With the symbols of `Adam` (t = tau + 1), m and G are updated as in Adam,
    and the bias-corrected first moment is replaced by its look-ahead
    version:

        m_bar = b1 * m_j(tau) / (1 - b1^(t + 1)) + (1 - b1) * g_j(tau) / (1 - b1^t)
        w_j(tau + 1) = w_j(tau) - a * m_bar / sqrt(G_j(tau) / (1 - b2^t) + eps)

    Reference: Dozat (2016), "Incorporating Nesterov momentum into Adam",
    ICLR workshop (Algorithm 2, with a constant momentum b1).

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`.
            Defaults to 0.002.
        beta_1: b1 in [0, 1). Defaults to 0.9.
        beta_2: b2 in [0, 1). Defaults to 0.999.
        epsilon: eps >= 0, inside the square root. Defaults to 1e-8.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: no momentum schedule b1(t) = b1 * (1 - 0.5 * 0.96^(...)) is
    applied (`keras.optimizers.Nadam` uses 0.96^t, `torch.optim.NAdam`
    0.96^(t/250)): b1 is constant, as in the lecture and in `optax.nadam`,
    so neither built-in matches this class. eps sits inside the square
    root, like this package's `Adam`.
    """

    def __init__(
        self,
        learning_rate=0.002,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        name=None,
        **kwargs,
    ):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, name=name, **kwargs)

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        gradient = self._gradient(gradient, variable)
        step = self._step(dtype)
        beta_1_power = self._power(self.beta_1, step)
        second_correction = 1.0 - self._power(self.beta_2, step)
        # a * m_bar / sqrt(G / c2 + eps)
        #   = (c_m * m + c_g * g) / sqrt(G + eps * c2), with the scalars
        # c_m = a sqrt(c2) b1 / (1 - b1^(t+1)), c_g = a sqrt(c2) (1 - b1) / (1 - b1^t).
        scale = lr * ops.sqrt(second_correction)
        momentum_coefficient = scale * self.beta_1 / (1.0 - beta_1_power * self.beta_1)
        gradient_coefficient = scale * (1.0 - self.beta_1) / (1.0 - beta_1_power)
        epsilon = self.epsilon * second_correction
        m, velocity = self._moments(gradient, variable)
        self.assign_sub(
            variable,
            ops.divide(
                ops.add(
                    ops.multiply(m, momentum_coefficient),
                    ops.multiply(gradient, gradient_coefficient),
                ),
                ops.sqrt(ops.add(velocity, epsilon)),
            ),
        )
