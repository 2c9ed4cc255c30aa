"""Serving export and reloading of wrapped models (issue: scale)."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

import keras_gdzoo as gz


def test_wrapped_model_exports_a_serving_savedmodel(tmp_path):
    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(2)]
    )
    x = np.random.default_rng(0).normal(size=(24, 3)).astype("float32")
    y = np.stack([x.sum(1), x[:, 0] * x[:, 1]], axis=1)
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Rprop(), loss="mse")
    trainer.fit(x, y, batch_size=len(x), epochs=3, verbose=0)

    trainer.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    np.testing.assert_allclose(served.serve(x).numpy(), trainer.predict(x, verbose=0), atol=1e-6)
    # the wrapped model is the trained one
    np.testing.assert_allclose(model.predict(x, verbose=0), trainer.predict(x, verbose=0), atol=0)


def test_keras_file_reloads_with_only_the_package_imported(tmp_path):
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    trainer = gz.wrap(model)
    trainer.compile(optimizer=gz.Rprop(variant="rprop-"), loss="mse")
    x = np.random.default_rng(1).normal(size=(16, 2)).astype("float32")
    trainer.fit(x, x[:, :1], batch_size=16, epochs=2, verbose=0)
    path = tmp_path / "wrapped.keras"
    trainer.save(path)
    expected = trainer.predict(x, verbose=0)
    np.save(tmp_path / "x.npy", x)
    # A fresh interpreter that imports nothing but keras and keras_gdzoo.
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, keras_gdzoo
        model = keras.saving.load_model({str(path)!r})
        assert type(model).__name__ == "SolverModel", type(model)
        assert type(model.optimizer).__name__ == "Rprop"
        assert model.optimizer.variant == "rprop-"
        np.save({str(tmp_path / "out.npy")!r}, model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), expected, atol=1e-6)
