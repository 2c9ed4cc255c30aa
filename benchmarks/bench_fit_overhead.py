"""What a batch-mode `fit` iteration costs around the solver step (issue 14).

One run, the same sinc(10x) problem as bench_fullbatch.py (2,000 points,
1-20-1 tanh, float32), three timings per iteration:

* bare: gz `LBFGS` inside `trainer.solve` (one graph call, no Python or
  callbacks per iteration): the solver step itself;
* fit: the natural call `trainer.fit(x, y, batch_size=len(x), epochs=E)` on
  NumPy arrays (one iteration per epoch);
* Keras loop: plain Keras `fit` on the same arrays and batch size, the
  same model compiled with `keras.optimizers.SGD(learning_rate=0.0)`, which
  costs one forward and backward pass per epoch: Keras's own per-epoch
  machinery (callbacks, logs, its data handling) plus a trivial step; and
  the same on a repeated `tf.data.Dataset` with `steps_per_epoch=1`
  (Keras's least per-epoch cost: no input pipeline rebuilt per epoch).

It prints fit / bare and fit against bare + (Keras loop - one model
evaluation), the issue's "bare solver step plus Keras's callbacks".

Run: python benchmarks/bench_fit_overhead.py [--epochs 300]
"""

import argparse
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_gdzoo as gz  # noqa: E402


def data():
    x = np.linspace(-1.0, 1.0, 2000, dtype="float32").reshape(-1, 1)
    return x, (np.sin(10.0 * x) / (10.0 * x)).astype("float32")


def network():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(20, "tanh"), keras.layers.Dense(1)]
    )


def per_epoch(model, x, y, epochs, **fit_kwargs):
    """Median seconds per epoch of `model.fit`, the first (tracing) left out."""

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.marks = []

        def on_epoch_end(self, epoch, logs=None):
            self.marks.append(time.perf_counter())

    clock = Clock()
    fit_kwargs.setdefault("batch_size", None if y is None else len(x))
    model.fit(x, y, epochs=epochs, verbose=0, shuffle=False, callbacks=[clock], **fit_kwargs)
    return float(np.median(np.diff(clock.marks[1:])))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=300)
    args = parser.parse_args()
    x, y = data()

    trainer = gz.wrap(network())
    trainer.compile(optimizer=gz.LBFGS(history=10), loss="mse")
    trainer.solve(x, y, iterations=5)  # tracing
    start = time.perf_counter()
    result = trainer.solve(x, y, iterations=args.epochs)
    bare = (time.perf_counter() - start) / result["iterations"]
    bare_evaluations = float(np.mean(result["evaluations"]))

    trainer = gz.wrap(network())
    trainer.compile(optimizer=gz.LBFGS(history=10), loss="mse")
    fit = per_epoch(trainer, x, y, args.epochs)

    plain = network()
    plain.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    keras_loop = per_epoch(plain, x, y, args.epochs)

    repeated = tf.data.Dataset.from_tensors((x, y)).repeat()
    keras_minimal = per_epoch(plain, repeated, None, args.epochs, steps_per_epoch=1)

    evaluate = tf.function(lambda x, y: _value_and_gradient(plain, x, y))
    evaluate(x, y)
    start = time.perf_counter()
    for _ in range(50):
        evaluate(x, y)
    evaluation = (time.perf_counter() - start) / 50
    keras_overhead = max(keras_loop - evaluation, 0.0)

    print(f"bare solver step (solve, {bare_evaluations:.2f} evaluations/iteration): "
          f"{1e3 * bare:.2f} ms")
    print(f"natural fit, per iteration:                {1e3 * fit:.2f} ms  "
          f"= {fit / bare:.2f}x the bare step")
    print(f"plain Keras fit, SGD(0), per epoch:        {1e3 * keras_loop:.2f} ms "
          f"(one model value and gradient {1e3 * evaluation:.2f} ms)")
    print(f"plain Keras fit, SGD(0), repeated dataset: {1e3 * keras_minimal:.2f} ms per epoch "
          f"(Keras's least per-epoch cost)")
    minimal_overhead = max(keras_minimal - evaluation, 0.0)
    print(f"bare step + Keras's least loop overhead:   {1e3 * (bare + minimal_overhead):.2f} ms; "
          f"fit / that = {fit / (bare + minimal_overhead):.2f}")
    print(f"bare step + Keras's loop overhead:         {1e3 * (bare + keras_overhead):.2f} ms; "
          f"fit / that = {fit / (bare + keras_overhead):.2f}")


def _value_and_gradient(model, x, y):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean((model(x) - y) ** 2)
    return loss, tape.gradient(loss, model.trainable_variables)


if __name__ == "__main__":
    main()
