"""Second-order training at scale (issue 12): dense against matrix-free.

scikit-learn's digits (1,797 x 64, pixels / 16), softmax cross-entropy on
logits, full batch (one solver iteration per epoch). For each method and
model: m, ms per iteration (median over the iterations after the first,
which traces; each timed from `on_train_batch_begin` to
`on_train_batch_end`), x Adam (the same model's full-batch Adam
iteration), the process's peak resident memory, and the training accuracy
after `--iterations` iterations (15 by default).

* Adam (learning rate 0.01) on each model, the unit of "x Adam".
* Newton, dense (`linear_solver="cholesky"`, the m x m Hessian) on the
  64-32-10 MLP, and Newton-CG (`linear_solver="cg"`) on 64-32-10 and
  64-128-10.
* Levenberg-Marquardt dense on 64-32-10, and LM-CG on the MLPs.
* On the CNN 8x8x1 -> Conv 32 -> Conv 64 -> Dense 64 -> Dense 10 (3x3
  kernels, "same" padding, m = 281,674): Adam, Newton-CG, LM-CG, and the
  default `LevenbergMarquardt()` (trains, or the refusal).

Each row runs in its own process, so its peak memory (VmHWM of that
process) is its own; it includes TensorFlow itself, about 0.6-0.9 GB.
Dense rows time fewer iterations (`--dense-iterations`) and report the
accuracy after those.

Run: python benchmarks/bench_scale.py [--iterations 15] [--cg-iterations 20]
         [--models mlp32 mlp128 cnn] [--methods adam newton-cg ...]
(the dense rows on 64-32-10 take a minute or two each on two CPU cores,
the CNN's LM rows about 4 minutes each). `--quick`: 3 iterations of Adam,
LM-CG and Newton-CG on 64-128-10 and of Adam and the default LM on the CNN
(under 3 minutes; the accuracies then are those of 3 iterations).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROWS = [
    # (name, method, model)
    ("adam", "adam", "mlp32"),
    ("newton-dense", "newton-cholesky", "mlp32"),
    ("newton-cg", "newton-cg", "mlp32"),
    ("lm-dense", "lm-cholesky", "mlp32"),
    ("lm-cg", "lm-cg", "mlp32"),
    ("adam", "adam", "mlp128"),
    ("newton-cg", "newton-cg", "mlp128"),
    ("lm-cg", "lm-cg", "mlp128"),
    ("adam", "adam", "cnn"),
    ("newton-cg", "newton-cg", "cnn"),
    ("lm-cg", "lm-cg", "cnn"),
    ("lm-default", "lm-default", "cnn"),
]


def build(kind):
    import keras

    keras.utils.set_random_seed(0)
    if kind == "cnn":
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                keras.layers.Conv2D(64, 3, padding="same", activation="relu"),
                keras.layers.Flatten(),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(10),
            ]
        )
    hidden = {"mlp32": 32, "mlp128": 128}[kind]
    return keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(10),
        ]
    )


def optimizer_for(method, cg_iterations):
    import keras_gdzoo as gz

    if method == "adam":
        return gz.Adam(0.01)
    if method == "newton-cholesky":
        return gz.Newton(linear_solver="cholesky")
    if method == "newton-cg":
        return gz.Newton(linear_solver="cg", cg_max_iterations=cg_iterations, cg_tolerance=1e-2)
    if method == "lm-cholesky":
        return gz.LevenbergMarquardt(linear_solver="cholesky")
    if method == "lm-cg":
        return gz.LevenbergMarquardt(linear_solver="cg")
    if method == "lm-default":
        return gz.LevenbergMarquardt()
    raise ValueError(method)


def run_one(method, kind, iterations, cg_iterations):
    """One row, in this process: a dict for the table."""
    import keras
    import numpy as np
    import tensorflow as tf
    from sklearn.datasets import load_digits

    import keras_gdzoo as gz

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    if kind == "cnn":
        x = x.reshape(-1, 8, 8, 1)
    model = build(kind)
    m = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    trainer = gz.wrap(model)
    trainer.compile(
        optimizer=optimizer_for(method, cg_iterations),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x_t, y_t = tf.constant(x), tf.constant(y)
    times = []

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter() - self.start)

    try:
        history = trainer.fit(
            x_t, y_t, batch_size=len(x), epochs=iterations + 1, verbose=0, callbacks=[Timer()]
        )
    except ValueError as error:
        return {"m": m, "error": str(error).splitlines()[0][:150]}
    logs = history.history
    accuracy = float(np.mean(np.argmax(model.predict(x, verbose=0), axis=1) == y))
    timed = times[1:] or times
    row = {
        "m": m,
        "ms": 1000 * statistics.median(timed),
        "peak_mb": _peak_mb(),
        "accuracy": accuracy,
        "iterations": len(times),
    }
    if "cg_iterations" in logs:
        row["cg"] = statistics.mean(logs["cg_iterations"])
    return row


def _peak_mb():
    """This process's peak resident memory in MB: VmHWM (ru_maxrss is kept
    across exec, so a row's process would start at the parent's peak)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--dense-iterations", type=int, default=1)
    parser.add_argument("--models", nargs="+", default=None, help="mlp32, mlp128, cnn")
    parser.add_argument("--methods", nargs="+", default=None, help="row names to run")
    parser.add_argument("--cg-iterations", type=int, default=20, help="CG cap for Newton-CG")
    parser.add_argument("--timeout", type=int, default=240, help="seconds per row")
    parser.add_argument("--quick", action="store_true", help="3 iterations of 5 rows")
    parser.add_argument("--run", nargs=2, metavar=("METHOD", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    quick_rows = {("adam", "mlp128"), ("lm-cg", "mlp128"), ("newton-cg", "mlp128"),
                  ("adam", "cnn"), ("lm-default", "cnn")}
    if args.quick:
        args.iterations = 3
    if args.run:
        method, kind = args.run
        print(json.dumps(run_one(method, kind, args.iterations, args.cg_iterations)))
        return

    print(f"digits 1,797 x 64, full batch; CG cap for Newton-CG {args.cg_iterations}")
    header = (
        f"{'method':13} {'model':7} {'m':>8} {'ms/iter':>9} {'x Adam':>8} "
        f"{'peak MB':>8} {'acc':>6} {'iters':>5} {'cg/iter':>7}"
    )
    print(header)
    print("-" * len(header))
    adam_ms = {}
    for name, method, kind in ROWS:
        if args.models is not None and kind not in args.models:
            continue
        if args.methods is not None and name not in args.methods and name != "adam":
            continue
        if args.quick and (name, kind) not in quick_rows:
            continue
        dense = method.endswith("cholesky")
        iterations = args.dense_iterations if dense else args.iterations
        command = [
            sys.executable,
            __file__,
            "--run",
            method,
            kind,
            "--iterations",
            str(iterations),
            "--cg-iterations",
            str(args.cg_iterations),
        ]
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=args.timeout, check=False
            )
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if lines else {"error": done.stderr.strip()[-150:]}
        except subprocess.TimeoutExpired:
            row = {"error": f"over {args.timeout} s"}
        if "error" in row:
            print(f"{name:13} {kind:7} {row.get('m', ''):>8} {row['error']}", flush=True)
            continue
        if method == "adam":
            adam_ms[kind] = row["ms"]
        ratio = row["ms"] / adam_ms[kind] if kind in adam_ms else float("nan")
        cg = f"{row['cg']:7.1f}" if "cg" in row else f"{'':7}"
        print(
            f"{name:13} {kind:7} {row['m']:8d} {row['ms']:9.1f} {ratio:8.1f} "
            f"{row['peak_mb']:8.0f} {row['accuracy']:6.3f} {row['iterations']:5d} {cg}",
            flush=True,
        )


if __name__ == "__main__":
    main()
