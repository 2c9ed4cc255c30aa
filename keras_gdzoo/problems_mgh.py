"""Least-squares test problems of Moré, Garbow & Hillstrom (1981).

Seventeen of the paper's "Testing unconstrained optimization software"
problems (numbers 1-18 but 11, the Gulf research problem), transcribed from the
paper's definitions: residuals f_i(x), i = 1..m, of n unknowns, the
standard starting point x0 and the minimum values F* = sum f_i^2 the paper
reports (several where it lists local minima too). Each residual function
takes an array namespace `xp`: NumPy (`numpy`) or TensorFlow (`TF`, below),
so the same transcription feeds `scipy.optimize.least_squares` and
`keras_gdzoo`'s solvers.

>>> import numpy as np
>>> problem = PROBLEMS["rosenbrock"]
>>> float(np.sum(problem.residuals(np.array([1.0, 1.0]), np) ** 2))
0.0

Reference:
    Moré, J. J., Garbow, B. S. & Hillstrom, K. E. (1981). Testing
    unconstrained optimization software. ACM Trans. Math. Software 7(1),
    17-41.
"""

import dataclasses
import types
from typing import Callable

import numpy as np
import tensorflow as tf

#: The TensorFlow namespace the residual functions use (NumPy's names).
TF = types.SimpleNamespace(
    exp=tf.exp,
    sin=tf.sin,
    cos=tf.cos,
    sqrt=tf.sqrt,
    arctan=tf.atan,
    sign=tf.sign,
    stack=tf.stack,
    concatenate=lambda parts: tf.concat(parts, 0),
    minimum=tf.minimum,
)


@dataclasses.dataclass
class LeastSquaresProblem:
    """One test problem.

    Attributes:
        name: short name.
        number: the problem's number in the paper.
        n: number of unknowns.
        m: number of residuals.
        residuals: `(x, xp) -> f`, the m residuals at x (xp: numpy or `TF`).
        start: the standard starting point x0.
        minima: the values F* = sum f_i^2 at minima the paper lists (the
            global one first).
    """

    name: str
    number: int
    n: int
    m: int
    residuals: Callable
    start: tuple
    minima: tuple

    def value(self, x):
        """F(x) = sum f_i(x)^2 in NumPy."""
        f = self.residuals(np.asarray(x, dtype=np.float64), np)
        return float(np.sum(f * f))

    def solved(self, value, rtol=1e-5, atol=1e-12):
        """Whether F = `value` is at a listed minimum: |F - F*| <= rtol F* +
        atol (the paper gives F* to six digits)."""
        return any(abs(value - best) <= rtol * best + atol for best in self.minima)


def _rosenbrock(x, xp):
    return xp.stack([10.0 * (x[1] - x[0] ** 2), 1.0 - x[0]])


def _freudenstein_roth(x, xp):
    return xp.stack(
        [
            -13.0 + x[0] + ((5.0 - x[1]) * x[1] - 2.0) * x[1],
            -29.0 + x[0] + ((x[1] + 1.0) * x[1] - 14.0) * x[1],
        ]
    )


def _powell_badly_scaled(x, xp):
    return xp.stack([1e4 * x[0] * x[1] - 1.0, xp.exp(-x[0]) + xp.exp(-x[1]) - 1.0001])


def _brown_badly_scaled(x, xp):
    return xp.stack([x[0] - 1e6, x[1] - 2e-6, x[0] * x[1] - 2.0])


_BEALE_Y = np.array([1.5, 2.25, 2.625])


def _beale(x, xp):
    i = np.arange(1.0, 4.0)
    return _BEALE_Y - x[0] * (1.0 - x[1] ** i)


def _jennrich_sampson(x, xp):
    i = np.arange(1.0, 11.0)
    return 2.0 + 2.0 * i - (xp.exp(i * x[0]) + xp.exp(i * x[1]))


def _helical_valley(x, xp):
    # theta = arctan(x2/x1) / (2 pi), plus 1/2 when x1 < 0.
    theta = xp.arctan(x[1] / x[0]) / (2.0 * np.pi) + 0.25 * (1.0 - xp.sign(x[0]))
    radius = xp.sqrt(x[0] ** 2 + x[1] ** 2)
    return xp.stack([10.0 * (x[2] - 10.0 * theta), 10.0 * (radius - 1.0), x[2]])


_BARD_Y = np.array(
    [0.14, 0.18, 0.22, 0.25, 0.29, 0.32, 0.35, 0.39, 0.37, 0.58, 0.73, 0.96, 1.34, 2.10, 4.39]
)


def _bard(x, xp):
    u = np.arange(1.0, 16.0)
    v = 16.0 - u
    w = np.minimum(u, v)
    return _BARD_Y - (x[0] + u / (v * x[1] + w * x[2]))


_GAUSSIAN_Y = np.array(
    [0.0009, 0.0044, 0.0175, 0.0540, 0.1295, 0.2420, 0.3521, 0.3989,
     0.3521, 0.2420, 0.1295, 0.0540, 0.0175, 0.0044, 0.0009]
)


def _gaussian(x, xp):
    t = (8.0 - np.arange(1.0, 16.0)) / 2.0
    return x[0] * xp.exp(-x[1] * (t - x[2]) ** 2 / 2.0) - _GAUSSIAN_Y


_MEYER_Y = np.array(
    [34780.0, 28610.0, 23650.0, 19630.0, 16370.0, 13720.0, 11540.0, 9744.0,
     8261.0, 7030.0, 6005.0, 5147.0, 4427.0, 3820.0, 3307.0, 2872.0]
)


def _meyer(x, xp):
    t = 45.0 + 5.0 * np.arange(1.0, 17.0)
    return x[0] * xp.exp(x[1] / (t + x[2])) - _MEYER_Y


def _box_3d(x, xp):
    t = 0.1 * np.arange(1.0, 11.0)
    return (
        xp.exp(-t * x[0])
        - xp.exp(-t * x[1])
        - x[2] * (np.exp(-t) - np.exp(-10.0 * t))
    )


def _powell_singular(x, xp):
    return xp.stack(
        [
            x[0] + 10.0 * x[1],
            np.sqrt(5.0) * (x[2] - x[3]),
            (x[1] - 2.0 * x[2]) ** 2,
            np.sqrt(10.0) * (x[0] - x[3]) ** 2,
        ]
    )


def _wood(x, xp):
    return xp.stack(
        [
            10.0 * (x[1] - x[0] ** 2),
            1.0 - x[0],
            np.sqrt(90.0) * (x[3] - x[2] ** 2),
            1.0 - x[2],
            np.sqrt(10.0) * (x[1] + x[3] - 2.0),
            (x[1] - x[3]) / np.sqrt(10.0),
        ]
    )


_KOWALIK_OSBORNE_Y = np.array(
    [0.1957, 0.1947, 0.1735, 0.1600, 0.0844, 0.0627, 0.0456, 0.0342, 0.0323, 0.0235, 0.0246]
)
_KOWALIK_OSBORNE_U = np.array(
    [4.0, 2.0, 1.0, 0.5, 0.25, 0.167, 0.125, 0.1, 0.0833, 0.0714, 0.0625]
)


def _kowalik_osborne(x, xp):
    u = _KOWALIK_OSBORNE_U
    return _KOWALIK_OSBORNE_Y - x[0] * (u**2 + u * x[1]) / (u**2 + u * x[2] + x[3])


def _brown_dennis(x, xp):
    t = np.arange(1.0, 21.0) / 5.0
    return (x[0] + t * x[1] - np.exp(t)) ** 2 + (x[2] + x[3] * np.sin(t) - np.cos(t)) ** 2


_OSBORNE_1_Y = np.array(
    [0.844, 0.908, 0.932, 0.936, 0.925, 0.908, 0.881, 0.850, 0.818, 0.784, 0.751,
     0.718, 0.685, 0.658, 0.628, 0.603, 0.580, 0.558, 0.538, 0.522, 0.506, 0.490,
     0.478, 0.467, 0.457, 0.448, 0.438, 0.431, 0.424, 0.420, 0.414, 0.411, 0.406]
)


def _osborne_1(x, xp):
    t = 10.0 * np.arange(33.0)
    return _OSBORNE_1_Y - (x[0] + x[1] * xp.exp(-t * x[3]) + x[2] * xp.exp(-t * x[4]))


def _biggs_exp6(x, xp):
    t = 0.1 * np.arange(1.0, 14.0)
    y = np.exp(-t) - 5.0 * np.exp(-10.0 * t) + 3.0 * np.exp(-4.0 * t)
    return (
        x[2] * xp.exp(-t * x[0])
        - x[3] * xp.exp(-t * x[1])
        + x[5] * xp.exp(-t * x[4])
        - y
    )


_TABLE = [
    # name, number, n, m, residuals, start, minima
    ("rosenbrock", 1, 2, 2, _rosenbrock, (-1.2, 1.0), (0.0,)),
    ("freudenstein-roth", 2, 2, 2, _freudenstein_roth, (0.5, -2.0), (0.0, 48.9842)),
    ("powell-badly-scaled", 3, 2, 2, _powell_badly_scaled, (0.0, 1.0), (0.0,)),
    ("brown-badly-scaled", 4, 2, 3, _brown_badly_scaled, (1.0, 1.0), (0.0,)),
    ("beale", 5, 2, 3, _beale, (1.0, 1.0), (0.0,)),
    ("jennrich-sampson", 6, 2, 10, _jennrich_sampson, (0.3, 0.4), (124.362,)),
    ("helical-valley", 7, 3, 3, _helical_valley, (-1.0, 0.0, 0.0), (0.0,)),
    ("bard", 8, 3, 15, _bard, (1.0, 1.0, 1.0), (8.21487e-3, 17.4286)),
    ("gaussian", 9, 3, 15, _gaussian, (0.4, 1.0, 0.0), (1.12793e-8,)),
    ("meyer", 10, 3, 16, _meyer, (0.02, 4000.0, 250.0), (87.9458,)),
    ("box-3d", 12, 3, 10, _box_3d, (0.0, 10.0, 20.0), (0.0,)),
    ("powell-singular", 13, 4, 4, _powell_singular, (3.0, -1.0, 0.0, 1.0), (0.0,)),
    ("wood", 14, 4, 6, _wood, (-3.0, -1.0, -3.0, -1.0), (0.0,)),
    ("kowalik-osborne", 15, 4, 11, _kowalik_osborne, (0.25, 0.39, 0.415, 0.39),
     (3.07505e-4, 1.02734e-3)),
    ("brown-dennis", 16, 4, 20, _brown_dennis, (25.0, 5.0, -5.0, -1.0), (85822.2,)),
    ("osborne-1", 17, 5, 33, _osborne_1, (0.5, 1.5, -1.0, 0.01, 0.02), (5.46489e-5,)),
    ("biggs-exp6", 18, 6, 13, _biggs_exp6, (1.0, 2.0, 1.0, 1.0, 1.0, 1.0), (0.0, 5.65565e-3)),
]

#: The problems by name, in the paper's order.
PROBLEMS = {
    row[0]: LeastSquaresProblem(*row) for row in _TABLE
}


def runs():
    """(problem, start factor) for every problem from x0 and 10 x0: 34 runs."""
    return [(problem, factor) for problem in PROBLEMS.values() for factor in (1.0, 10.0)]
