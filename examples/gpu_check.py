"""GPU check: ms per step of LM, L-BFGS and Adam, with and without XLA.

Runs on whatever device TensorFlow picks (a GPU when there is one) on two
problems: the sinc(10x) curve fit (1-20-1 tanh, 20,000 points, batches of
1,000) and an MLP on scikit-learn's bundled digits (64-32-10). Then the
matrix-free solvers, Newton-CG (`Newton(linear_solver="cg")`) and LM-CG
(`LevenbergMarquardt(linear_solver="cg")`), with Adam for scale, on a
digits MLP of over a million weights (64-1024-1024-10, m = 1,126,410,
full batch), where a dense m x m matrix would need 5 TB. Prints one table;
`--quick` shrinks the data for a CPU smoke run (the large MLP keeps its
million weights on 64 images); `--methods` picks methods.

    python examples/gpu_check.py            # on the GPU machine
    python examples/gpu_check.py --quick    # anywhere, in seconds
    python examples/gpu_check.py --methods newton-cg lm-cg adam
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


def large_problem(quick):
    """Digits (64 images with `quick`) on a 64-1024-1024-10 tanh MLP,
    m = 1,126,410, logits."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    if quick:
        x, y = x[:64], y[:64]

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential(
            [
                keras.Input((64,)),
                keras.layers.Dense(1024, activation="tanh"),
                keras.layers.Dense(1024, activation="tanh"),
                keras.layers.Dense(10),
            ]
        )

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return x, y, build, loss, len(x)


OPTIMIZERS = {
    "lm": lambda: gz.LevenbergMarquardt(),
    "lbfgs": lambda: gz.LBFGS(),
    "adam": lambda: gz.Adam(0.01),
    "newton-cg": lambda: gz.Newton(
        damping=1e-3, linear_solver="cg", cg_max_iterations=10, cg_tolerance=1e-2
    ),
    "lm-cg": lambda: gz.LevenbergMarquardt(linear_solver="cg"),
}
SMALL_METHODS = ("lm", "lbfgs", "adam")
LARGE_METHODS = ("newton-cg", "lm-cg", "adam")


def time_method(problem, method, jit, steps):
    x, y, build, loss, batch = problem
    model = build()
    optimizer = OPTIMIZERS[method]()
    trainer = gz.wrap(model)
    trainer.compile(optimizer=optimizer, loss=loss, jit_compile=jit)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    trainer.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0)  # trace + warm up
    start = time.perf_counter()
    history = trainer.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / steps, history.history["loss"][-1], model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a CPU smoke run")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument(
        "--methods", nargs="+", choices=sorted(OPTIMIZERS), default=None, help="methods to time"
    )
    parser.add_argument("--no-xla", action="store_true", help="skip the jit_compile=True runs")
    args = parser.parse_args(argv)
    steps = args.steps or (2 if args.quick else 50)
    print("devices:", [d.name for d in tf.config.list_logical_devices()])
    problems = {
        "sinc": (sinc_problem(2000 if args.quick else 20000), SMALL_METHODS),
        "digits": (digits_problem(args.quick), SMALL_METHODS),
        "large": (large_problem(args.quick), LARGE_METHODS),
    }
    jits = (False,) if args.no_xla else (False, True)
    print(f"{'problem':8} {'method':9} {'m':>9} {'xla':5} {'ms/step':>9} {'loss':>10}")
    results = []
    for name, (problem, methods) in problems.items():
        for method in methods:
            if args.methods is not None and method not in args.methods:
                continue
            for jit in jits:
                try:
                    ms, loss, model = time_method(problem, method, jit, steps)
                    m = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
                    print(
                        f"{name:8} {method:9} {m:9d} {str(jit):5} {ms:9.2f} {loss:10.3g}",
                        flush=True,
                    )
                    results.append((name, method, m, jit, ms, loss))
                except Exception as error:  # report and go on: this is a survey
                    print(f"{name:8} {method:9} {'':9} {str(jit):5} failed: "
                          f"{type(error).__name__}: {str(error).splitlines()[0][:120]}", flush=True)
    return results


if __name__ == "__main__":
    main()
