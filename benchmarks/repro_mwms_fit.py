"""Plain Keras `fit` under MultiWorkerMirroredStrategy: the minimal reproduction.

Two workers on loopback ports, each with a Dense model compiled with
`keras.optimizers.SGD`, call `model.fit(x, y)` on the same arrays. With
Keras 3.15 / TensorFlow 2.21 each worker fails before its first step:

1. `fit`'s symbolic build reduces its first batch, the whole (x, y) tuple,
   with `strategy.reduce("MEAN", batch)`; the collective reduction takes
   one tensor, not a tuple: "ValueError: Attempt to convert a value
   (PerReplica:{...}) with an unsupported type ... to a Tensor".
2. With `--skip-build` (Keras's symbolic build given this worker's local
   batch instead, as `keras_gdzoo.SolverModel` does), the first train
   step's logs are reduced with `strategy.reduce("MEAN", v, axis=0)`,
   which fails on the scalar loss: "ValueError: Invalid reduction
   dimension 0 for input with 0 dimensions".

`keras_gdzoo.wrap(model)` with a full-batch solver avoids both (it builds
from the local shard and reduces its logs itself), so `trainer.fit` works.

    python benchmarks/repro_mwms_fit.py [--skip-build]

prints each worker's error (or its History) and exits 0 either way.
"""

import argparse
import json
import os
import socket
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_worker(skip_build):
    import faulthandler

    faulthandler.dump_traceback_later(120, exit=True)
    import keras
    import numpy as np
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=60)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    x = np.linspace(-1.0, 1.0, 64, dtype="float32")[:, None]
    y = np.sin(3.0 * x)
    with strategy.scope():
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    if skip_build:
        keras_build = type(model)._maybe_symbolic_build

        def local_build(self, iterator=None, data_batch=None):
            for _, _, batches in iterator:
                batch = next(batches)
                break
            batch = tf.nest.map_structure(
                lambda v: strategy.experimental_local_results(v)[0], batch
            )
            return keras_build(self, data_batch=batch)

        type(model)._maybe_symbolic_build = local_build
    try:
        history = model.fit(x, y, batch_size=64, epochs=2, verbose=0)
        print(f"worker {index}: fit ran: {history.history}", flush=True)
    except Exception as error:  # the reproduction: show what Keras raises
        message = " ".join(str(error).split())
        print(f"worker {index}: fit failed: {type(error).__name__}: {message[:300]}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-build", action="store_true",
                        help="get past the symbolic build, to see the next failure")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.skip_build)
        return 0
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    command = [sys.executable, os.path.abspath(__file__), "--worker"]
    if args.skip_build:
        command.append("--skip-build")
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, TF_CONFIG=json.dumps(config))
        processes.append(subprocess.Popen(command, env=env))
    for process in processes:
        try:
            process.wait(timeout=180)
        except subprocess.TimeoutExpired:
            process.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
