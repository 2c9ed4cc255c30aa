"""keras_gdzoo: the classic neural-network training toolbox inside Keras 3.

Per-parameter optimizers work in plain ``model.compile``; full-batch and
second-order solvers work through ``keras_gdzoo.wrap(model)``.
"""

import os as _os

_os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from keras_gdzoo import curvature  # noqa: E402
from keras_gdzoo import initializers  # noqa: E402
from keras_gdzoo import line_search  # noqa: E402
from keras_gdzoo import problems  # noqa: E402
from keras_gdzoo import schedules  # noqa: E402
from keras_gdzoo.annealing import ExponentialDecay  # noqa: E402
from keras_gdzoo.annealing import InverseTimeDecay  # noqa: E402
from keras_gdzoo.annealing import StepDecay  # noqa: E402
from keras_gdzoo.model import SolverModel  # noqa: E402
from keras_gdzoo.model import wrap  # noqa: E402
from keras_gdzoo.optimizers import AdaDelta  # noqa: E402
from keras_gdzoo.optimizers import AdaGrad  # noqa: E402
from keras_gdzoo.optimizers import Adam  # noqa: E402
from keras_gdzoo.optimizers import Adamax  # noqa: E402
from keras_gdzoo.optimizers import GradientDescent  # noqa: E402
from keras_gdzoo.optimizers import Momentum  # noqa: E402
from keras_gdzoo.optimizers import Nadam  # noqa: E402
from keras_gdzoo.optimizers import NesterovMomentum  # noqa: E402
from keras_gdzoo.optimizers import RMSProp  # noqa: E402
from keras_gdzoo import uncertainty  # noqa: E402
from keras_gdzoo.solvers import BFGS  # noqa: E402
from keras_gdzoo.solvers import BayesianRegularization  # noqa: E402
from keras_gdzoo.solvers import LBFGS  # noqa: E402
from keras_gdzoo.solvers import ConjugateGradient  # noqa: E402
from keras_gdzoo.solvers import LevenbergMarquardt  # noqa: E402
from keras_gdzoo.solvers import Newton  # noqa: E402
from keras_gdzoo.solvers import Rprop  # noqa: E402
from keras_gdzoo.solvers import Solver  # noqa: E402
from keras_gdzoo.solvers import SteepestDescent  # noqa: E402

__version__ = "0.1.0"
