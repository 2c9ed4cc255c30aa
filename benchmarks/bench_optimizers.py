"""Per-step cost of keras_gdzoo optimizers against the Keras built-in with the
same arithmetic (docs/methods.md, "Speed and memory": "no more per step than the Keras
built-in").

Pairs, side by side in one process, on the same MLP 256-512-512-10 with the
same initial weights and the same batch of 64:

    gz.Adam       vs keras.optimizers.Adam      (eps inside / outside sqrt: same cost)
    gz.RMSProp    vs keras.optimizers.RMSprop   (G(0) = g0^2 / G(0) = 0: same cost)
    gz.Momentum   vs keras.optimizers.SGD(momentum=0.9)
    gz.AdaGrad    vs keras.optimizers.Adagrad

Two timings per optimizer; the members of a pair run back to back in
alternating order, and the ratios printed are medians of the per-repeat
ratios (wall-clock and process CPU time), so drift in machine load hits
both alike:

* train step: `model.train_on_batch` on a compiled model (forward, backward
  and update), the number the design rule is about;
* update only: `optimizer.apply_gradients` of fixed gradients inside one
  `tf.function`, which isolates the optimizer's own cost.

With `--sparse`, the cost of merging duplicate indices instead: an
`Embedding`-style IndexedSlices gradient (vocabulary 20,000 x 64, 2,048 token
slices per batch drawn from a Zipf law, so frequent tokens repeat), update
only, against the Keras built-in (which squares the slices before summing
duplicates, so its update is wrong; it is only the cost baseline).

Run: python benchmarks/bench_optimizers.py [--repeats 30] [--steps 10]
     [--jit-compile] (XLA; Keras's default "auto" is off on CPU-only machines)
     [--sparse]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402

EPSILON = 1e-7  # Keras's default; both members of a pair get the same value.
PAIRS = [
    (
        "Adam",
        lambda: gz.Adam(1e-3, epsilon=EPSILON),
        lambda: keras.optimizers.Adam(1e-3, epsilon=EPSILON),
    ),
    (
        "RMSProp",
        lambda: gz.RMSProp(1e-3, rho=0.9, epsilon=EPSILON),
        lambda: keras.optimizers.RMSprop(1e-3, rho=0.9, epsilon=EPSILON),
    ),
    (
        "Momentum",
        lambda: gz.Momentum(0.01, momentum=0.9),
        lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    ),
    (
        "AdaGrad",
        lambda: gz.AdaGrad(0.01, epsilon=EPSILON),
        lambda: keras.optimizers.Adagrad(0.01, epsilon=EPSILON),
    ),
]
BATCH = 64


def mlp():
    return keras.Sequential(
        [
            keras.Input((256,)),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(512, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


class TrainStep:
    """A compiled model whose `run(k)` does k train_on_batch calls."""

    def __init__(self, optimizer, weights, x, y, jit_compile):
        self.model = mlp()
        self.model.set_weights(weights)
        self.model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        self.x, self.y = x, y

    def run(self, steps):
        for _ in range(steps):
            self.model.train_on_batch(self.x, self.y)


class UpdateOnly:
    """`run(k)`: k apply_gradients of fixed gradients, in one tf.function."""

    def __init__(self, optimizer, weights, jit_compile):
        model = mlp()
        model.set_weights(weights)
        self.variables = model.trainable_variables
        rng = np.random.default_rng(1)
        self.gradients = [
            tf.constant(1e-3 * rng.normal(size=v.shape).astype("float32"))
            for v in self.variables
        ]
        self.optimizer = optimizer
        optimizer.build(self.variables)

        @tf.function(jit_compile=jit_compile)
        def run(steps):
            for _ in tf.range(steps):
                optimizer.apply_gradients(zip(self.gradients, self.variables))

        self._run = run

    def graph_size(self):
        """(all ops, ops on full-size tensors) in the graph of one update:
        a load-independent view of the per-step work."""

        @tf.function
        def one_step():
            self.optimizer.apply_gradients(zip(self.gradients, self.variables))

        graph = one_step.get_concrete_function().graph
        sizes = [
            max((o.shape.num_elements() or 0 for o in op.outputs), default=0)
            for op in graph.get_operations()
        ]
        smallest = min(v.shape.num_elements() for v in self.variables)
        return len(sizes), sum(size >= smallest for size in sizes)

    def run(self, steps):
        self._run(tf.constant(steps))
        # Block until the updates are done.
        self.variables[0].numpy()


SPARSE_PAIRS = [
    ("GD", lambda: gz.GradientDescent(0.01), lambda: keras.optimizers.SGD(0.01)),
    (
        "AdaGrad",
        lambda: gz.AdaGrad(0.01, epsilon=EPSILON),
        lambda: keras.optimizers.Adagrad(0.01, epsilon=EPSILON),
    ),
    (
        "Adam",
        lambda: gz.Adam(1e-3, epsilon=EPSILON),
        lambda: keras.optimizers.Adam(1e-3, epsilon=EPSILON),
    ),
]
VOCABULARY, WIDTH, TOKENS = 20_000, 64, 2_048


class SparseUpdate:
    """`run(k)`: k apply_gradients of one fixed IndexedSlices gradient of an
    embedding table, in one tf.function."""

    def __init__(self, optimizer, jit_compile):
        rng = np.random.default_rng(2)
        self.table = keras.Variable(
            rng.normal(size=(VOCABULARY, WIDTH)).astype("float32"), name="table"
        )
        tokens = np.minimum(rng.zipf(1.3, size=TOKENS) - 1, VOCABULARY - 1)
        self.repeats = TOKENS - len(np.unique(tokens))
        self.gradient = tf.IndexedSlices(
            tf.constant(1e-3 * rng.normal(size=(TOKENS, WIDTH)).astype("float32")),
            tf.constant(tokens.astype("int32")),
            tf.constant([VOCABULARY, WIDTH]),
        )
        optimizer.build([self.table])

        @tf.function(jit_compile=jit_compile)
        def run(steps):
            for _ in tf.range(steps):
                optimizer.apply_gradients([(self.gradient, self.table)])

        self._run = run

    def run(self, steps):
        self._run(tf.constant(steps))
        self.table.numpy()[0, 0]


def time_pair(ours, theirs, steps, repeats):
    """Per-step times of a pair run back to back in alternating order.

    Returns the median wall-clock seconds per step of each, and the medians
    of the per-repeat ratios ours/theirs in wall-clock and in process CPU
    time (all threads). Ratios of neighbouring runs cancel slow drift in
    machine load; CPU time also leaves out the time spent waiting for a core
    when other processes share the machine.
    """
    for runner in (ours, theirs):  # warm-up: tracing, first allocations
        runner.run(3)
        runner.run(steps)
    wall = {ours: [], theirs: []}
    cpu = {ours: [], theirs: []}
    for repeat in range(repeats):
        for runner in (ours, theirs) if repeat % 2 == 0 else (theirs, ours):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            runner.run(steps)
            wall[runner].append((time.perf_counter() - start_wall) / steps)
            cpu[runner].append((time.process_time() - start_cpu) / steps)

    def ratio(times):
        return statistics.median(a / b for a, b in zip(times[ours], times[theirs]))

    return (
        statistics.median(wall[ours]),
        statistics.median(wall[theirs]),
        ratio(wall),
        ratio(cpu),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--jit-compile", action="store_true")
    parser.add_argument("--sparse", action="store_true")
    args = parser.parse_args(argv)
    if args.sparse:
        return sparse_main(args)

    keras.utils.set_random_seed(0)
    weights = mlp().get_weights()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(BATCH, 256)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=(BATCH,)))

    print(
        f"MLP 256-512-512-10, batch {BATCH}, jit_compile={args.jit_compile}, "
        f"medians over {args.repeats} alternating repeats x {args.steps} steps"
    )
    header = (
        f"{'optimizer':<10} {'timing':<12} {'gz ms/step':>11} "
        f"{'keras ms/step':>14} {'gz/keras wall':>14} {'gz/keras cpu':>13}"
    )
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, ours, theirs in PAIRS:
        for label, make in (
            ("train step", lambda opt: TrainStep(opt, weights, x, y, args.jit_compile)),
            ("update only", lambda opt: UpdateOnly(opt, weights, args.jit_compile)),
        ):
            ours_time, theirs_time, wall_ratio, cpu_ratio = time_pair(
                make(ours()), make(theirs()), args.steps, args.repeats
            )
            worst = max(worst, cpu_ratio)
            print(
                f"{name:<10} {label:<12} {1e3 * ours_time:>11.3f} "
                f"{1e3 * theirs_time:>14.3f} {wall_ratio:>14.3f} {cpu_ratio:>13.3f}"
            )
    print(
        f"worst CPU-time ratio {worst:.3f} (goal <= 1.0; above 1.10 is a defect). "
        f"Load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        "on a shared machine trust the CPU-time column."
    )
    print()
    print("ops in the graph of one update (all / on full-size tensors), gz vs keras:")
    for name, ours, theirs in PAIRS:
        (a, b), (c, d) = [
            UpdateOnly(make(), weights, False).graph_size() for make in (ours, theirs)
        ]
        print(f"{name:<10} {a:>4} / {b:<4} vs {c:>4} / {d}")


def sparse_main(args):
    repeats = SparseUpdate(gz.GradientDescent(0.01), False).repeats
    print(
        f"Embedding {VOCABULARY} x {WIDTH}, {TOKENS} token slices per batch "
        f"({repeats} of them repeat a token), update only, "
        f"jit_compile={args.jit_compile}, medians over {args.repeats} "
        f"alternating repeats x {args.steps} steps"
    )
    header = (
        f"{'optimizer':<10} {'gz ms/step':>11} {'keras ms/step':>14} "
        f"{'gz/keras wall':>14} {'gz/keras cpu':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, ours, theirs in SPARSE_PAIRS:
        ours_time, theirs_time, wall_ratio, cpu_ratio = time_pair(
            SparseUpdate(ours(), args.jit_compile),
            SparseUpdate(theirs(), args.jit_compile),
            args.steps,
            args.repeats,
        )
        print(
            f"{name:<10} {1e3 * ours_time:>11.3f} {1e3 * theirs_time:>14.3f} "
            f"{wall_ratio:>14.3f} {cpu_ratio:>13.3f}"
        )


if __name__ == "__main__":
    main()
