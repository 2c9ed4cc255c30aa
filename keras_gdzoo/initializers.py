"""Random initial weights w(0): the lecture's distributions and Xavier/Glorot.

The lecture draws the initial weights from a zero-mean distribution:

* `Normal(stddev)`: N(0, sigma), sigma = `stddev`;
* `TruncatedNormal(stddev)`: N*(0, sigma), support (-2 sigma, 2 sigma), a draw
  outside it is discarded and re-drawn;
* `Uniform(limit)`: R(-a, a), a = `limit`, variance a^2 / 3;

and picks sigma or a from the layer's fan-in N_{l-1} and fan-out N_l so that
the variances of activations and of gradients stay the same from layer to
layer (Glorot & Bengio, 2010):

* `XavierNormal(activation)`: N*(0, gain * sqrt(2 / (N_{l-1} + N_l)));
* `XavierUniform(activation)`: R(-a, a), a = gain * sqrt(6 / (N_{l-1} + N_l));

with gain 1 for linear, tanh and softsign units, sqrt(2) for rectified linear
units and 4 for the logistic sigmoid.

Every class is a `keras.initializers.Initializer`, so it goes wherever Keras
takes an initializer (`kernel_initializer=`, `keras.initializers.get`), and is
registered for serialization. The Xavier variants are also reachable by name:
`kernel_initializer="xavier_normal_relu"`, `"xavier_uniform_sigmoid"`, and
`"xavier_normal"` / `"xavier_uniform"` for the tanh default.
"""

import math
import numbers
import random

import keras

from keras_gdzoo import validation

# Gain per activation, the lecture's table (Glorot & Bengio, 2010). The logistic
# sigmoid gets 4 because its slope at 0 is 1/4 where tanh's is 1.
GAINS = {
    "linear": 1.0,
    "tanh": 1.0,
    "softsign": 1.0,
    "relu": math.sqrt(2.0),
    "sigmoid": 4.0,
    "logistic": 4.0,
}


def compute_fans(shape):
    """(N_{l-1}, N_l): fan-in and fan-out of a weight tensor of shape `shape`.

    Same convention as Keras's own initializers: a Dense kernel is
    [fan_in, fan_out]; a convolution kernel [*receptive_field, in, out]
    multiplies both by the receptive-field size; a vector counts its length
    as both; a scalar counts 1.
    """
    shape = tuple(int(dim) for dim in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class _RandomInitializer(keras.initializers.Initializer):
    """Seed handling shared by the random initializers, as in Keras.

    An integer seed (or `None`, which draws one integer from Python's `random`
    at construction, so `keras.utils.set_random_seed` makes it reproducible)
    gives the same values on every call; a `keras.random.SeedGenerator` gives
    new values on each call.
    """

    def __init__(self, seed=None):
        if isinstance(seed, dict):
            seed = keras.saving.deserialize_keras_object(seed)
        if seed is not None and not isinstance(seed, keras.random.SeedGenerator):
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
                raise ValueError(
                    "Argument `seed` must be an integer, a "
                    "`keras.random.SeedGenerator` or None. "
                    f"Received: seed={seed!r}"
                )
            seed = int(seed)  # a NumPy integer too, stored (and saved) as an int
        self._init_seed = seed
        self.seed = random.randint(1, 10**9) if seed is None else seed

    def get_config(self):
        return {"seed": keras.saving.serialize_keras_object(self._init_seed)}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Normal(_RandomInitializer):
    """Normal initializer: w ~ N(0, sigma).

    Args:
        stddev: sigma, the standard deviation (> 0).
        seed: an integer, a `keras.random.SeedGenerator` or None (see
            `keras.initializers.RandomNormal`: an integer seed gives the same
            values on every call).

    Example:

    >>> init = keras_gdzoo.initializers.Normal(stddev=0.1, seed=1)
    >>> layer = keras.layers.Dense(3, kernel_initializer=init)
    """

    def __init__(self, stddev=0.05, seed=None):
        self.stddev = validation.positive_number("stddev", stddev)
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return keras.random.normal(shape, stddev=self.stddev, dtype=dtype, seed=self.seed)

    def get_config(self):
        return {"stddev": self.stddev, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class TruncatedNormal(_RandomInitializer):
    """Truncated normal initializer: w ~ N*(0, sigma) on (-2 sigma, 2 sigma).

    A normal draw outside (-2 sigma, 2 sigma) is discarded and re-drawn, which
    is what `keras.random.truncated_normal` does.

    Args:
        stddev: sigma, the standard deviation of the *underlying* normal
            (> 0); the support is (-2 * stddev, 2 * stddev).
        seed: an integer, a `keras.random.SeedGenerator` or None.

    Note:
        As in the lecture, sigma is the parameter of the normal before
        truncation, so the draws' own standard deviation is about
        0.88 * stddev (exactly sqrt(1 - 4 phi(2) / (2 Phi(2) - 1)) * stddev).
        Keras's `GlorotNormal` instead rescales sigma by 1 / 0.8796 so that the
        truncated draws have the target variance.
    """

    def __init__(self, stddev=0.05, seed=None):
        self.stddev = validation.positive_number("stddev", stddev)
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return keras.random.truncated_normal(
            shape, stddev=self.stddev, dtype=dtype, seed=self.seed
        )

    def get_config(self):
        return {"stddev": self.stddev, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class Uniform(_RandomInitializer):
    """Uniform initializer: w ~ R(-a, a), variance a^2 / 3.

    Args:
        limit: a, the half-width of the interval (> 0).
        seed: an integer, a `keras.random.SeedGenerator` or None.
    """

    def __init__(self, limit=0.05, seed=None):
        self.limit = validation.positive_number("limit", limit)
        super().__init__(seed=seed)

    def __call__(self, shape, dtype=None):
        return keras.random.uniform(
            shape, minval=-self.limit, maxval=self.limit, dtype=dtype, seed=self.seed
        )

    def get_config(self):
        return {"limit": self.limit, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class XavierNormal(_RandomInitializer):
    """Xavier/Glorot normal initializer (Glorot & Bengio, 2010).

    w ~ N*(0, sigma), sigma = gain * sqrt(2 / (N_{l-1} + N_l)),

    the truncated normal of `TruncatedNormal` (support (-2 sigma, 2 sigma)),
    with N_{l-1} the fan-in and N_l the fan-out of the weight tensor (see
    `compute_fans`) and gain set by `activation`: 1 for "linear", "tanh",
    "softsign"; sqrt(2) for "relu"; 4 for "sigmoid" / "logistic".

    Also reachable by name: "xavier_normal" (tanh), "xavier_normal_relu",
    "xavier_normal_sigmoid", ... .

    Args:
        activation: the activation of the layer the weights feed, one of
            "linear", "tanh", "softsign", "relu", "sigmoid", "logistic".
        seed: an integer, a `keras.random.SeedGenerator` or None.

    Example:

    >>> layer = keras.layers.Dense(64, activation="relu",
    ...                            kernel_initializer="xavier_normal_relu")

    Note:
        sigma is that of the normal *before* truncation, as in the lecture, so
        the draws' variance is about 0.77 * gain^2 * 2 / (N_{l-1} + N_l).
        Keras's `GlorotNormal` rescales sigma so that the variance is exactly
        2 / (N_{l-1} + N_l).
    """

    def __init__(self, activation="tanh", seed=None):
        self.activation = validation.choice("activation", activation, tuple(GAINS))
        super().__init__(seed=seed)

    def stddev(self, shape):
        """sigma for a weight tensor of shape `shape`."""
        fan_in, fan_out = compute_fans(shape)
        return GAINS[self.activation] * math.sqrt(2.0 / (fan_in + fan_out))

    def __call__(self, shape, dtype=None):
        return keras.random.truncated_normal(
            shape, stddev=self.stddev(shape), dtype=dtype, seed=self.seed
        )

    def get_config(self):
        return {"activation": self.activation, **super().get_config()}


@keras.saving.register_keras_serializable(package="keras_gdzoo")
class XavierUniform(_RandomInitializer):
    """Xavier/Glorot uniform initializer (Glorot & Bengio, 2010).

    w ~ R(-a, a), a = gain * sqrt(6 / (N_{l-1} + N_l)),

    with N_{l-1} the fan-in and N_l the fan-out of the weight tensor (see
    `compute_fans`) and gain set by `activation`: 1 for "linear", "tanh",
    "softsign"; sqrt(2) for "relu"; 4 for "sigmoid" / "logistic". The variance
    a^2 / 3 = gain^2 * 2 / (N_{l-1} + N_l) matches `XavierNormal`'s sigma^2.

    Also reachable by name: "xavier_uniform" (tanh), "xavier_uniform_relu",
    "xavier_uniform_sigmoid", ... .

    Args:
        activation: the activation of the layer the weights feed, one of
            "linear", "tanh", "softsign", "relu", "sigmoid", "logistic".
        seed: an integer, a `keras.random.SeedGenerator` or None.

    Example:

    >>> layer = keras.layers.Dense(64, activation="sigmoid",
    ...                            kernel_initializer="xavier_uniform_sigmoid")
    """

    def __init__(self, activation="tanh", seed=None):
        self.activation = validation.choice("activation", activation, tuple(GAINS))
        super().__init__(seed=seed)

    def limit(self, shape):
        """a for a weight tensor of shape `shape`."""
        fan_in, fan_out = compute_fans(shape)
        return GAINS[self.activation] * math.sqrt(6.0 / (fan_in + fan_out))

    def __call__(self, shape, dtype=None):
        limit = self.limit(shape)
        return keras.random.uniform(
            shape, minval=-limit, maxval=limit, dtype=dtype, seed=self.seed
        )

    def get_config(self):
        return {"activation": self.activation, **super().get_config()}


class _XavierAlias:
    """What a name such as "xavier_normal_relu" resolves to.

    `keras.initializers.get("xavier_normal_relu")` deserializes
    {"class_name": "xavier_normal_relu", "config": {}}: it looks the name up in
    Keras's global custom objects and calls `from_config` on what it finds.
    This object answers with `XavierNormal(activation="relu")`, so the layer
    holds (and later serializes) an ordinary `XavierNormal`. Calling it, like
    calling the class that `keras.initializers.deserialize` returns for a
    registered name, builds that initializer too.
    """

    def __init__(self, initializer_class, activation):
        self.initializer_class = initializer_class
        self.activation = activation

    def from_config(self, config):
        return self.initializer_class(**{"activation": self.activation, **config})

    def __call__(self, seed=None):
        return self.from_config({"seed": seed})


def _register_aliases():
    custom_objects = keras.saving.get_custom_objects()
    for prefix, initializer_class in (
        ("xavier_normal", XavierNormal),
        ("xavier_uniform", XavierUniform),
    ):
        custom_objects[prefix] = _XavierAlias(initializer_class, "tanh")
        for activation in GAINS:
            custom_objects[f"{prefix}_{activation}"] = _XavierAlias(
                initializer_class, activation
            )


_register_aliases()
