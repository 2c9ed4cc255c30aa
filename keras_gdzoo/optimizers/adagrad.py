"""AdaGrad: per-parameter learning rates from the cumulative squared gradient."""

import keras
from keras import ops

from keras_gdzoo import validation
from keras_gdzoo.optimizers.base import PerParameterOptimizer


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class AdaGrad(PerParameterOptimizer):
    """AdaGrad (adaptive gradient).

    For every weight w_j, with g_j = dE/dw_j on the current batch,
    a = `learning_rate` and eps = `epsilon`:

        G_j(tau) = G_j(tau - 1) + g_j(tau)^2,   G_j(-1) = 0
        w_j(tau + 1) = w_j(tau) - a / sqrt(G_j(tau) + eps) * g_j(tau)

    Weights that receive large or frequent gradients get their learning rate
    damped; the effective rate only ever decreases. Reference: Duchi, Hazan &
    Singer (2011), "Adaptive subgradient methods for online learning and
    stochastic optimization", JMLR 12.

    Args:
        learning_rate: base learning rate a > 0, a float or a
            `LearningRateSchedule`. Defaults to 0.01.
        epsilon: eps >= 0, the smoothing term inside the square root.
            Defaults to 1e-8.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: eps sits inside the square root, as in the lecture and in
    `keras.optimizers.Adagrad` (whose accumulator, unlike this one, starts at
    `initial_accumulator_value=0.1` by default); `torch.optim.Adagrad` adds
    eps outside. With epsilon=0 a weight whose gradients are all exactly 0
    gets 0/0 = NaN.
    """

    def __init__(self, learning_rate=0.01, epsilon=1e-8, name=None, **kwargs):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.epsilon = validation.non_negative("epsilon", epsilon)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._accumulators = [
            self.add_variable_from_reference(v, name="accumulator") for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._gradient(gradient, variable)
        accumulator = self._accumulators[self._get_variable_index(variable)]
        self.assign_add(accumulator, ops.square(gradient))
        self.assign_sub(
            variable,
            ops.divide(
                ops.multiply(gradient, lr),
                ops.sqrt(ops.add(accumulator, self.epsilon)),
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update({"epsilon": self.epsilon})
        return config
