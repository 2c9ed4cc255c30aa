"""Learning-rate annealing per iteration: `LearningRateSchedule`s.

The lecture's three annealing schemes, with tau the iteration (the
optimizer's `iterations` counter, 0 on the first update) and a0 the
`initial_learning_rate`:

* `StepDecay`: a(tau) = a0 * factor^floor(tau / every);
* `ExponentialDecay`: a(tau) = a0 * exp(-k * tau);
* `InverseTimeDecay` (the lecture's "1/tau decay"): a(tau) = a0 / (1 + k * tau).

Reference: the lecture's "Annealing the Learning Rate" slide, which follows
the Stanford CS231n course notes (Karpathy) on learning-rate annealing.

Each is a `keras.optimizers.schedules.LearningRateSchedule`, so it is the
`learning_rate=` of any Keras or keras_gdzoo optimizer and is saved with it in
`.keras` files. The same schemes counted in epochs are the callbacks
`keras_gdzoo.StepDecay`, `keras_gdzoo.ExponentialDecay` and
`keras_gdzoo.InverseTimeDecay`.

Example:

>>> schedule = keras_gdzoo.schedules.ExponentialDecay(0.1, k=1e-3)
>>> model.compile(optimizer=keras.optimizers.SGD(schedule), loss="mse")
"""

import keras

from keras_gdzoo import validation

# The rate is computed in float32, like Keras's built-in schedules; the
# optimizer casts it to each variable's dtype.
_DTYPE = "float32"


@keras.saving.register_keras_serializable(package="keras_gdzoo", name="schedules.StepDecay")
class StepDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Step decay: the rate is multiplied by `factor` every `every` iterations.

    a(tau) = a0 * factor^floor(tau / every)

    Args:
        initial_learning_rate: a0 (> 0).
        factor: the multiplier, in (0, 1] (the lecture's examples: 0.5 every
            5 epochs, 0.1 every 20 epochs).
        every: the number of iterations between two reductions (a positive
            integer; the default 5 matches the callback
            `keras_gdzoo.StepDecay`, which counts epochs instead).

    Example:

    >>> schedule = keras_gdzoo.schedules.StepDecay(0.1, factor=0.5, every=1000)
    >>> optimizer = keras.optimizers.SGD(learning_rate=schedule)
    """

    def __init__(self, initial_learning_rate, factor=0.5, every=5):
        super().__init__()
        self.initial_learning_rate = validation.positive(
            "initial_learning_rate", initial_learning_rate
        )
        self.factor = validation.open_closed_unit("factor", factor)
        self.every = validation.integer("every", every, minimum=1)

    def __call__(self, step):
        tau = keras.ops.cast(step, _DTYPE)
        reductions = keras.ops.floor(tau / self.every)
        return self.initial_learning_rate * keras.ops.power(
            keras.ops.cast(self.factor, _DTYPE), reductions
        )

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "factor": self.factor,
            "every": self.every,
        }


@keras.saving.register_keras_serializable(
    package="keras_gdzoo", name="schedules.ExponentialDecay"
)
class ExponentialDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Exponential decay of the learning rate.

    a(tau) = a0 * exp(-k * tau)

    Args:
        initial_learning_rate: a0 (> 0).
        k: the decay rate per iteration (>= 0; 0 keeps the rate constant).

    Note:
        Keras's own `keras.optimizers.schedules.ExponentialDecay` writes the
        same curve as a0 * decay_rate^(tau / decay_steps), i.e.
        k = -ln(decay_rate) / decay_steps.
    """

    def __init__(self, initial_learning_rate, k):
        super().__init__()
        self.initial_learning_rate = validation.positive(
            "initial_learning_rate", initial_learning_rate
        )
        self.k = validation.non_negative("k", k)

    def __call__(self, step):
        tau = keras.ops.cast(step, _DTYPE)
        return self.initial_learning_rate * keras.ops.exp(-self.k * tau)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "k": self.k}


@keras.saving.register_keras_serializable(
    package="keras_gdzoo", name="schedules.InverseTimeDecay"
)
class InverseTimeDecay(keras.optimizers.schedules.LearningRateSchedule):
    """The lecture's "1/tau decay" of the learning rate.

    a(tau) = a0 / (1 + k * tau)

    Args:
        initial_learning_rate: a0 (> 0).
        k: the decay rate per iteration (>= 0; 0 keeps the rate constant).

    Note:
        Keras's `keras.optimizers.schedules.InverseTimeDecay` with
        decay_steps=1 and decay_rate=k is the same curve.
    """

    def __init__(self, initial_learning_rate, k):
        super().__init__()
        self.initial_learning_rate = validation.positive(
            "initial_learning_rate", initial_learning_rate
        )
        self.k = validation.non_negative("k", k)

    def __call__(self, step):
        tau = keras.ops.cast(step, _DTYPE)
        return self.initial_learning_rate / (1.0 + self.k * tau)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "k": self.k}
