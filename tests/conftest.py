"""Shared test set-up.

TensorFlow is configured once, before any test touches it: two logical CPU
devices (so `tf.distribute.MirroredStrategy` has two replicas on one
machine) and quiet logs.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0],
    [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def mirrored():
    """A MirroredStrategy over the two logical CPUs.

    One for the whole session: each MirroredStrategy numbers its collective
    ops from the same start, and two of them in one process can meet the
    same instance key with different shapes ("Shape mismatch in the
    collective instance").
    """
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    # free_memory=False: the full garbage collection costs about a second per
    # test on two cores, and nothing here needs it.
    keras.utils.clear_session(free_memory=False)
    keras.config.set_floatx("float32")
    yield
    keras.config.set_floatx("float32")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
