"""Initializers: distributions, Xavier/Glorot scaling, seeds, names, configs.

Expected values come from the lecture's formulas written out here, SciPy's
distributions (moments and Kolmogorov-Smirnov tests) and Keras's own
initializers where the arithmetic coincides (same random call, same seed).
"""

import math

import keras
import numpy as np
import pytest
from scipy import stats

import keras_gdzoo as gz

# The lecture's gain table (Glorot & Bengio, 2010), transcribed independently.
LECTURE_GAINS = {
    "linear": 1.0,
    "tanh": 1.0,
    "softsign": 1.0,
    "relu": math.sqrt(2.0),
    "sigmoid": 4.0,
    "logistic": 4.0,
}


SHAPE = (400, 600)  # fan_in + fan_out = 1000; 240,000 draws
SEED = 1234


def _draw(initializer, shape=SHAPE):
    return keras.ops.convert_to_numpy(initializer(shape)).astype(np.float64).ravel()


def _check_sample(sample, distribution):
    """Mean, standard deviation and shape of `sample` against a SciPy law.

    Tolerances are 5 standard errors: for the mean sigma / sqrt(n), for the
    standard deviation sqrt(mu4 - sigma^4) / (2 sigma sqrt(n)).
    """
    n = sample.size
    sigma = distribution.std()
    mu4 = distribution.moment(4)  # the mean is 0, so raw = central moment
    assert abs(sample.mean()) < 5 * sigma / math.sqrt(n)
    std_error = math.sqrt(mu4 - sigma**4) / (2 * sigma * math.sqrt(n))
    assert abs(sample.std() - sigma) < 5 * std_error
    assert stats.kstest(sample, distribution.cdf).pvalue > 1e-3


def test_normal_statistics():
    sample = _draw(gz.initializers.Normal(stddev=0.3, seed=SEED))
    _check_sample(sample, stats.norm(scale=0.3))


def test_truncated_normal_redraws_outside_two_sigma():
    stddev = 0.3
    sample = _draw(gz.initializers.TruncatedNormal(stddev=stddev, seed=SEED))
    # The lecture's N*(0, sigma): the normal with parameter sigma, kept on
    # (-2 sigma, 2 sigma); its own std is about 0.88 sigma.
    _check_sample(sample, stats.truncnorm(-2.0, 2.0, scale=stddev))
    assert np.abs(sample).max() < 2 * stddev
    # Re-drawn, not clipped: no pile-up at the bounds, yet the range is used.
    assert np.abs(sample).max() > 0.99 * 2 * stddev
    assert np.mean(np.abs(sample) > 0.999 * 2 * stddev) < 1e-3


def test_uniform_statistics():
    limit = 0.3
    sample = _draw(gz.initializers.Uniform(limit=limit, seed=SEED))
    _check_sample(sample, stats.uniform(loc=-limit, scale=2 * limit))
    assert np.abs(sample).max() <= limit
    assert np.abs(sample).max() > 0.999 * limit


@pytest.mark.parametrize("activation", list(LECTURE_GAINS))
def test_xavier_normal_statistics_per_activation(activation):
    sigma = LECTURE_GAINS[activation] * math.sqrt(2.0 / (SHAPE[0] + SHAPE[1]))
    sample = _draw(gz.initializers.XavierNormal(activation, seed=SEED))
    _check_sample(sample, stats.truncnorm(-2.0, 2.0, scale=sigma))
    assert np.abs(sample).max() < 2 * sigma


@pytest.mark.parametrize("activation", list(LECTURE_GAINS))
def test_xavier_uniform_statistics_per_activation(activation):
    limit = LECTURE_GAINS[activation] * math.sqrt(6.0 / (SHAPE[0] + SHAPE[1]))
    sample = _draw(gz.initializers.XavierUniform(activation, seed=SEED))
    _check_sample(sample, stats.uniform(loc=-limit, scale=2 * limit))
    assert np.abs(sample).max() <= limit
    assert np.abs(sample).max() > 0.999 * limit
    # Variance a^2/3 = gain^2 * 2/(N_{l-1} + N_l), the lecture's target.
    target_variance = LECTURE_GAINS[activation] ** 2 * 2.0 / (SHAPE[0] + SHAPE[1])
    assert sample.var() == pytest.approx(target_variance, rel=0.02)


def test_default_activation_is_tanh():
    assert gz.initializers.XavierNormal().activation == "tanh"
    assert gz.initializers.XavierUniform().activation == "tanh"


@pytest.mark.parametrize("shape", [(7, 5), (3, 3, 16, 32), (5, 8, 4), (2, 3, 3, 4, 6), (9,)])
def test_xavier_fans_match_keras_glorot(shape):
    """tanh's gain is 1, so XavierUniform is Keras's GlorotUniform: the same
    uniform call with the same limit and seed gives the same numbers, which
    checks the fan-in / fan-out of Dense and convolution kernels."""
    ours = keras.ops.convert_to_numpy(gz.initializers.XavierUniform("tanh", seed=3)(shape))
    keras_values = keras.ops.convert_to_numpy(keras.initializers.GlorotUniform(seed=3)(shape))
    np.testing.assert_allclose(ours, keras_values, rtol=1e-6)


def test_xavier_normal_conv_kernel_matches_truncated_normal_with_lecture_sigma():
    shape = (3, 3, 16, 32)
    fan_in, fan_out = 3 * 3 * 16, 3 * 3 * 32
    sigma = math.sqrt(2.0) * math.sqrt(2.0 / (fan_in + fan_out))
    ours = keras.ops.convert_to_numpy(gz.initializers.XavierNormal("relu", seed=5)(shape))
    reference = keras.ops.convert_to_numpy(
        keras.initializers.TruncatedNormal(stddev=sigma, seed=5)(shape)
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-6)


def test_dtype_argument():
    values = gz.initializers.XavierNormal(seed=1)((4, 3), dtype="float64")
    assert keras.backend.standardize_dtype(values.dtype) == "float64"
    values = gz.initializers.Uniform(0.1, seed=1)((4, 3))
    assert keras.backend.standardize_dtype(values.dtype) == "float32"


ALL_INITIALIZERS = [
    lambda seed: gz.initializers.Normal(0.2, seed=seed),
    lambda seed: gz.initializers.TruncatedNormal(0.2, seed=seed),
    lambda seed: gz.initializers.Uniform(0.2, seed=seed),
    lambda seed: gz.initializers.XavierNormal("relu", seed=seed),
    lambda seed: gz.initializers.XavierUniform("sigmoid", seed=seed),
]


@pytest.mark.parametrize("make", ALL_INITIALIZERS)
def test_integer_seed_is_deterministic(make):
    first = keras.ops.convert_to_numpy(make(42)((20, 30)))
    np.testing.assert_array_equal(first, keras.ops.convert_to_numpy(make(42)((20, 30))))
    # As in Keras: an integer seed gives the same values on every call.
    initializer = make(42)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(initializer((20, 30))),
        keras.ops.convert_to_numpy(initializer((20, 30))),
    )
    assert not np.array_equal(first, keras.ops.convert_to_numpy(make(43)((20, 30))))


@pytest.mark.parametrize("make", ALL_INITIALIZERS)
def test_seed_generator_advances_and_reproduces(make):
    initializer = make(keras.random.SeedGenerator(7))
    a = keras.ops.convert_to_numpy(initializer((20, 30)))
    b = keras.ops.convert_to_numpy(initializer((20, 30)))
    assert not np.array_equal(a, b)
    again = make(keras.random.SeedGenerator(7))
    np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(again((20, 30))))


def test_unseeded_follows_keras_set_random_seed():
    keras.utils.set_random_seed(11)
    a = keras.ops.convert_to_numpy(gz.initializers.XavierNormal()((10, 10)))
    keras.utils.set_random_seed(11)
    b = keras.ops.convert_to_numpy(gz.initializers.XavierNormal()((10, 10)))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("activation", list(LECTURE_GAINS))
@pytest.mark.parametrize("family", ["normal", "uniform"])
def test_string_names_in_a_dense_layer(family, activation):
    layer = keras.layers.Dense(50, kernel_initializer=f"xavier_{family}_{activation}")
    layer.build((None, 30))
    expected_class = (
        gz.initializers.XavierNormal if family == "normal" else gz.initializers.XavierUniform
    )
    assert type(layer.kernel_initializer) is expected_class
    assert layer.kernel_initializer.activation == activation
    kernel = keras.ops.convert_to_numpy(layer.kernel)
    gain = LECTURE_GAINS[activation]
    bound = gain * (
        2 * math.sqrt(2.0 / 80) if family == "normal" else math.sqrt(6.0 / 80)
    )
    assert np.abs(kernel).max() <= bound
    assert np.abs(kernel).max() > 0.5 * bound


@pytest.mark.parametrize(
    "name, expected_class",
    [
        ("xavier_normal", gz.initializers.XavierNormal),
        ("xavier_uniform", gz.initializers.XavierUniform),
    ],
)
def test_bare_xavier_names_mean_tanh(name, expected_class):
    initializer = keras.initializers.get(name)
    assert type(initializer) is expected_class
    assert initializer.activation == "tanh"


def test_registered_names_resolve():
    initializer = keras.initializers.get("keras_gdzoo>TruncatedNormal")
    assert type(initializer) is gz.initializers.TruncatedNormal
    initializer = keras.initializers.get(
        {"class_name": "xavier_uniform_relu", "config": {"seed": 9}}
    )
    assert (initializer.activation, initializer.get_config()["seed"]) == ("relu", 9)
    # Keras's own names are untouched.
    assert type(keras.initializers.get("normal")) is keras.initializers.RandomNormal
    assert type(keras.initializers.get("uniform")) is keras.initializers.RandomUniform


def test_string_initializer_survives_keras_file(tmp_path):
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, kernel_initializer="xavier_uniform_relu")]
    )
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    initializer = loaded.layers[0].kernel_initializer
    assert type(initializer) is gz.initializers.XavierUniform
    assert initializer.activation == "relu"
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.layers[0].kernel),
        keras.ops.convert_to_numpy(model.layers[0].kernel),
    )


@pytest.mark.parametrize("make", ALL_INITIALIZERS)
def test_config_round_trip(make):
    initializer = make(21)
    clone = type(initializer).from_config(initializer.get_config())
    assert clone.get_config() == initializer.get_config()
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert type(restored) is type(initializer)
    assert restored.get_config() == initializer.get_config()
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(restored((6, 5))),
        keras.ops.convert_to_numpy(initializer((6, 5))),
    )


def test_config_round_trip_with_seed_generator():
    initializer = gz.initializers.Normal(0.1, seed=keras.random.SeedGenerator(3))
    restored = keras.initializers.deserialize(keras.initializers.serialize(initializer))
    assert isinstance(restored.seed, keras.random.SeedGenerator)


@pytest.mark.parametrize("cls", [gz.initializers.Normal, gz.initializers.TruncatedNormal])
@pytest.mark.parametrize("value", [0, -0.1, float("nan"), float("inf"), "0.1", True])
def test_invalid_stddev(cls, value):
    with pytest.raises(ValueError, match=r"Argument `stddev` must be a positive number"):
        cls(stddev=value)


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), None])
def test_invalid_limit(value):
    with pytest.raises(ValueError, match=r"Argument `limit` must be a positive number"):
        gz.initializers.Uniform(limit=value)


@pytest.mark.parametrize("cls", [gz.initializers.XavierNormal, gz.initializers.XavierUniform])
@pytest.mark.parametrize("value", ["elu", "ReLU", None, 1])
def test_invalid_activation(cls, value):
    message = r"Argument `activation` must be one of .*Received: activation="
    with pytest.raises(ValueError, match=message):
        cls(activation=value)


@pytest.mark.parametrize("value", ["abc", 1.5, True])
def test_invalid_seed(value):
    with pytest.raises(ValueError, match=r"Argument `seed` .*Received: seed="):
        gz.initializers.Normal(0.1, seed=value)


def test_error_quotes_the_value():
    with pytest.raises(ValueError, match=r"Received: stddev=0\b"):
        gz.initializers.Normal(stddev=0)
    with pytest.raises(ValueError, match=r"Received: activation='elu'"):
        gz.initializers.XavierNormal(activation="elu")


def test_numpy_scalars_are_accepted():
    """np.float32(0.1) is a number like 0.1: same config, same draws."""
    for cls, argument in [
        (gz.initializers.Normal, "stddev"),
        (gz.initializers.TruncatedNormal, "stddev"),
        (gz.initializers.Uniform, "limit"),
    ]:
        ours = cls(**{argument: np.float32(0.25)}, seed=np.int64(7))
        plain = cls(**{argument: 0.25}, seed=7)
        assert ours.get_config() == plain.get_config()
        assert type(ours.get_config()[argument]) is float
        assert type(ours.get_config()["seed"]) is int
        np.testing.assert_array_equal(_draw(ours, (3, 4)), _draw(plain, (3, 4)))


@pytest.mark.parametrize("value", [float("inf"), -float("inf"), float("nan"), np.float32("inf")])
def test_non_finite_values_are_refused_by_name(value):
    for cls, argument in [(gz.initializers.Normal, "stddev"), (gz.initializers.Uniform, "limit")]:
        with pytest.raises(ValueError, match=rf"Argument `{argument}` must .*Received: {argument}="):
            cls(**{argument: value})
