"""Built-in problems: data against closed forms, seeded models, goals, loaders."""

import sys

import keras
import numpy as np
import pytest

import keras_gdzoo as gz
from keras_gdzoo import problems


def _weights(model):
    return [w.numpy() for w in model.weights]


def test_sin_is_one_period_of_a_sine():
    problem = problems.get("sin")
    x = np.linspace(-1, 1, 41).reshape(-1, 1)
    np.testing.assert_allclose(problem.x_train, x, atol=1e-7)
    np.testing.assert_allclose(problem.y_train, np.sin(np.pi * x), atol=1e-6)
    assert problem.loss == "mse" and problem.goal == 0.002  # MATLAB's SIN goal
    assert problem.batch_size is None and problem.n == 41
    assert problems.get("sin", n=11).x_train.shape == (11, 1)


def test_parity_targets_count_the_ones():
    problem = problems.get("parity")
    assert problem.x_train.shape == (8, 3) and problem.y_train.shape == (8, 1)
    assert problem.goal == 0.001  # MATLAB's PARITY goal
    rows = {tuple(row) for row in problem.x_train.astype(int)}
    assert len(rows) == 8 and set(np.unique(problem.x_train)) == {-1.0, 1.0}
    for row, target in zip(problem.x_train, problem.y_train[:, 0]):
        ones = sum(1 for value in row if value > 0)
        assert target == (1.0 if ones % 2 else -1.0)


def test_spirals_are_mirrored_through_the_origin():
    problem = problems.get("spirals")
    assert problem.x_train.shape == (194, 2) and problem.y_train.shape == (194, 1)
    first, second = problem.x_train[:97], problem.x_train[97:]
    np.testing.assert_allclose(second, -first)
    np.testing.assert_array_equal(problem.y_train[:97], 1.0)
    np.testing.assert_array_equal(problem.y_train[97:], -1.0)
    # Lang & Witbrock: point i at angle i*pi/16, radius proportional to 104 - i.
    i = 5
    angle, radius = i * np.pi / 16, (104 - i) / 104
    np.testing.assert_allclose(first[i], [radius * np.sin(angle), radius * np.cos(angle)],
                               rtol=1e-6)


def test_sinc_is_sin_10x_over_10x():
    problem = problems.get("sinc", n=101)
    x = problem.x_train[:, 0].astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.where(x == 0, 1.0, np.sin(10 * x) / (10 * x))
    np.testing.assert_allclose(problem.y_train[:, 0], expected, atol=1e-6)
    assert problem.y_train[50, 0] == 1.0  # x = 0 sits in the middle of 101 points
    assert problems.get("sinc").n == 20000


@pytest.mark.parametrize("name, weights", [
    ("sin", 1 * 5 + 5 + 5 * 1 + 1),
    ("parity", 3 * 10 + 10 + 10 * 10 + 10 + 10 + 1),
    ("spirals", 2 * 20 + 20 + 20 * 20 + 20 + 20 + 1),
])
def test_model_size_and_output_shape(name, weights):
    problem = problems.get(name)
    model = problem.build_model(0)
    assert model.count_params() == weights
    assert model(problem.x_train).shape == problem.y_train.shape


def test_same_seed_same_initial_weights():
    problem = problems.get("parity")
    first = _weights(problem.build_model(3))
    keras.utils.clear_session()
    keras.utils.set_random_seed(123)  # global seeding must not matter
    again = _weights(problem.build_model(3))
    other = _weights(problem.build_model(4))
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, c) for a, c in zip(first, other) if a.ndim == 2]
    assert all(not np.array_equal(a, c) for a, c in kernels)
    # Layers of the same shape do not share their draws.
    assert not np.array_equal(first[2][:10], first[2][10:20])


def test_get_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match="Received: name='nope'"):
        problems.get("nope")
    with pytest.raises(ValueError, match="does not take option `n`"):
        problems.get("parity", n=3)
    with pytest.raises(ValueError, match="Argument `n` must be an integer >= 2"):
        problems.get("sin", n=1)
    problem = problems.get("sin")
    assert problems.get(problem) is problem
    assert problems.names() == ["sin", "parity", "spirals", "sinc", "digits", "mnist"]


def test_levenberg_marquardt_reaches_the_sin_goal():
    """MATLAB's benchmark: LM meets the SIN goal well within its epochs."""
    problem = problems.get("sin")
    trainer = gz.wrap(problem.build_model(0))
    trainer.compile(optimizer=gz.LevenbergMarquardt(), loss=problem.loss)
    trainer.fit(problem.x_train, problem.y_train, batch_size=problem.n, epochs=30, verbose=0)
    prediction = trainer.model.predict(problem.x_train, verbose=0)
    assert np.mean((prediction - problem.y_train) ** 2) <= problem.goal


def test_digits():
    pytest.importorskip("sklearn")
    problem = problems.get("digits")
    assert problem.x_train.shape[1] == 64 and problem.x_val.shape[1] == 64
    assert len(problem.x_train) + len(problem.x_val) == 1797
    assert problem.x_train.min() >= 0 and problem.x_train.max() <= 1
    assert set(np.unique(problem.y_train)) == set(range(10))
    model = problem.build_model(0)
    probabilities = model(problem.x_train[:5]).numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        problems.get("digits")


def test_mnist_without_tensorflow_datasets_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(ImportError, match=r"keras_gdzoo\[datasets\]"):
        problems.get("mnist")


def test_mnist_from_tfds(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with pytest.raises(FileNotFoundError, match="MNIST is not prepared in"):
        problems.get("mnist", data_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=20):
        problem = problems.get("mnist", data_dir=str(tmp_path))
    assert problem.x_train.shape == (20, 784) and problem.x_train.dtype == np.float32
    assert problem.y_train.shape == (20,) and problem.x_val.shape == (20, 784)
    assert 0.0 <= problem.x_train.min() and problem.x_train.max() <= 1.0
    assert problem.batch_size == 128
    assert problem.build_model(0)(problem.x_train).shape == (20, 10)


# -- 2-D surfaces (gdzoo trajectories) ---------------------------------------------
def test_rosenbrock_is_scipys():
    optimize = pytest.importorskip("scipy.optimize")
    surface = problems.SURFACES["rosenbrock"]
    rng = np.random.default_rng(0)
    for w in rng.uniform(-2, 2, size=(5, 2)):
        np.testing.assert_allclose(surface.function(w), optimize.rosen(w), rtol=1e-12)
    grid = rng.uniform(-2, 2, size=(2, 4, 3))  # the contour plots pass grids
    np.testing.assert_allclose(surface.function(grid), optimize.rosen(grid), rtol=1e-12)


@pytest.mark.parametrize("name, value_at", [
    # closed forms at a point off the minimum
    ("quadratic", lambda x, y: (x**2 + 10 * y**2) / 2),
    ("beale", lambda x, y: (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
     + (2.625 - x + x * y**3) ** 2),
    ("saddle", lambda x, y: x**2 - y**2),
])
def test_surfaces_match_their_formulas(name, value_at):
    surface = problems.SURFACES[name]
    for point in ([0.3, -0.7], [2.0, 0.25], list(surface.start)):
        assert float(surface.function(np.array(point))) == pytest.approx(value_at(*point),
                                                                          rel=1e-12)


@pytest.mark.parametrize("name", ["quadratic", "rosenbrock", "beale"])
def test_surface_minimum_is_a_zero_of_the_gradient(name):
    tf = pytest.importorskip("tensorflow")
    surface = problems.SURFACES[name]
    w = tf.Variable(surface.minimum, dtype="float64")
    with tf.GradientTape() as tape:
        value = surface.function(w)
    np.testing.assert_allclose(tape.gradient(value, w).numpy(), 0.0, atol=1e-12)
    assert float(value) == 0.0
    np.testing.assert_allclose(surface.residuals(tf.constant(surface.minimum, "float64")), 0.0,
                               atol=1e-12)
    # The start is away from the minimum, inside the plotted window.
    assert float(surface.function(np.array(surface.start))) > 0
    assert surface.xlim[0] < surface.start[0] < surface.xlim[1]
    assert surface.ylim[0] < surface.start[1] < surface.ylim[1]


def test_saddle_has_no_minimum_or_residual_form():
    surface = problems.SURFACES["saddle"]
    assert surface.minimum is None and surface.residuals is None
    assert set(problems.SURFACES) == {"quadratic", "rosenbrock", "beale", "saddle"}
