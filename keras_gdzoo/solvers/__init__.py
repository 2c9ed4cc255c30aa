"""Full-batch solvers, driven through `keras_gdzoo.wrap(model)`."""

from keras_gdzoo.solvers.base import FunctionObjective
from keras_gdzoo.solvers.base import Objective
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.bayesian_regularization import BayesianRegularization
from keras_gdzoo.solvers.conjugate_gradient import ConjugateGradient
from keras_gdzoo.solvers.conjugate_gradient import SteepestDescent
from keras_gdzoo.solvers.levenberg_marquardt import LevenbergMarquardt
from keras_gdzoo.solvers.newton import Newton
from keras_gdzoo.solvers.quasi_newton import BFGS
from keras_gdzoo.solvers.quasi_newton import LBFGS
from keras_gdzoo.solvers.rprop import Rprop
