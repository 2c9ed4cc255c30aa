"""Gradient descent, gradient descent with momentum, Nesterov momentum."""

import keras
from keras import ops

from keras_gdzoo import validation
from keras_gdzoo.optimizers.base import PerParameterOptimizer


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class GradientDescent(PerParameterOptimizer):
    """Plain gradient descent with a fixed (or scheduled) learning rate.

    With w the weights, g = dE/dw the gradient on the current batch and
    a = `learning_rate`:

        w(tau + 1) = w(tau) - a * g(tau)

    Batch, stochastic or mini-batch mode is chosen by `batch_size` in `fit`
    (one update per batch). Reference: Cauchy (1847); Rumelhart, Hinton &
    Williams (1986).

    Args:
        learning_rate: a > 0, a float or a
            `keras.optimizers.schedules.LearningRateSchedule`. Defaults to 0.01.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Example:

        >>> import keras, keras_gdzoo as gz
        >>> w = keras.Variable([1.0, -2.0])
        >>> _ = gz.GradientDescent(learning_rate=0.1).apply_gradients([(w * 2.0, w)])
        >>> [round(float(v), 4) for v in w.numpy()]
        [0.8, -1.6]
    """

    def __init__(self, learning_rate=0.01, name=None, **kwargs):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._gradient(gradient, variable)
        self.assign_sub(variable, ops.multiply(gradient, lr))


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Momentum(PerParameterOptimizer):
    """Gradient descent with momentum (the "heavy ball").

    With g = dE/dw on the current batch, a = `learning_rate`,
    mu = `momentum` and d the last weight change (d = 0 before the first
    step), the lecture's implementation 1 (`dampened=False`):

        w(tau + 1) = w(tau) - a * g(tau) + mu * dw(tau),  dw(tau) = w(tau) - w(tau - 1)

    i.e. d = mu * d - a * g ; w += d. Implementation 2 (`dampened=True`)
    scales the gradient by (1 - mu), so that the effective learning rate on a
    flat surface, a / (1 - mu) for implementation 1, stays a:

        d = mu * d - a * (1 - mu) * g ; w += d        (0 < mu < 1)

    Reference: Rumelhart, Hinton & Williams (1986), "Learning
    representations by back-propagating errors".

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`.
            Defaults to 0.01.
        momentum: mu >= 0 (0 < mu < 1 when `dampened=True`). Defaults to 0.9.
        dampened: use implementation 2. Defaults to False.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: with a schedule, a(tau) multiplies the gradient of step tau only;
    the stored velocity d keeps the learning rates of the steps that made it
    (the lecture's form, also Keras's `SGD`, unlike `torch.optim.SGD`, which
    multiplies the whole velocity by the current rate). mu = 0 is accepted and
    gives plain gradient descent.

    Example:

        >>> import keras, keras_gdzoo as gz
        >>> w = keras.Variable([1.0])
        >>> opt = gz.Momentum(learning_rate=0.1, momentum=0.5)
        >>> for _ in range(2):
        ...     _ = opt.apply_gradients([(w * 2.0, w)])
        >>> round(float(w.numpy()[0]), 4)  # 1 -> 0.8 -> 0.8 - 0.16 - 0.1
        0.54
    """

    def __init__(
        self, learning_rate=0.01, momentum=0.9, dampened=False, name=None, **kwargs
    ):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.dampened = validation.boolean("dampened", dampened)
        if self.dampened:
            self.momentum = validation.open_unit(
                "momentum", momentum, when=" when dampened=True"
            )
        else:
            self.momentum = validation.non_negative("momentum", momentum)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = [
            self.add_variable_from_reference(v, name="velocity") for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._gradient(gradient, variable)
        if self.dampened:
            lr = ops.multiply(lr, 1.0 - self.momentum)
        d = self._velocities[self._get_variable_index(variable)]
        self.assign(
            d, ops.subtract(ops.multiply(d, self.momentum), ops.multiply(gradient, lr))
        )
        self.assign_add(variable, d)

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "dampened": self.dampened})
        return config


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class NesterovMomentum(PerParameterOptimizer):
    """Nesterov accelerated gradient (NAG).

    The lecture's form (Nesterov, 1983) takes the gradient at the look-ahead
    point w + mu * dw:

        w(tau + 1) = w(tau) - a * g(w(tau) + mu * dw(tau)) + mu * dw(tau),
        dw(tau) = w(tau) - w(tau - 1),  dw(0) = 0

    with a = `learning_rate` and mu = `momentum`. This class implements the
    same sequence in the form of Sutskever et al. (2013): the model variable
    holds the look-ahead point v = w + mu * d, so the ordinary gradient g
    taken at the variable is the look-ahead gradient, and one step is

        d_new = mu * d - a * g(v) ; v += mu * d_new - a * g(v)

    (d = 0 before the first step, so v(0) = w(0)). References: Nesterov
    (1983); Sutskever, Martens, Dahl & Hinton (2013), "On the importance of
    initialization and momentum in deep learning"; Sutskever (2013), PhD
    thesis.

    Args:
        learning_rate: a > 0, a float or a `LearningRateSchedule`.
            Defaults to 0.01.
        momentum: mu >= 0. Defaults to 0.9.
        name, weight_decay, clipnorm, ...: as in `keras.optimizers.Optimizer`.

    Note: the trained variable is the look-ahead point v = w + mu * dw, not
    the lecture's w; the two differ by mu times the last step, which vanishes
    as training converges. The lecture's w(tau) is v(tau) - mu * d(tau).
    """

    def __init__(self, learning_rate=0.01, momentum=0.9, name=None, **kwargs):
        super().__init__(
            learning_rate=validation.learning_rate(learning_rate),
            name=name,
            **kwargs,
        )
        self.momentum = validation.non_negative("momentum", momentum)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._velocities = [
            self.add_variable_from_reference(v, name="velocity") for v in var_list
        ]

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = self._gradient(gradient, variable)
        d = self._velocities[self._get_variable_index(variable)]
        step = ops.multiply(gradient, lr)
        self.assign(d, ops.subtract(ops.multiply(d, self.momentum), step))
        self.assign_add(variable, ops.subtract(ops.multiply(d, self.momentum), step))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum})
        return config
