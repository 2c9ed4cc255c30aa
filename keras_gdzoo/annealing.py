"""Learning-rate annealing per epoch: Keras callbacks.

The lecture's three annealing schemes, with tau the epoch index counted from 0
and a0 the optimizer's learning rate when training starts:

* `StepDecay(factor=0.5, every=5)`: a *= factor every `every` epochs,
  a(tau) = a0 * factor^floor(tau / every);
* `ExponentialDecay(k)`: a(tau) = a0 * exp(-k * tau);
* `InverseTimeDecay(k)` (the lecture's "1/tau decay"): a(tau) = a0 / (1 + k * tau).

Reference: the lecture's "Annealing the Learning Rate" slide, which follows
the Stanford CS231n course notes (Karpathy) on learning-rate annealing.

Like `keras.callbacks.LearningRateScheduler`, each callback assigns a(tau) to
the optimizer's `learning_rate` when epoch tau begins, and writes the rate
into the epoch's logs as `logs["learning_rate"]` (so it appears in `History`,
TensorBoard and CSV logs). Exported at the top level: `keras_gdzoo.StepDecay`
etc. The same schemes counted in iterations are the schedules in
`keras_gdzoo.schedules`.

Example:

>>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
>>> history = model.fit(x, y, batch_size=len(x), epochs=12, verbose=0,
...                     callbacks=[keras_gdzoo.StepDecay(0.5, 5)])
>>> [round(a, 4) for a in history.history["learning_rate"]]  # epochs 0-4, 5-9, 10-11
[0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025]

Only an optimizer with a learning rate can be annealed: a full-batch solver
(a `keras_gdzoo.solvers.Solver`, driven through `gz.wrap`) takes its step
from a line search, a damping or per-weight step sizes, so the callbacks
refuse one with a `ValueError` when training begins, rather than log a
falling rate that changes nothing.

Resuming: a0 is always the rate of epoch 0. When `fit` starts at epoch 0, a0
is the optimizer's rate at that moment. When it starts at epoch E > 0
(`initial_epoch=E`), the optimizer is taken to hold the rate the schedule gave
epoch E - 1, which is what a model saved at the end of epoch E - 1 (and
reloaded) or an optimizer left by an earlier `fit` carries; a0 is recovered
from it, so an interrupted and resumed run follows the same rates as one
uninterrupted run. Pass `initial_learning_rate=a0` to fix a0 instead, for
example when resuming with a freshly built optimizer.
"""

import keras

from keras_gdzoo import schedules
from keras_gdzoo import validation


class _Annealing(keras.callbacks.Callback):
    """Shared plumbing: a0 book-keeping, setting and logging the rate.

    Subclasses set `self._decay`, the schedule with a0 = 1, so that
    a(tau) = a0 * self._decay(tau): one formula serves both the per-iteration
    schedules and these per-epoch callbacks.
    """

    def __init__(self, initial_learning_rate=None):
        super().__init__()
        if initial_learning_rate is not None:
            initial_learning_rate = validation.positive(
                "initial_learning_rate", initial_learning_rate
            )
        self.initial_learning_rate = initial_learning_rate
        self._a0 = None

    def _relative_rate(self, epoch):
        return float(keras.ops.convert_to_numpy(self._decay(epoch)))

    def on_train_begin(self, logs=None):
        # Imported here: the solvers are a heavier part of the package that
        # this callback needs only for the check.
        from keras_gdzoo.solvers import Solver

        optimizer = self.model.optimizer
        if isinstance(optimizer, Solver):
            raise ValueError(
                f"{type(self).__name__} anneals a learning rate, but the "
                f"optimizer is the solver {type(optimizer).__name__}, and a "
                "solver has no learning rate (its step comes from a line "
                "search, a damping or a per-weight step size), so the "
                "falling rate would change nothing. Use the callback with a "
                "per-parameter optimizer (gz.GradientDescent, gz.Adam, ...)."
            )
        learning_rate = optimizer.learning_rate
        if not isinstance(learning_rate, keras.Variable):
            raise ValueError(
                f"{type(self).__name__} sets the optimizer's learning rate at "
                "each epoch, so the optimizer needs a float `learning_rate`; "
                "this one was given a LearningRateSchedule or a callable. Use "
                "either the callback with a float learning rate, or a "
                "schedule from keras_gdzoo.schedules as the optimizer's "
                "`learning_rate`, not both."
            )
        self._a0 = None

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        if self._a0 is None:
            self._a0 = self._initial_rate(epoch, optimizer)
        optimizer.learning_rate = self._a0 * self._relative_rate(epoch)

    def _initial_rate(self, epoch, optimizer):
        if self.initial_learning_rate is not None:
            return self.initial_learning_rate
        current = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
        if epoch == 0:
            return current
        # Resumed at epoch E > 0: the optimizer holds a(E - 1) = a0 * decay(E - 1).
        previous = self._relative_rate(epoch - 1)
        if previous <= 0.0:
            raise ValueError(
                f"{type(self).__name__} cannot recover the epoch-0 learning "
                f"rate when resuming at epoch {epoch}: the schedule has "
                "decayed to 0. Pass `initial_learning_rate` explicitly."
            )
        return current / previous

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(
                keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            )

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class StepDecay(_Annealing):
    """Step decay per epoch: the rate is multiplied by `factor` every `every` epochs.

    a(tau) = a0 * factor^floor(tau / every),

    tau the epoch index from 0, a0 the optimizer's learning rate at epoch 0
    (see the module docstring for resumed runs). "Reducing the learning rate
    by a half every 5 epochs" is the default; after epochs 0..11 the rate is
    a0 / 4.

    Args:
        factor: the multiplier, in (0, 1].
        every: the number of epochs between two reductions (a positive
            integer).
        initial_learning_rate: a0; None (default) takes the optimizer's rate
            when training starts at epoch 0.

    Example:

    >>> model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[keras_gdzoo.StepDecay(0.1, every=1)])
    >>> [round(a, 4) for a in history.history["learning_rate"]]
    [0.1, 0.01]
    """

    def __init__(self, factor=0.5, every=5, initial_learning_rate=None):
        super().__init__(initial_learning_rate)
        self._decay = schedules.StepDecay(1.0, factor=factor, every=every)
        self.factor = self._decay.factor
        self.every = self._decay.every

    def get_config(self):
        return {"factor": self.factor, "every": self.every, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class ExponentialDecay(_Annealing):
    """Exponential decay per epoch.

    a(tau) = a0 * exp(-k * tau),

    tau the epoch index from 0, a0 the optimizer's learning rate at epoch 0
    (see the module docstring for resumed runs).

    Args:
        k: the decay rate per epoch (>= 0).
        initial_learning_rate: a0; None (default) takes the optimizer's rate
            when training starts at epoch 0.
    """

    def __init__(self, k, initial_learning_rate=None):
        super().__init__(initial_learning_rate)
        self._decay = schedules.ExponentialDecay(1.0, k=k)
        self.k = self._decay.k

    def get_config(self):
        return {"k": self.k, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class InverseTimeDecay(_Annealing):
    """The lecture's "1/tau decay" per epoch.

    a(tau) = a0 / (1 + k * tau),

    tau the epoch index from 0, a0 the optimizer's learning rate at epoch 0
    (see the module docstring for resumed runs).

    Args:
        k: the decay rate per epoch (>= 0).
        initial_learning_rate: a0; None (default) takes the optimizer's rate
            when training starts at epoch 0.
    """

    def __init__(self, k, initial_learning_rate=None):
        super().__init__(initial_learning_rate)
        self._decay = schedules.InverseTimeDecay(1.0, k=k)
        self.k = self._decay.k

    def get_config(self):
        return {"k": self.k, **super().get_config()}
