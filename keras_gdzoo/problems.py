"""Built-in benchmark problems: data, a seeded model builder, a loss and a goal.

The first two are the benchmark MATLAB uses to advise which training function
to pick (MathWorks, Deep Learning Toolbox, "Choose a Multilayer Neural Network
Training Function"; Demuth, Beale & Hagan):

* ``"sin"``: a 1-5-1 network (tanh hidden layer, linear output) fitted to one
  period of a sine wave, trained until the mean squared error is below 0.002.
  MATLAB's conclusion: Levenberg-Marquardt is fastest, "on the average, it is
  over four times faster than the next fastest algorithm".
* ``"parity"``: the 3-bit parity problem, a 3-10-10-1 network with tanh in all
  layers, error goal 0.001 (MSE). MATLAB finds Rprop fastest there.

and four more:

* ``"spirals"``: Lang & Witbrock's (1988) two intertwined spirals, 194 points.
* ``"sinc"``: a 1-20-1 fit of sinc(10x) = sin(10x)/(10x) on [-1, 1].
* ``"digits"``: scikit-learn's bundled 8x8 digits (offline; needs
  scikit-learn).
* ``"mnist"``: MNIST through `tensorflow_datasets`, read from a local
  data directory (nothing is downloaded).

Every problem builds its network from a seed, so every method compared on
a problem starts from the same initial weights for the same seed:

>>> import keras_gdzoo as gz
>>> problem = gz.problems.get("sin")
>>> model = problem.build_model(seed=0)
>>> trainer = gz.wrap(model)
>>> trainer.compile(optimizer=gz.LevenbergMarquardt(), loss=problem.loss)
>>> history = trainer.fit(problem.x_train, problem.y_train,
...                       batch_size=problem.n, epochs=3, verbose=0)
>>> len(history.history["loss"])
3

The 2-D test functions of `gdzoo trajectories` are here too, as `Surface`s
in `SURFACES` (`"quadratic"`, `"rosenbrock"`, `"beale"`, `"saddle"`), each
with its residual form where it is a sum of squares (E = 1/2 sum e^2):

>>> import numpy as np
>>> surface = gz.problems.SURFACES["rosenbrock"]
>>> float(surface.function(np.array([1.0, 1.0])))
0.0
"""

import dataclasses
import inspect
import math
import numbers
from typing import Callable

import keras
import numpy as np


@dataclasses.dataclass
class Problem:
    """A training problem: data, a model builder, the loss and an error goal.

    Attributes:
        name: the short name `get` accepts.
        description: one line for tables and plot titles.
        x_train, y_train: the training set (NumPy arrays).
        builder: function `seed -> keras.Model` (not compiled); use
            `build_model`.
        loss: the loss to compile with (a Keras loss name).
        goal: the error goal on the training loss; a run "succeeds" when the
            training loss is at or below it.
        epochs: default number of epochs.
        batch_size: default batch size; `None` means batch mode (the whole
            training set is one batch, one iteration per epoch).
        x_val, y_val: optional validation set.
        metrics: extra metrics worth showing (for example accuracy).
        reference: where the problem comes from.
    """

    name: str
    description: str
    x_train: np.ndarray
    y_train: np.ndarray
    builder: Callable
    loss: str
    goal: float
    epochs: int
    batch_size: int = None
    x_val: np.ndarray = None
    y_val: np.ndarray = None
    metrics: tuple = ()
    reference: str = ""

    @property
    def n(self):
        """The number of training examples."""
        return len(self.x_train)

    def build_model(self, seed=0):
        """A new, uncompiled model; the same initial weights for the same seed."""
        return self.builder(int(seed))


def _mlp(inputs, layers, seed, name):
    """Dense layers [(units, activation), ...] with seeded Xavier weights.

    The kernels are `keras.initializers.GlorotUniform` (Xavier's uniform
    rule, gain 1, as the lecture prescribes for tanh and linear units), each
    layer with its own seed derived from `seed`; the biases start at zero.
    """
    model = keras.Sequential(name=name)
    model.add(keras.Input(shape=(inputs,)))
    for index, (units, activation) in enumerate(layers):
        model.add(
            keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=keras.initializers.GlorotUniform(seed=1000 * seed + index),
                bias_initializer="zeros",
            )
        )
    return model


def _check_count(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(
            f"Argument `{name}` must be an integer >= {minimum}. Received: {name}={value!r}"
        )
    return int(value)


def sin(n=41):
    """One period of a sine wave, the MATLAB benchmark's SIN problem.

    x = n evenly spaced points in [-1, 1], y = sin(pi*x); a 1-5-1 network
    (tanh hidden layer, linear output) trained to MSE <= 0.002.

    Note: the MATLAB page does not state its sample count or range; 41 points
    (a step of 0.05) over one period are used here.
    """
    n = _check_count("n", n, minimum=2)
    x = np.linspace(-1.0, 1.0, n, dtype="float32").reshape(-1, 1)
    y = np.sin(np.pi * x).astype("float32")
    return Problem(
        name="sin",
        description=f"SIN: 1-5-1 tanh/linear fit of one sine period ({n} points)",
        x_train=x,
        y_train=y,
        builder=lambda seed: _mlp(1, [(5, "tanh"), (1, "linear")], seed, "sin_1_5_1"),
        loss="mse",
        goal=0.002,
        epochs=1000,
        reference="MathWorks, 'Choose a Multilayer Neural Network Training Function' (SIN)",
    )


def parity(bits=3):
    """The `bits`-bit parity problem, the MATLAB benchmark's PARITY problem.

    All 2**bits input patterns with entries in {-1, 1}; the target is 1 when
    an odd number of inputs are 1 and -1 otherwise. A bits-10-10-1 network
    with tanh in all layers, trained to MSE <= 0.001.
    """
    bits = _check_count("bits", bits)
    patterns = np.array(
        [[(index >> bit) & 1 for bit in range(bits)] for index in range(2**bits)], dtype="float32"
    )
    odd = patterns.sum(axis=1, keepdims=True) % 2
    return Problem(
        name="parity",
        description=f"PARITY: {bits}-10-10-1 tanh network on {bits}-bit parity",
        x_train=2.0 * patterns - 1.0,
        y_train=(2.0 * odd - 1.0).astype("float32"),
        builder=lambda seed: _mlp(
            bits, [(10, "tanh"), (10, "tanh"), (1, "tanh")], seed, f"parity_{bits}_10_10_1"
        ),
        loss="mse",
        goal=0.001,
        epochs=500,
        reference="MathWorks, 'Choose a Multilayer Neural Network Training Function' (PARITY)",
    )


def spirals(points=97):
    """Lang & Witbrock's (1988) two-spirals problem.

    Spiral 1 has the points r_i (sin(phi_i), cos(phi_i)), phi_i = i*pi/16,
    r_i = (104 - i)/104, i = 0..points-1; spiral 2 is spiral 1 mirrored
    through the origin. Targets are 1 and -1; a 2-20-20-1 tanh network is
    trained on the MSE to 0.01.

    Note: the original radius is 6.5 (104 - i)/104; the factor 6.5 is dropped
    so that the inputs lie in [-1, 1].
    """
    points = _check_count("points", points)
    index = np.arange(points, dtype="float64")
    angle = index * np.pi / 16.0
    radius = (104.0 - index) / 104.0
    spiral = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    x = np.concatenate([spiral, -spiral]).astype("float32")
    y = np.concatenate([np.ones(points), -np.ones(points)]).reshape(-1, 1).astype("float32")
    return Problem(
        name="spirals",
        description=f"Two spirals: 2-20-20-1 tanh network, {2 * points} points",
        x_train=x,
        y_train=y,
        builder=lambda seed: _mlp(
            2, [(20, "tanh"), (20, "tanh"), (1, "tanh")], seed, "spirals_2_20_20_1"
        ),
        loss="mse",
        goal=0.01,
        epochs=1000,
        reference="Lang & Witbrock (1988), Learning to tell two spirals apart",
    )


def sinc(n=20000):
    """A 1-20-1 fit of sinc(10x) = sin(10x)/(10x) (1 at x = 0) on [-1, 1].

    n evenly spaced points; tanh hidden layer, linear output, MSE goal 1e-4.
    With the default n = 20,000 this is the size where a Jacobian taken
    per example rather than for the whole batch matters.
    """
    n = _check_count("n", n, minimum=2)
    x = np.linspace(-1.0, 1.0, n).reshape(-1, 1)
    y = np.sinc(10.0 * x / np.pi)  # NumPy's sinc(t) is sin(pi t)/(pi t)
    return Problem(
        name="sinc",
        description=f"sinc(10x): 1-20-1 tanh/linear fit, {n} points",
        x_train=x.astype("float32"),
        y_train=y.astype("float32"),
        builder=lambda seed: _mlp(1, [(20, "tanh"), (1, "linear")], seed, "sinc_1_20_1"),
        loss="mse",
        goal=1e-4,
        epochs=500,
        reference="sinc curve fit",
    )


def digits(validation_split=0.2):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline).

    Pixels scaled to [0, 1]; a 64-32-10 network (tanh hidden layer, softmax
    output) trained on the sparse categorical cross-entropy to 0.05. The last
    `validation_split` of a seeded shuffle is held out for validation.
    """
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(
            "Argument `validation_split` must be in [0, 1). "
            f"Received: validation_split={validation_split!r}"
        )
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            "The 'digits' problem needs scikit-learn: `pip install scikit-learn` "
            "(or `pip install keras_gdzoo[test]`)."
        ) from error
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    cut = len(x) - int(round(validation_split * len(x)))
    return Problem(
        name="digits",
        description=f"digits: 64-32-10 tanh/softmax, {cut} training images",
        x_train=x[:cut],
        y_train=y[:cut],
        x_val=x[cut:] if cut < len(x) else None,
        y_val=y[cut:] if cut < len(x) else None,
        builder=lambda seed: _mlp(64, [(32, "tanh"), (10, "softmax")], seed, "digits_64_32_10"),
        loss="sparse_categorical_crossentropy",
        goal=0.05,
        epochs=200,
        metrics=("accuracy",),
        reference="scikit-learn load_digits (UCI optical recognition of handwritten digits)",
    )


def mnist(data_dir=None):
    """MNIST from a local `tensorflow_datasets` directory (never downloaded).

    Pixels scaled to [0, 1] and flattened; a 784-100-10 network (tanh hidden
    layer, softmax output) trained on the sparse categorical cross-entropy to
    0.1, in mini-batches of 128 (the lecture's advice for large problems);
    the 10,000 test images are the validation set.

    Args:
        data_dir: the `tensorflow_datasets` data directory that holds
            `mnist/` (default: tfds's own, `~/tensorflow_datasets`). Prepare
            it once with `tfds.builder("mnist", data_dir=...).download_and_prepare()`.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as error:
        raise ImportError(
            "The 'mnist' problem needs tensorflow_datasets: "
            "`pip install keras_gdzoo[datasets]`."
        ) from error
    try:
        splits = tfds.load(
            "mnist",
            split=["train", "test"],
            data_dir=data_dir,
            download=False,
            as_supervised=True,
        )
    except AssertionError as error:  # tfds's "could not find data" error
        where = data_dir or "the default tensorflow_datasets directory"
        raise FileNotFoundError(
            f"MNIST is not prepared in {where}. Prepare it once with "
            "`tfds.builder('mnist', data_dir=DIR).download_and_prepare()` and pass "
            "that DIR as `data_dir` (`--data-dir` for the gdzoo command)."
        ) from error
    (x_train, y_train), (x_val, y_val) = (_as_arrays(split) for split in splits)
    return Problem(
        name="mnist",
        description=f"MNIST: 784-100-10 tanh/softmax, {len(x_train)} training images",
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        builder=lambda seed: _mlp(784, [(100, "tanh"), (10, "softmax")], seed, "mnist_784_100_10"),
        loss="sparse_categorical_crossentropy",
        goal=0.1,
        epochs=10,
        batch_size=128,
        metrics=("accuracy",),
        reference="LeCun et al. (1998), through tensorflow_datasets",
    )


def _as_arrays(dataset):
    images, labels = [], []
    for image, label in dataset.batch(4096).as_numpy_iterator():
        images.append(image.reshape(len(image), -1).astype("float32") / 255.0)
        labels.append(label.astype("int32"))
    return np.concatenate(images), np.concatenate(labels)


#: name -> factory. Each factory's keyword arguments are the options `get`
#: accepts for that problem.
PROBLEMS = {
    "sin": sin,
    "parity": parity,
    "spirals": spirals,
    "sinc": sinc,
    "digits": digits,
    "mnist": mnist,
}


def names():
    """The names `get` accepts."""
    return list(PROBLEMS)


def get(name, **options):
    """The built-in problem `name`, built with `options`.

    Args:
        name: one of `names()`, or a `Problem` (returned as is).
        **options: the factory's keyword arguments, e.g. `n` for "sin" and
            "sinc", `bits` for "parity", `data_dir` for "mnist".

    Raises:
        ValueError: for an unknown name or an option the problem does not take.
    """
    if isinstance(name, Problem):
        return name
    if name not in PROBLEMS:
        raise ValueError(
            f"Argument `name` must be one of {', '.join(PROBLEMS)}. Received: name={name!r}"
        )
    factory = PROBLEMS[name]
    accepted = inspect.signature(factory).parameters
    for option in options:
        if option not in accepted:
            takes = ", ".join(f"`{p}`" for p in accepted) or "no options"
            raise ValueError(
                f"Problem {name!r} does not take option `{option}` (it takes {takes}). "
                f"Received: {option}={options[option]!r}"
            )
    return factory(**options)



# --------------------------------------------------------------------------
# 2-D test functions (`gdzoo trajectories`)
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Surface:
    """A 2-D test function w = (x, y) -> E(w) with its residual form, if any.

    Attributes:
        description: one line for tables and plot titles.
        function: E(w) for `w` a NumPy array or tensor of shape [2, ...]
            (a grid of points works too).
        residuals: e(w) with E = 1/2 sum e^2 (a tensor), or `None` when E is
            not a sum of squares (Levenberg-Marquardt needs it).
        start: the starting point of every path.
        minimum: the minimizer, or `None` when there is none.
        xlim, ylim: the plotted window.
        iterations: default number of iterations for `gdzoo trajectories`.
        methods: its default methods (comma-separated short names).
        log_levels: contour levels spaced geometrically (for valleys).
        momentum: the momentum used for momentum and NAG on it.
    """

    description: str
    function: Callable
    residuals: Callable
    start: tuple
    minimum: tuple
    xlim: tuple
    ylim: tuple
    iterations: int
    methods: str
    log_levels: bool = False
    momentum: float = 0.9


_SQRT2 = math.sqrt(2.0)


def _quadratic(w):
    return 0.5 * (w[0] ** 2 + 10.0 * w[1] ** 2)


def _quadratic_residuals(w):
    return keras.ops.stack([w[0], math.sqrt(10.0) * w[1]])


def _rosenbrock(w):
    return (1.0 - w[0]) ** 2 + 100.0 * (w[1] - w[0] ** 2) ** 2


def _rosenbrock_residuals(w):
    return _SQRT2 * keras.ops.stack([1.0 - w[0], 10.0 * (w[1] - w[0] ** 2)])


def _beale_terms(w):
    x, y = w[0], w[1]
    return [1.5 - x + x * y, 2.25 - x + x * y**2, 2.625 - x + x * y**3]


def _beale(w):
    return sum(term**2 for term in _beale_terms(w))


def _beale_residuals(w):
    return _SQRT2 * keras.ops.stack(_beale_terms(w))


def _saddle(w):
    return w[0] ** 2 - w[1] ** 2


#: The lecture's 2-D illustrations: Sutskever's (2013) oblong quadratic for
#: GD / momentum / NAG (mu = 0.95 there), Rosenbrock's (1960) valley for
#: steepest descent, CG, BFGS, Newton and LM, and Beale's (1958) function and
#: a saddle as in CS231n's "Neural Networks Part 3", Fig. 1-2.
SURFACES = {
    "quadratic": Surface(
        "oblong quadratic E = (x^2 + 10 y^2)/2 (Sutskever, 2013), momentum 0.95",
        _quadratic, _quadratic_residuals, start=(-4.0, 1.5), minimum=(0.0, 0.0),
        xlim=(-5, 5), ylim=(-2.5, 2.5), iterations=60, methods="gd,momentum,nag,sd,cg-pr,lm",
        momentum=0.95,
    ),
    "rosenbrock": Surface(
        "Rosenbrock E = (1 - x)^2 + 100 (y - x^2)^2",
        _rosenbrock, _rosenbrock_residuals, start=(-1.2, 1.0), minimum=(1.0, 1.0),
        xlim=(-2, 2), ylim=(-1, 3), iterations=200, methods="gd,sd,cg-pr,bfgs,newton,lm",
        log_levels=True,
    ),
    "beale": Surface(
        "Beale's function, minimum at (3, 0.5)",
        _beale, _beale_residuals, start=(1.0, 1.5), minimum=(3.0, 0.5),
        xlim=(-0.5, 4.0), ylim=(-1.5, 2.0), iterations=300,
        methods="gd,momentum,nag,adagrad,rmsprop,adadelta,adam,lm", log_levels=True,
    ),
    "saddle": Surface(
        "saddle E = x^2 - y^2",
        _saddle, None, start=(1.0, 1e-3), minimum=None,
        xlim=(-1.5, 1.5), ylim=(-1.5, 1.5), iterations=60,
        methods="gd,momentum,nag,adagrad,rmsprop,adadelta,adam,newton",
    ),
}
