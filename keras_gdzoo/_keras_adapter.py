"""The places where `SolverModel` reaches past Keras's documented hooks.

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

Under MultiWorkerMirroredStrategy `SolverModel` overrides
`make_test_function` the same way (Keras's own reduces the test step's
logs with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars
there); `evaluate` then calls `train_function` too.

`symbolic_build_batch`: under any `tf.distribute` strategy, Keras 3.15's
`fit` and `evaluate` first build the model symbolically from their first
batch, which they turn into one batch with `strategy.reduce("MEAN", batch)`.
That call is given the whole (x, y) structure at once; MirroredStrategy
accepts it, but MultiWorkerMirroredStrategy's collective reduction
refuses it ("Attempt to convert a value (PerReplica...) to a Tensor"), so
plain Keras `fit` cannot start under it. The build only reads the batch's
shapes and dtypes, which this process's first replica's shard has too, so
under MultiWorkerMirroredStrategy `SolverModel` overrides
`_maybe_symbolic_build`, a private Keras method, to hand Keras that shard.
Building the model, its metrics and the optimizer before `fit` does not
help: the reduction runs before Keras looks at what is built. Should a
Keras release rename the method, the override goes unused and
MultiWorkerMirroredStrategy `fit` fails as plain Keras does
(tests/test_multi_worker.py says so).
"""

import keras
import tensorflow as tf


def train_function(step, steps_per_execution, fixed_batch=lambda: None):
    """The function `fit` (or `evaluate`) calls with its data iterator:
    `steps_per_execution` solver iterations (test steps) per call (Keras's
    callbacks and logs handling run once per call), returning the last
    iteration's logs. When `fixed_batch()` returns a batch, the iterator is
    known to yield only that batch (batch mode on in-memory data) and the
    steps take it without pulling from the iterator."""

    def run(iterator):
        # The loop stays in Python: a tf.while_loop around whole solver
        # iterations measured slower (`SolverModel.solve` runs one for long
        # full-batch runs).
        logs = None
        batch = fixed_batch()
        for _ in range(steps_per_execution):
            if batch is not None:
                data = batch
            else:
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


def symbolic_build_batch(strategy, iterator):
    """The first batch of `fit`'s epoch iterator as plain tensors: this
    process's first replica's shard of each distributed value (what Keras's
    symbolic build needs: shapes and dtypes), with no cross-worker
    reduction. Keras resets the iterator after the build."""
    for _, _, batches in iterator:
        batch = next(batches)
        break
    else:
        return None

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return tf.nest.map_structure(local, batch)
