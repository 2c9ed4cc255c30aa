"""GPU check: ms per step of LM, L-BFGS and Adam, with and without XLA.

Runs on whatever device TensorFlow picks (a GPU when there is one) on two
problems: the sinc(10x) curve fit (1-20-1 tanh, 20,000 points, batches of
1,000) and an MLP on scikit-learn's bundled digits (64-32-10). Prints one
table; `--quick` shrinks everything for a CPU smoke run.

    python examples/gpu_check.py            # on the GPU machine
    python examples/gpu_check.py --quick    # anywhere, in seconds
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402


def sinc_problem(n):
    x = np.linspace(-1, 1, n, dtype="float32")[:, None]
    y = np.sinc(10 * x / np.pi).astype("float32")  # sin(10x)/(10x)

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(20, activation="tanh"), keras.layers.Dense(1)]
        )

    return x, y, build, "mse", 1000


def digits_problem(quick):
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    if quick:
        x, y = x[:300], y[:300]

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(32, activation="tanh"),
                keras.layers.Dense(10, activation="softmax"),
            ]
        )

    return x, y, build, "sparse_categorical_crossentropy", len(x)


def time_method(problem, method, jit, steps):
    x, y, build, loss, batch = problem
    model = build()
    optimizer = {
        "lm": lambda: gz.LevenbergMarquardt(),
        "lbfgs": lambda: gz.LBFGS(),
        "adam": lambda: gz.Adam(0.01),
    }[method]()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=optimizer, loss=loss, jit_compile=jit)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    trainer.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace + warm up
    start = time.perf_counter()
    history = trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / steps, history.history["loss"][-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke run")
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    steps = args.steps or (3 if args.quick else 50)
    print("devices:", [d.name for d in tf.config.list_logical_devices()])
    problems = {
        "sinc": sinc_problem(2000 if args.quick else 20000),
        "digits": digits_problem(args.quick),
    }
    print(f"{'problem':8} {'method':6} {'xla':5} {'ms/step':>9} {'loss':>10}")
    for name, problem in problems.items():
        for method in ("lm", "lbfgs", "adam"):
            for jit in (False, True):
                try:
                    ms, loss = time_method(problem, method, jit, steps)
                    print(f"{name:8} {method:6} {str(jit):5} {ms:9.2f} {loss:10.3g}", flush=True)
                except Exception as error:  # report and go on: this is a survey
                    print(f"{name:8} {method:6} {str(jit):5} failed: {type(error).__name__}: "
                          f"{str(error).splitlines()[0][:120]}", flush=True)


if __name__ == "__main__":
    main()
