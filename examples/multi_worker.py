"""Full-batch LM / L-BFGS across processes with MultiWorkerMirroredStrategy.

Each worker holds its own share of the data; every solver decision (step
accepted, damping raised, line-search point) is taken on the loss, gradient
and J'J summed over all workers, so the result equals one process training
on all the data.

Run one worker per process, each with its own TF_CONFIG:

    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --method lm,lbfgs --out w0.npz

or let the script start the workers itself on loopback ports:

    python examples/multi_worker.py --launch 2 --method lbfgs

A worker that cannot reach the others gives up after --timeout seconds
with a message (no hang); a malformed TF_CONFIG is refused at once.
"""

import argparse
import faulthandler
import json
import os
import socket
import subprocess
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def check_tf_config(text):
    """Return (workers, index) from a TF_CONFIG string, or raise ValueError."""
    try:
        config = json.loads(text)
        workers = config["cluster"]["worker"]
        task = config["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            "TF_CONFIG must be JSON like {\"cluster\": {\"worker\": [\"host:port\", ...]}, "
            f"\"task\": {{\"type\": \"worker\", \"index\": 0}}}}. Received: {text!r} ({error})"
        ) from None
    if task.get("type") != "worker":
        raise ValueError(f"TF_CONFIG task type must be 'worker'. Received: {task.get('type')!r}")
    if not isinstance(workers, list) or not workers:
        raise ValueError(f"TF_CONFIG cluster.worker must be a non-empty list. Received: {workers!r}")
    if not 0 <= index < len(workers):
        raise ValueError(
            f"TF_CONFIG task index must be in [0, {len(workers)}). Received: index={index}"
        )
    for address in workers:
        host, _, port = str(address).rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"TF_CONFIG worker address must be host:port. Received: {address!r}")
    return workers, index


def data(n=64):
    """The whole problem, float64: y = sin(3x) + x^2/2 on n points."""
    import numpy as np

    x = np.linspace(-1.0, 1.0, n)[:, None]
    return x, np.sin(3 * x) + 0.5 * x**2


def build_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((1,)), keras.layers.Dense(6, activation="tanh"), keras.layers.Dense(1)]
    )


def make_solver(method):
    import keras_gdzoo as gz

    return {"lm": gz.LevenbergMarquardt, "lbfgs": gz.LBFGS}[method]()


def train(strategy, x, y, method, epochs, global_batch):
    """Fit on (x, y): this worker's share when strategy spans several."""
    import keras_gdzoo as gz

    with strategy.scope():
        model = build_model()
        trainer = gz.wrap(model)
        trainer.compile(optimizer=make_solver(method), loss="mse")
    if strategy.num_replicas_in_sync == 1:
        trainer.fit(x, y, batch_size=global_batch, epochs=epochs, verbose=0, shuffle=False)
    else:
        # Keras 3.15's fit() cannot start under MultiWorkerMirroredStrategy
        # (its first-batch build reduces a PerReplica eagerly, which the
        # collective ops refuse), so each worker feeds its own share through
        # train_on_batch: the solver sums loss, gradient and J'J over workers.
        for _ in range(epochs):
            trainer.train_on_batch(x, y)
    return [v.numpy() for v in model.weights]


def worker(args, workers, index):
    def give_up():
        sys.stderr.write(
            f"worker {index}: no result within {args.timeout:.0f} s; is every worker of "
            f"{workers} running and reachable?\n"
        )
        sys.stderr.flush()
        os._exit(3)

    watchdog = threading.Timer(args.timeout, give_up)
    watchdog.daemon = True
    watchdog.start()
    # TensorFlow can wait for a missing peer inside C++ code that holds the
    # GIL, where no Python thread runs: faulthandler's watchdog is plain C.
    sys.stderr.write(
        f"worker {index}: waiting for {len(workers)} workers (gives up after "
        f"{args.timeout:.0f} s)\n"
    )
    faulthandler.dump_traceback_later(args.timeout + 5, exit=True)

    import keras
    import numpy as np
    import tensorflow as tf

    keras.config.set_floatx("float64")
    keras.config.disable_traceback_filtering()
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=args.timeout)
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    x, y = data()
    share = np.array_split(np.arange(len(x)), len(workers))[index]
    results = {}
    for method in args.method.split(","):
        for i, w in enumerate(train(strategy, x[share], y[share], method, args.epochs, len(x))):
            results[f"{method}_{i}"] = w
    watchdog.cancel()
    faulthandler.cancel_dump_traceback_later()
    if args.out:
        np.savez(args.out, **results)
    print(f"worker {index}: done", flush=True)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def launch(count, method, epochs, timeout, out_dir):
    """Start `count` workers on loopback ports; return their weight files."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes, outputs = [], []
    for index in range(count):
        env = dict(os.environ)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        out = os.path.join(out_dir, f"worker{index}.npz")
        outputs.append(out)
        command = [sys.executable, os.path.abspath(__file__), "--method", method,
                   "--epochs", str(epochs), "--timeout", str(timeout), "--out", out]
        processes.append(subprocess.Popen(command, env=env))
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout=timeout + 60))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(-9)
    for process in processes:
        if process.poll() is None:
            process.kill()
    return codes, outputs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="lm", help="lm, lbfgs or both: lm,lbfgs")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", default=None, help="where a worker saves its weights (.npz)")
    parser.add_argument("--launch", type=int, default=0, help="start this many workers here")
    args = parser.parse_args(argv)
    if args.launch:
        import tempfile

        with tempfile.TemporaryDirectory() as out_dir:
            codes, _ = launch(args.launch, args.method, args.epochs, args.timeout, out_dir)
        print("worker exit codes:", codes)
        return max(abs(c) for c in codes)
    if set(args.method.split(",")) - {"lm", "lbfgs"}:
        parser.error(f"--method takes lm, lbfgs or lm,lbfgs. Received: {args.method}")
    try:
        workers, index = check_tf_config(os.environ.get("TF_CONFIG", ""))
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    worker(args, workers, index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
