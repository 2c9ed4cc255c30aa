"""`gdzoo init`: activations and gradients per layer for weight initializations.

The lecture's "information flow" figure: variances and histograms of the
activations and of the gradients per layer of a deep network, one row per
initialization scheme. `run` computes them and returns an `InitResult`;
`summary` is its table as text.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz
from keras_gdzoo.cli.common import UsageError
from keras_gdzoo.cli.common import positive

ACTIVATIONS = ("tanh", "relu", "sigmoid", "softsign", "linear")
#: The range of bounded units, the histograms' fixed axis.
RANGES = {"tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0), "sigmoid": (0.0, 1.0)}
# scheme -> (class name, argument, default value); Xavier schemes take the
# activation instead.
SCHEMES = {
    "normal": ("Normal", "stddev", 0.01),
    "truncated-normal": ("TruncatedNormal", "stddev", 0.01),
    "uniform": ("Uniform", "limit", 0.05),
    "xavier": ("XavierNormal", None, None),
    "xavier-normal": ("XavierNormal", None, None),
    "xavier-uniform": ("XavierUniform", None, None),
}
DEFAULT_SCHEMES = "normal:0.01,xavier,normal:1"


@dataclasses.dataclass
class InitResult:
    """Per scheme label: (activations, gradients), `depth` arrays each."""

    activation: str
    depth: int
    width: int
    samples: int
    statistics: dict


def parse_schemes(text, activation):
    """'normal:1,xavier' -> [(label, function seed -> initializer), ...]."""
    schemes = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, value = item.partition(":")
        if name not in SCHEMES:
            raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
        class_name, argument, default = SCHEMES[name]
        cls = getattr(gz.initializers, class_name)
        if argument is None:
            if value:
                raise UsageError(f"scheme {name!r} takes no value (got {item!r})")
            schemes.append((item, lambda seed, cls=cls: cls(activation=activation, seed=seed)))
        else:
            scale = positive(float, value, f"{argument} in {item!r}") if value else default
            label = item if value else f"{name}:{default:g}"
            schemes.append(
                (label, lambda seed, cls=cls, a=argument, s=scale: cls(**{a: s}, seed=seed))
            )
    if not schemes:
        raise UsageError("no schemes given")
    return schemes


def layer_statistics(initializer, depth, width, activation, samples, seed):
    """Activations y^l and gradients dL/dh^l of a fresh `depth`-layer net.

    Inputs are N(0, 1); the backward pass starts from dL/dy^L ~ N(0, 1)
    (L = sum(u * y^L) with a fixed random u), so the gradients show only
    what the layers do to them.

    Returns:
        two lists of `depth` arrays: activations [samples, width] and
        gradients with respect to the pre-activations h^l.
    """
    layers = [
        keras.layers.Dense(width, activation=None, kernel_initializer=initializer(1000 * seed + l),
                           bias_initializer="zeros")
        for l in range(depth)
    ]
    nonlinearity = keras.activations.get(activation)
    rng = np.random.default_rng(seed)
    y = tf.constant(rng.standard_normal((samples, width)), dtype="float32")
    upstream = tf.constant(rng.standard_normal((samples, width)), dtype="float32")
    pre, post = [], []
    with tf.GradientTape() as tape:
        for layer in layers:
            h = layer(y)
            y = nonlinearity(h)
            pre.append(h)
            post.append(y)
        loss = tf.reduce_sum(upstream * y)
    gradients = tape.gradient(loss, pre)
    return [a.numpy() for a in post], [g.numpy() for g in gradients]


def run(args, report=None):
    """The statistics of every scheme in `--schemes`."""
    if args.activation not in ACTIVATIONS:
        raise UsageError(f"unknown activation {args.activation!r}; choose from "
                         f"{', '.join(ACTIVATIONS)}")
    schemes = parse_schemes(args.schemes, args.activation)
    statistics = {
        label: layer_statistics(initializer, args.depth, args.width, args.activation,
                                args.samples, args.seed)
        for label, initializer in schemes
    }
    return InitResult(activation=args.activation, depth=args.depth, width=args.width,
                      samples=args.samples, statistics=statistics)


def summary(result):
    """Activation and gradient variances of the first, middle and last layer."""
    depth = result.depth
    lines = [f"{depth} layers of {result.width} {result.activation} units, "
             f"{result.samples} N(0,1) inputs; variance per layer"]
    shown = sorted({1, max(1, depth // 2), depth})
    header = f"{'scheme':<22}" + "".join(f"  act var L{l:<3}" for l in shown) + \
        "".join(f"  grad var L{l:<3}" for l in shown)
    lines += [header, "-" * len(header)]
    for label, (activations, gradients) in result.statistics.items():
        lines.append(f"{label:<22}" + "".join(f"  {activations[l - 1].var():>11.3g}" for l in shown)
                     + "".join(f"  {gradients[l - 1].var():>12.3g}" for l in shown))
    return "\n".join(lines)
