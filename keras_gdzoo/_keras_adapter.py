"""The two places where `SolverModel` reaches past Keras's documented hooks.

Keras's public way to customize training is `train_step`, which Keras runs
inside `strategy.run`, on each replica. A solver cannot run there: its line
search is a `tf.while_loop` whose every evaluation needs the loss summed over
all replicas, and MirroredStrategy forbids a cross-replica reduction inside
a replica's while loop. So `SolverModel` overrides `make_train_function`
(public, documented as overridable, but its contract with `fit` — the
iterator argument, `steps_per_execution`, returning the logs — is Keras's
internal convention) and runs the solver in cross-replica context. Keeping
that convention here, in one small module, leaves the rest of the package
on `keras.*` / `tf.*` alone.

`compile_from_config` is Keras's own, which skips models that override
`compile`; the wrapper overrides `compile` to record the loss it minimizes.
"""

import keras


def train_function(step, steps_per_execution):
    """The function `fit` calls with its data iterator: `steps_per_execution`
    solver iterations per call (Keras's callbacks and logs handling run once
    per call), returning the last iteration's logs."""

    def run(iterator):
        # The loop stays in Python: a tf.while_loop around whole solver
        # iterations measured slower (`SolverModel.solve` runs one for long
        # full-batch runs).
        logs = None
        for _ in range(steps_per_execution):
            try:
                data = next(iterator)
            except StopIteration:
                if logs is None:
                    raise
                break
            logs = step(data)
        return logs

    return run


def compile_from_config(model, config):
    """Compile `model` from a `.keras` file's compile config, then build its
    optimizer so that the saved optimizer variables load into it."""
    config = keras.saving.deserialize_keras_object(config)
    model.compile(**config)
    if hasattr(model, "optimizer") and model.built:
        model.optimizer.build(model.trainable_variables)
