"""`gdzoo trajectories`: each method's path on a 2-D function.

The lecture's GD / momentum / NAG / steepest descent / CG / LM pictures: the
functions are `keras_gdzoo.problems.SURFACES`. `run` computes the paths and
returns a `TrajectoriesResult`; `summary` is its table as text.
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from keras_gdzoo import methods as methods_lib
from keras_gdzoo.cli.common import one_line
from keras_gdzoo.cli.common import parse_methods
from keras_gdzoo.problems import SURFACES
from keras_gdzoo.problems import Surface
from keras_gdzoo.solvers.base import FunctionObjective

# Where a path is cut off: far outside any plot, or no longer finite.
_ESCAPE = 1e6
# A path ends once the gradient norm falls below this: the method has arrived.
_TOLERANCE = 1e-8


@dataclasses.dataclass
class TrajectoriesResult:
    """Each method's path on one surface.

    Attributes:
        function: the surface's name.
        surface: the `Surface`.
        paths: label -> iterates, an array [steps + 1, 2].
        notes: label -> why that method has no path.
    """

    function: str
    surface: Surface
    paths: dict
    notes: dict

    def losses(self, label):
        """E at each iterate of `label`'s path."""
        return [float(self.surface.function(w)) for w in self.paths[label]]


def _optimizer_path(surface, optimizer, w0, iterations):
    variable = keras.Variable(w0, dtype="float64")
    optimizer.build([variable])
    function = surface.function

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = function(variable.value)
        gradient = tape.gradient(loss, variable.value)
        optimizer.apply_gradients([(gradient, variable)])
        return variable.value, tf.norm(gradient)

    path = [w0]
    for _ in range(iterations):
        w, gradient_norm = (t.numpy() for t in step())
        path.append(w)
        if gradient_norm < _TOLERANCE:
            break
    return path


def trajectory(surface_name, method_name, learning_rate=None, iterations=None):
    """The iterates of one method on a 2-D surface, as an array [steps+1, 2].

    Per-parameter optimizers run through `opt.apply_gradients` on a
    `keras.Variable` (for NAG the variable is the look-ahead point, see
    `NesterovMomentum`); solvers run through `Solver.minimize` on a
    `FunctionObjective` with the surface's residual form. A path ends early
    once the gradient norm is under 1e-8, and is cut where |w| exceeds 1e6.
    """
    surface = SURFACES[surface_name]
    method = methods_lib.METHODS[method_name]
    iterations = iterations or surface.iterations
    w0 = np.array(surface.start, dtype="float64")
    if method.is_solver:
        residuals = surface.residuals
        if method_name == "lm" and residuals is None:
            raise ValueError(f"{surface_name} has no residual form (not a sum of squares)")
        objective = FunctionObjective(surface.function, size=2, dtype="float64",
                                      residuals=residuals)
        _, history = method.build().minimize(objective, tf.constant(w0), iterations,
                                             tolerance=_TOLERANCE)
        path = [record["w"] for record in history]
    else:
        overrides = {"momentum": surface.momentum} if "momentum" in method.options else {}
        rate = learning_rate or method.trajectory_rates[surface_name]
        path = _optimizer_path(surface, method.build(rate, **overrides), w0, iterations)
    # Cut the path where it leaves every plot for good (or stops being finite).
    for index, w in enumerate(path):
        if not np.all(np.isfinite(w)) or np.max(np.abs(w)) > _ESCAPE:
            path = path[: index + 1]
            break
    return np.array(path)


def run(args, report=None):
    """Every method's path on `--function`; a method that fails is noted."""
    report = report or (lambda line: None)
    surface = SURFACES[args.function]
    methods = parse_methods(args.methods or surface.methods)
    report(f"{args.function}: {surface.description}; start {surface.start}")
    paths, notes = {}, {}
    for label, name, learning_rate in methods:
        try:
            paths[label] = trajectory(args.function, name, learning_rate, args.iterations)
        except Exception as error:  # report and go on with the other methods
            notes[label] = f"skipped ({one_line(error)})"
            report(f"{label:<10} {notes[label]}")
    return TrajectoriesResult(function=args.function, surface=surface, paths=paths, notes=notes)


def summary(result):
    """Steps, final loss and distance to the minimum per method."""
    header = f"{'method':<10}  {'steps':>5}  {'final loss':>11}  {'distance to minimum':>19}"
    lines = ["", header, "-" * len(header)]
    minimum = result.surface.minimum
    for label, path in result.paths.items():
        final = float(result.surface.function(path[-1]))
        distance = "-" if minimum is None else f"{np.linalg.norm(path[-1] - np.array(minimum)):.3g}"
        lines.append(f"{label:<10}  {len(path) - 1:>5}  {final:>11.4g}  {distance:>19}")
    lines += [f"{label:<10}  {note}" for label, note in result.notes.items()]
    return "\n".join(lines)
