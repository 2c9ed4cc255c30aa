"""MultiWorkerMirroredStrategy on loopback: two worker processes, each with
half the data, train LM and L-BFGS full-batch; the result equals one process
on all the data. Plus the failure paths: a malformed TF_CONFIG and a worker
whose peer never comes, both ending quickly with a clear message."""

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

EPOCHS = 4


def test_two_workers_equal_one_process(tmp_path):
    codes, outputs = multi_worker.launch(2, "lm,lbfgs", EPOCHS, 240, str(tmp_path))
    assert codes == [0, 0]
    keras.config.set_floatx("float64")
    x, y = multi_worker.data()
    for method in ("lm", "lbfgs"):
        expected = multi_worker.train(
            tf.distribute.get_strategy(), x, y, method, EPOCHS, len(x)
        )
        for output in outputs:
            saved = np.load(output)
            for i, w in enumerate(expected):
                np.testing.assert_allclose(saved[f"{method}_{i}"], w, rtol=1e-7, atol=1e-9)


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
    result = run_worker(json.dumps(config), 20)
    assert result.returncode != 0
    assert "gives up after 20 s" in result.stderr
    # Either the friendly message (Python watchdog) or faulthandler's dump,
    # when TensorFlow blocks in C++ holding the GIL.
    assert "no result within 20 s" in result.stderr or "Timeout (0:00:25)" in result.stderr
