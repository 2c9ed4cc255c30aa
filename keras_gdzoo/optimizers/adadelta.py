"""AdaDelta: per-parameter learning rates from averaged squared gradients and
averaged squared weight changes."""

import keras
from keras import ops

from keras_gdzoo import validation
from keras_gdzoo.optimizers.base import PerParameterOptimizer


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class AdaDelta(PerParameterOptimizer):
    """AdaDelta.

    For every weight w_j, with g_j = dE/dw_j on the current batch,
    rho = `rho` (the forgetting factor), eps = `epsilon`, a = `learning_rate`
    and dw_j(tau) = w_j(tau) - w_j(tau - 1) the last weight change
    (dw_j(0) = `initial_delta`, G_j(-1) = D_j(-1) = 0):

        G_j(tau) = rho * G_j(tau - 1) + (1 - rho) * g_j(tau)^2
        D_j(tau) = rho * D_j(tau - 1) + (1 - rho) * dw_j(tau)^2
        w_j(tau + 1) = w_j(tau) - a * sqrt(D_j(tau) + eps)
                                    / sqrt(G_j(tau) + eps) * g_j(tau)

    The ratio of the two RMS values carries the units of w, so the method
    needs no learning rate: keep a = 1 (the lecture's form). Reference:
    Zeiler (2012), "ADADELTA: an adaptive learning rate method",
    arXiv:1212.5701.

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`; the
            lecture has no learning rate, i.e. a = 1. Defaults to 1.0.
        rho: forgetting factor, 0 < rho < 1. Defaults to 0.95.
        epsilon: eps >= 0, inside both square roots. Defaults to 1e-6.
        initial_delta: |dw(0)| >= 0, the weight change assumed before the
            first step. Defaults to 0.0, as in Zeiler's paper: the first
            step then has size about a * sqrt(eps / (1 - rho)) per weight.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: D is averaged over the actual weight changes, a * (ratio) * g;
    with a = 1 and initial_delta = 0 this is exactly
    `keras.optimizers.Adadelta(learning_rate=1.0)` and
    `torch.optim.Adadelta(lr=1.0)`, which average the change before
    multiplying by their learning rate. epsilon = 0 together with
    initial_delta = 0 is refused: D would stay 0 and no weight would ever
    move.
    """

    def __init__(
        self,
        learning_rate=1.0,
        rho=0.95,
        epsilon=1e-6,
        initial_delta=0.0,
        name=None,
        **kwargs,
    ):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.rho = validation.open_unit("rho", rho)
        self.epsilon = validation.non_negative("epsilon", epsilon)
        self.initial_delta = validation.non_negative("initial_delta", initial_delta)
        if self.epsilon == 0 and self.initial_delta == 0:
            raise ValueError(
                "Arguments `epsilon` and `initial_delta` cannot both be 0: "
                "the averaged squared weight change would stay 0 and the "
                f"weights would never move. Received: epsilon={epsilon}, "
                f"initial_delta={initial_delta}"
            )

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._grad_averages = [
            self.add_variable_from_reference(v, name="grad_average") for v in var_list
        ]
        # The slot holds D(tau) for the coming step: before the first one,
        # D(0) = rho * D(-1) + (1 - rho) * dw(0)^2 = (1 - rho) * initial_delta^2.
        initial = keras.initializers.Constant((1.0 - self.rho) * self.initial_delta**2)
        self._delta_averages = [
            self.add_variable_from_reference(
                v, name="delta_average", initializer=initial
            )
            for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._gradient(gradient, variable)
        index = self._get_variable_index(variable)
        grad_average = self._grad_averages[index]
        delta_average = self._delta_averages[index]
        self.assign_add(
            grad_average,
            ops.multiply(
                ops.subtract(ops.square(gradient), grad_average), 1.0 - self.rho
            ),
        )
        delta = ops.multiply(
            ops.multiply(gradient, ops.negative(lr)),
            ops.sqrt(
                ops.divide(
                    ops.add(delta_average, self.epsilon),
                    ops.add(grad_average, self.epsilon),
                )
            ),
        )
        self.assign_add(variable, delta)
        # D for the next step, from the change just made: dw(tau + 1) = delta.
        self.assign_add(
            delta_average,
            ops.multiply(
                ops.subtract(ops.square(delta), delta_average), 1.0 - self.rho
            ),
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "rho": self.rho,
                "epsilon": self.epsilon,
                "initial_delta": self.initial_delta,
            }
        )
        return config
