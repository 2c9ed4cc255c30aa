"""A physics-informed network for the 1-D Poisson problem, three ways.

    u''(x) = -pi^2 sin(pi x) on (-1, 1),  u(-1) = u(1) = 0,

whose solution is u(x) = sin(pi x). The network u(x; w) is trained on the
residuals of the equation at collocation points and of the boundary
conditions:

1. Adam warm-up (a plain Keras optimizer through the wrapper),
2. L-BFGS through the model's own `compute_loss` (nested tapes give u''),
3. Levenberg-Marquardt through `keras_gdzoo.wrap(model, residuals=...)`.

Each stage prints the max error against sin(pi x) on a fine grid.

    python examples/pinn_poisson.py            # about a minute on 2 cores
    python examples/pinn_poisson.py --quick    # a few seconds (used by the tests)
"""

import argparse
import math
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

BOUNDARY = np.array([[-1.0], [1.0]])


@keras.saving.register_keras_serializable(package="examples")
class Poisson(keras.Model):
    """u(x; w), a small tanh network, with the residuals of the problem."""

    def __init__(self, width=20, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.hidden = [keras.layers.Dense(width, activation="tanh") for _ in range(2)]
        self.out = keras.layers.Dense(1)

    def call(self, x, training=None):
        for layer in self.hidden:
            x = layer(x)
        return self.out(x)

    def pde_residuals(self, x):
        """[u'' + pi^2 sin(pi x) at x, u at the two boundary points]."""
        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                u = self(x)
            du = inner.gradient(u, x)
        d2u = outer.gradient(du, x)
        interior = d2u + math.pi**2 * tf.sin(math.pi * x)
        boundary = self(tf.constant(BOUNDARY, x.dtype))
        return [interior, boundary]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # The same objective as the residual form below:
        # 1/(2 n_e) sum r_e^2 summed over the two entries.
        interior, boundary = self.pde_residuals(x)
        return 0.5 * tf.reduce_mean(interior**2) + 0.5 * tf.reduce_mean(boundary**2)

    def get_config(self):
        return {**super().get_config(), "width": self.width}


def pde_residuals(model, x, y):
    """The residual function for `gz.wrap(model, residuals=...)`."""
    return model.pde_residuals(x)


def collocation(n):
    return np.linspace(-1.0, 1.0, n + 2)[1:-1, None]


def max_error(model):
    grid = np.linspace(-1.0, 1.0, 401)[:, None]
    u = model(tf.constant(grid)).numpy()
    return float(np.max(np.abs(u - np.sin(np.pi * grid))))


def build(seed=0, width=20):
    keras.config.set_floatx("float64")
    keras.utils.set_random_seed(seed)
    model = Poisson(width=width)
    model(tf.zeros((1, 1), tf.float64))
    return model


def train(model, x, optimizer, epochs, residuals=False):
    trainer = gz.wrap(model, residuals=pde_residuals if residuals else None)
    trainer.compile(optimizer=optimizer)
    y = np.zeros_like(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = trainer.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0, shuffle=False)
    return history.history


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few iterations (tests)")
    args = parser.parse_args(argv)
    adam_epochs, lbfgs_epochs, lm_epochs = (50, 30, 5) if args.quick else (1000, 500, 40)
    x = collocation(16 if args.quick else 64)
    model = build(width=8 if args.quick else 20)
    errors = {}
    train(model, x, keras.optimizers.Adam(1e-2), adam_epochs)
    errors["adam"] = max_error(model)
    print(f"Adam warm-up ({adam_epochs} iterations): max |u - sin(pi x)| = {errors['adam']:.3e}")
    train(model, x, gz.LBFGS(), lbfgs_epochs)
    errors["lbfgs"] = max_error(model)
    print(f"+ L-BFGS via compute_loss ({lbfgs_epochs}): max error = {errors['lbfgs']:.3e}")
    train(model, x, gz.LevenbergMarquardt(), lm_epochs, residuals=True)
    errors["lm"] = max_error(model)
    print(f"+ Levenberg-Marquardt via residuals= ({lm_epochs}): max error = {errors['lm']:.3e}")
    return errors


if __name__ == "__main__":
    main()
