"""Train MATLAB's SIN benchmark with a few methods from the same initial weights.

Every method goes through `gz.wrap`, which takes per-parameter optimizers
and full-batch solvers alike; one epoch is one iteration (batch mode). The
methods come from the registry `keras_gdzoo.methods` by their `gdzoo`
short names, with the learning rates the command uses. `gdzoo compare`
does the same with timings, several seeds and plots.

    python examples/compare_methods.py
"""

import numpy as np

import keras_gdzoo as gz
from keras_gdzoo import methods

problem = gz.problems.get("sin")  # 1-5-1 tanh net, one sine period, goal MSE 0.002

for name in ["lm", "bfgs", "rprop", "adam", "gd"]:
    method = methods.get(name)
    model = problem.build_model(seed=0)  # the same w(0) for every method
    trainer = gz.wrap(model)
    trainer.compile(optimizer=method.build(), loss=problem.loss)
    history = trainer.fit(problem.x_train, problem.y_train, batch_size=problem.n,
                          epochs=60, verbose=0)
    # fit logs the loss at the start of each epoch's iteration.
    losses = np.array(history.history["loss"])
    reached = np.flatnonzero(losses <= problem.goal)
    when = f"goal after {reached[0]} iterations" if reached.size else "goal not reached"
    print(f"{name:<6} {method.class_name:<20} final loss {losses[-1]:.2e}  ({when})")
