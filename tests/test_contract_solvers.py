"""The Keras optimizer contract for every full-batch solver (table-driven).

A solver moves the weights itself after evaluating the loss at trial points,
so the `keras.optimizers.Optimizer` arguments that Keras applies inside
`Optimizer.apply` (clipping, EMA, weight decay, loss scaling, gradient
accumulation) and a learning rate have no meaning for it: each is refused
by name at construction, and a solver never ends `fit` on non-finite
weights. Mixed precision and XLA fits end with finite weights.
"""

import warnings

import keras
import numpy as np
import pytest

import keras_gdzoo as gz

SOLVERS = {
    "sd": gz.SteepestDescent,
    "cg": gz.ConjugateGradient,
    "bfgs": gz.BFGS,
    "lbfgs": gz.LBFGS,
    "rprop": gz.Rprop,
    "newton": gz.Newton,
    "lm": gz.LevenbergMarquardt,
}

# Each base argument with a value that would change a Keras optimizer's steps.
BASE_KWARGS = {
    "learning_rate": 0.1,
    "clipnorm": 1.0,
    "clipvalue": 0.5,
    "global_clipnorm": 1.0,
    "use_ema": True,
    "ema_momentum": 0.5,
    "ema_overwrite_frequency": 3,
    "weight_decay": 0.01,
    "loss_scale_factor": 128.0,
    "gradient_accumulation_steps": 2,
}


@pytest.mark.parametrize("kwarg", sorted(BASE_KWARGS))
@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_every_base_argument_is_refused_by_name(name, kwarg):
    value = BASE_KWARGS[kwarg]
    with pytest.raises(ValueError, match=rf"Argument `{kwarg}` is not supported by"):
        SOLVERS[name](**{kwarg: value})


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_defaults_of_base_arguments_and_old_configs_are_accepted(name):
    cls = SOLVERS[name]
    cls(use_ema=False, clipnorm=None)  # Keras's own defaults change nothing
    config = cls().get_config()
    assert not set(config) & set(BASE_KWARGS)
    # A file written before the refusal holds the base arguments at their
    # defaults (and the placeholder learning rate 1.0).
    legacy = dict(config, learning_rate=1.0, use_ema=False, ema_momentum=0.99, clipnorm=None)
    assert cls.from_config(legacy).get_config() == config
    with pytest.raises(ValueError, match="use_ema"):
        cls.from_config(dict(config, use_ema=True))


def test_unknown_argument_is_named():
    with pytest.raises(ValueError, match="unexpected argument `momentum`"):
        gz.LBFGS(momentum=0.9)


def _fit(solver, epochs=3, **compile_kwargs):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 2)).astype("float32")
    y = np.sin(x[:, :1]).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((2,)),
            keras.layers.Dense(3, activation="tanh"),
            keras.layers.Dense(1, dtype="float32"),
        ]
    )
    trainer = gz.wrap(model)
    trainer.compile(optimizer=solver, loss="mse", **compile_kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        history = trainer.fit(x, y, batch_size=len(x), epochs=epochs, verbose=0).history
    return model, history


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_mixed_float16_fit_ends_with_finite_weights(name):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, history = _fit(SOLVERS[name]())
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.layers[0].compute_dtype == "float16"
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert np.isfinite(history["loss"]).all()
    assert history["loss"][-1] <= history["loss"][0]


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_jit_compiled_fit_ends_with_finite_weights(name):
    model, history = _fit(SOLVERS[name](), jit_compile=True)
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())
    assert history["loss"][-1] <= history["loss"][0]


@pytest.mark.parametrize("cls", [gz.Newton, gz.LevenbergMarquardt], ids=lambda c: c.__name__)
def test_cg_settings_are_refused_where_no_cg_runs(cls):
    with pytest.raises(ValueError, match="`cg_max_iterations` and `cg_tolerance` are not used"):
        cls(linear_solver="cholesky", cg_max_iterations=7)
    with pytest.raises(ValueError, match="not used"):
        cls(linear_solver="cholesky", cg_tolerance=0.5)
    dense = cls(linear_solver="cholesky")
    assert type(dense).from_config(dense.get_config()).linear_solver == "cholesky"
    assert cls(linear_solver="cg", cg_max_iterations=7).cg_max_iterations == 7
