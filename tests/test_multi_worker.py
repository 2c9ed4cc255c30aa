"""MultiWorkerMirroredStrategy on loopback: two worker processes train LM and
L-BFGS full-batch with `fit`, fed the whole data each (Keras's convention)
or each its own half (a dataset from `distribute_datasets_from_function`);
weights, History and `evaluate` equal one process on all the data. Plus
the failure paths: a malformed TF_CONFIG and a worker whose peer never
comes, both ending quickly with a clear message."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "multi_worker.py"
spec = importlib.util.spec_from_file_location("multi_worker", SCRIPT)
multi_worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(multi_worker)

# Two epochs: the second step already depends on the first's solver state
# (LM's damping, L-BFGS's memory). Each epoch is several collectives over
# loopback gRPC for each of the four runs, the bulk of this module's time.
EPOCHS = 2
METHODS = ("lm", "lbfgs")
FEEDS = ("all", "share")


@pytest.fixture(scope="module")
def worker_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("workers")
    codes, outputs = multi_worker.launch(
        2, ",".join(METHODS), EPOCHS, 240, str(out_dir), ",".join(FEEDS)
    )
    assert codes == [0, 0]
    return [dict(np.load(output)) for output in outputs]


@pytest.fixture(scope="module")
def one_process():
    """Each method's weights and History on all the data, one process."""
    # A module fixture runs before the per-test reset (conftest), so it sets
    # the whole Keras state itself: a global dtype policy left by an earlier
    # test would otherwise override floatx.
    floatx = keras.config.floatx()
    keras.utils.clear_session(free_memory=False)
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        return {
            method: multi_worker.train(tf.distribute.get_strategy(), method, EPOCHS)
            for method in METHODS
        }
    finally:
        keras.config.set_floatx(floatx)
        keras.utils.clear_session(free_memory=False)


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("method", METHODS)
def test_two_workers_fit_equals_one_process(worker_results, one_process, method, feed):
    weights, logs = one_process[method]
    assert len(logs["loss"]) == EPOCHS and len(logs["evaluate"]) == 1
    for saved in worker_results:
        for i, w in enumerate(weights):
            np.testing.assert_allclose(saved[f"{feed}_{method}_{i}"], w, rtol=1e-7, atol=1e-9)
        # The History of each worker: the loss (and every solver log) of the
        # whole data set, as one process logs it; and `evaluate`'s loss.
        names = {k[len(f"{feed}_{method}_log_"):] for k in saved if k.startswith(f"{feed}_{method}_log_")}
        assert names == set(logs)
        for name, values in logs.items():
            np.testing.assert_allclose(
                saved[f"{feed}_{method}_log_{name}"], values, rtol=1e-7, atol=1e-12, err_msg=name
            )


def run_worker(tf_config, timeout):
    env = dict(os.environ, TF_CONFIG=tf_config)
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--method", "lm", "--timeout", str(timeout)],
        env=env, capture_output=True, text=True, timeout=timeout + 120,
    )


@pytest.mark.parametrize(
    "tf_config, message",
    [
        ("not json", "TF_CONFIG must be JSON"),
        (json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}), "index"),
        (json.dumps({"cluster": {"worker": ["nohostport"]}, "task": {"type": "worker", "index": 0}}), "host:port"),
    ],
)
def test_bad_tf_config_is_refused_by_name(tf_config, message):
    with pytest.raises(ValueError, match=message):
        multi_worker.check_tf_config(tf_config)


def test_bad_tf_config_exits_2_with_one_line():
    result = run_worker("not json", 30)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error: TF_CONFIG must be JSON")
    assert "Traceback" not in result.stderr


def test_unreachable_worker_gives_up_with_a_message():
    port, missing = multi_worker.free_ports(2)
    config = {
        "cluster": {"worker": [f"127.0.0.1:{port}", f"127.0.0.1:{missing}"]},
        "task": {"type": "worker", "index": 0},
    }
    # 10 s: longer than the worker's imports (about 6 s on one busy core), so
    # it normally gives up while waiting for its peer.
    result = run_worker(json.dumps(config), 10)
    assert result.returncode != 0
    assert "gives up after 10 s" in result.stderr
    # Either the friendly message (Python watchdog) or faulthandler's dump,
    # when TensorFlow blocks in C++ holding the GIL.
    assert "no result within 10 s" in result.stderr or "Timeout (0:00:15)" in result.stderr
