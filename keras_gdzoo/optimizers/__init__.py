"""Per-parameter optimizers: subclasses of `keras.optimizers.Optimizer`."""

from keras_gdzoo.optimizers.adadelta import AdaDelta
from keras_gdzoo.optimizers.adagrad import AdaGrad
from keras_gdzoo.optimizers.adam import Adam
from keras_gdzoo.optimizers.adam import Adamax
from keras_gdzoo.optimizers.adam import Nadam
from keras_gdzoo.optimizers.gradient_descent import GradientDescent
from keras_gdzoo.optimizers.gradient_descent import Momentum
from keras_gdzoo.optimizers.gradient_descent import NesterovMomentum
from keras_gdzoo.optimizers.rmsprop import RMSProp
