"""Full-batch LM / L-BFGS across processes with MultiWorkerMirroredStrategy.

Every solver decision (step accepted, damping raised, line-search point) is
taken on the loss, gradient and J'J summed over all workers, so `fit` on two
workers gives the iterates, and the History, of one process on all the data.
Two ways to hand each worker its data (--feed):

* `all` (Keras's convention): every worker calls
  `trainer.fit(x, y, batch_size=len(x))` with the whole data set; each batch
  is split into one piece per replica and each worker trains on its own.
* `share`: each worker holds only its own rows and passes them as a dataset
  from `strategy.distribute_datasets_from_function`, which Keras neither
  splits nor shards; `gz.wrap(model, batch_mode=True)` says that the
  dataset repeats the same full batch.

Run one worker per process, each with its own TF_CONFIG:

    TF_CONFIG='{"cluster": {"worker": ["localhost:12345", "localhost:12346"]},
                "task": {"type": "worker", "index": 0}}' \\
        python examples/multi_worker.py --method lm,lbfgs --out w0.npz

or let the script start the workers itself on loopback ports:

    python examples/multi_worker.py --launch 2 --method lbfgs --feed share

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

    if method == "lm":
        # The lecture's damping rule: its iterates follow the data smoothly,
        # so the workers' sums (added in another order) give one process's
        # iterates to rounding. The default trust-region rule's iterates
        # moved by 1e-4 when y moved by 1e-15 (measured on this problem).
        return gz.LevenbergMarquardt(damping_rule="lecture")
    return gz.LBFGS()


def share_dataset(strategy, x, y, rows):
    """This worker's rows as a distributed dataset that repeats one full
    batch: no auto-sharding, no rebatching (with several local replicas,
    each gets its own piece of the rows)."""
    import numpy as np
    import tensorflow as tf

    def dataset_fn(context):
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        pieces = np.array_split(rows, local_replicas)
        dataset = tf.data.Dataset.from_tensors((x[pieces[0]], y[pieces[0]]))
        for piece in pieces[1:]:
            dataset = dataset.concatenate(tf.data.Dataset.from_tensors((x[piece], y[piece])))
        return dataset.repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def train(strategy, method, epochs, feed="all", index=0, workers=1):
    """Fit on the whole problem as worker `index` of `workers`; returns the
    trained weights and the History's logs, with the trained model's loss
    from `evaluate` added."""
    import numpy as np

    import keras_gdzoo as gz

    x, y = data()
    with strategy.scope():
        model = build_model()
        trainer = gz.wrap(model, batch_mode=True if feed == "share" else None)
        trainer.compile(optimizer=make_solver(method), loss="mse")
    if feed == "all":
        history = trainer.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0)
        loss = trainer.evaluate(x, y, batch_size=len(x), verbose=0)
    else:
        rows = np.array_split(np.arange(len(x)), workers)[index]
        dataset = share_dataset(strategy, x, y, rows)
        history = trainer.fit(dataset, steps_per_epoch=1, epochs=epochs, verbose=0, shuffle=False)
        loss = trainer.evaluate(dataset, steps=1, verbose=0)
    return [v.numpy() for v in model.weights], dict(history.history, evaluate=[loss])


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
    results = {}
    for feed in args.feed.split(","):
        for method in args.method.split(","):
            weights, logs = train(strategy, method, args.epochs, feed, index, len(workers))
            for i, w in enumerate(weights):
                results[f"{feed}_{method}_{i}"] = w
            for key, values in logs.items():
                results[f"{feed}_{method}_log_{key}"] = np.asarray(values)
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


def launch(count, method, epochs, timeout, out_dir, feed="all"):
    """Start `count` workers on loopback ports; return their exit codes and
    result files (weights and History logs)."""
    workers = [f"127.0.0.1:{port}" for port in free_ports(count)]
    processes, outputs = [], []
    # The workers import keras_gdzoo from this checkout, as the caller does.
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(p for p in (checkout, os.environ.get("PYTHONPATH")) if p)
    for index in range(count):
        env = dict(os.environ, PYTHONPATH=path)
        env["TF_CONFIG"] = json.dumps(
            {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        )
        out = os.path.join(out_dir, f"worker{index}.npz")
        outputs.append(out)
        command = [sys.executable, os.path.abspath(__file__), "--method", method,
                   "--feed", feed, "--epochs", str(epochs), "--timeout", str(timeout),
                   "--out", out]
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
    parser.add_argument("--feed", default="all",
                        help="all: every worker passes all the data (Keras's convention); "
                        "share: each passes only its own rows; or both: all,share")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", default=None, help="where a worker saves its weights and History logs (.npz)")
    parser.add_argument("--launch", type=int, default=0, help="start this many workers here")
    args = parser.parse_args(argv)
    if set(args.method.split(",")) - {"lm", "lbfgs"}:
        parser.error(f"--method takes lm, lbfgs or lm,lbfgs. Received: {args.method}")
    if set(args.feed.split(",")) - {"all", "share"}:
        parser.error(f"--feed takes all, share or all,share. Received: {args.feed}")
    if args.launch:
        import tempfile

        with tempfile.TemporaryDirectory() as out_dir:
            codes, _ = launch(
                args.launch, args.method, args.epochs, args.timeout, out_dir, args.feed
            )
        print("worker exit codes:", codes)
        return max(abs(c) for c in codes)
    try:
        workers, index = check_tf_config(os.environ.get("TF_CONFIG", ""))
    except ValueError as error:
        sys.stderr.write(f"error: {error}\n")
        return 2
    worker(args, workers, index)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
