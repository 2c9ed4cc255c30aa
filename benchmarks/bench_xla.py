"""XLA on CPU: ms per step of every method with and without jit_compile.

Per-parameter optimizers train a 256-512-512-10 MLP on batches of 64 (plain
`model.compile`); full-batch solvers train a 1-20-1 tanh net on 2,000 sinc
points through `gz.wrap` (one iteration per step). Both columns are measured
in the same run; the last column is the speed-up (no-XLA time / XLA time).

    python benchmarks/bench_xla.py [--steps 30]
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

OPTIMIZERS = {
    "GradientDescent": lambda: gz.GradientDescent(),
    "Momentum": lambda: gz.Momentum(),
    "NesterovMomentum": lambda: gz.NesterovMomentum(),
    "AdaGrad": lambda: gz.AdaGrad(),
    "RMSProp": lambda: gz.RMSProp(),
    "AdaDelta": lambda: gz.AdaDelta(),
    "Adam": lambda: gz.Adam(),
    "Adamax": lambda: gz.Adamax(),
    "Nadam": lambda: gz.Nadam(),
}
SOLVERS = {
    "SteepestDescent": lambda: gz.SteepestDescent(),
    "ConjugateGradient": lambda: gz.ConjugateGradient(),
    "BFGS": lambda: gz.BFGS(),
    "LBFGS": lambda: gz.LBFGS(),
    "Rprop": lambda: gz.Rprop(),
    "Newton": lambda: gz.Newton(),
    "LevenbergMarquardt": lambda: gz.LevenbergMarquardt(),
}


def per_parameter_case():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64 * 8, 256)).astype("float32")
    y = rng.integers(0, 10, size=len(x))

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((256,)),
                keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(512, activation="relu"),
                keras.layers.Dense(10),
            ]
        )

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return x, y, build, loss, 64, False


def solver_case():
    x = np.linspace(-1, 1, 2000, dtype="float32")[:, None]
    y = np.sinc(10 * x / np.pi).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(1)]
        )

    return x, y, build, "mse", len(x), True


def ms_per_step(case, make_optimizer, jit, steps):
    x, y, build, loss, batch, wrap = case
    model = build()
    trainer = gz.wrap(model) if wrap else model
    trainer.compile(optimizer=make_optimizer(), loss=loss, jit_compile=jit)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    trainer.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return 1000 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"{'method':20} {'ms/step':>9} {'XLA ms/step':>12} {'speed-up':>9}")
    for table, case in ((OPTIMIZERS, per_parameter_case()), (SOLVERS, solver_case())):
        for name, make in table.items():
            try:
                plain = ms_per_step(case, make, False, args.steps)
                xla = ms_per_step(case, make, True, args.steps)
                print(f"{name:20} {plain:9.2f} {xla:12.2f} {plain / xla:9.2f}", flush=True)
            except Exception as error:  # a survey: report and go on
                print(f"{name:20} failed under XLA: {type(error).__name__}: "
                      f"{str(error).splitlines()[0][:100]}", flush=True)


if __name__ == "__main__":
    main()
