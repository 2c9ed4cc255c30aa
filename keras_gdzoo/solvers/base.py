"""The contract between full-batch solvers and whatever supplies the loss.

A solver never touches a Keras model. It sees an `Objective`: the loss E on
the current batch as a function of one flat weight vector w (m numbers), and
takes one iteration with `Solver.step(w, state, objective)`, a pure function
of tensors. Its state (BFGS's B, L-BFGS's ring buffer, Rprop's step sizes,
LM's damping...) is a dict of tensors that `SolverModel` keeps in optimizer
variables, so it is saved in `.keras` files and restored exactly.

Because `step` is pure, a whole iteration, line search included, traces into
one `tf.function`, and the same solver runs on a Keras model
(`keras_gdzoo.model.ModelObjective`), on a plain function of a vector
(`FunctionObjective`, used by the tests and the `gdzoo trajectories`
command) and under `tf.distribute` (the objective reduces across replicas).
"""

import math
import os

import keras
import tensorflow as tf

# Logs key a solver sets to 1.0 when it cannot go on (damping over its cap,
# line search failed even along -g). `SolverModel.fit` stops training then.
STOP = "stop_training"


class Objective:
    """The loss E(w) on one batch, as a solver may query it.

    Every quantity is the *mean* over the batch (the lecture's
    E(w) = 1/n sum L_i), already reduced across replicas. Subclasses implement
    what they can; a solver documents what it needs.

    Attributes:
        size: m, the number of weights.
        dtype: dtype of w and of every returned tensor.
    """

    size = None
    dtype = None
    #: True when every call sees the same function (a fixed batch or a plain
    #: function): a solver may then re-use the value and gradient its last
    #: line search returned instead of evaluating at w again. A Keras batch
    #: changes between fit steps (mini-batch mode), so models say False.
    stationary = False

    def value(self, w):
        """E(w), a scalar tensor."""
        raise NotImplementedError

    def value_and_gradient(self, w):
        """(E(w), dE/dw) with dE/dw of shape [m]."""
        raise NotImplementedError

    def gauss_newton(self, w):
        """(E(w), g, A) with g = 1/n sum J_i' e_i = dE/dw and
        A = 1/n sum J_i' J_i, the Gauss-Newton matrix ([m, m]).

        E is the lecture's quadratic loss 1/(2n) sum e_i'e_i for residual
        objectives (other losses use their generalized Gauss-Newton form, see
        `keras_gdzoo.curvature`)."""
        raise NotImplementedError

    def gauss_newton_sample_space(self, w):
        """(E(w), g, system) with `system.solve(mu)` giving (mu I + A)^-1 g
        through the (n K) x (n K) matrix J J' (see
        `keras_gdzoo.curvature.SampleSpaceSystem`); for objectives with
        fewer residuals than weights."""
        raise NotImplementedError

    def prefers_sample_space(self, w):
        """Whether `gauss_newton_sample_space` is the cheaper form (n K < m):
        a Python bool or a boolean tensor. Default: never."""
        return False

    def hessian(self, w):
        """(E(w), g, H) with the exact Hessian H of E ([m, m])."""
        raise NotImplementedError

    def hessian_vector_product(self, w, v):
        """H(w) v without forming H."""
        with tf.GradientTape() as outer:
            outer.watch(w)
            _, g = self.value_and_gradient(w)
            gv = tf.reduce_sum(g * tf.stop_gradient(v))
        return outer.gradient(gv, w)


class FunctionObjective(Objective):
    """An `Objective` for a plain differentiable function of a vector.

    Args:
        function: maps a 1-D tensor w to a scalar tensor E(w).
        size: the length m of w.
        dtype: dtype of w.
        residuals: optional function mapping w to a 1-D tensor e(w) of
            residuals with E(w) = 1/2 sum e(w)^2 (a least-squares objective
            with n = 1 example of K outputs, in the lecture's notation). Needed
            for `gauss_newton`.

    Example:

    >>> rosen = lambda w: (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2
    >>> objective = FunctionObjective(rosen, size=2, dtype="float64")
    """

    stationary = True

    def __init__(self, function, size, dtype="float32", residuals=None):
        self.function = function
        self.size = int(size)
        self.dtype = tf.as_dtype(dtype)
        self.residuals = residuals

    def value(self, w):
        return tf.convert_to_tensor(self.function(w), self.dtype)

    def value_and_gradient(self, w):
        with tf.GradientTape() as tape:
            tape.watch(w)
            value = self.value(w)
        return value, tape.gradient(value, w)

    def gauss_newton(self, w):
        if self.residuals is None:
            raise ValueError(
                "This objective has no residual form: pass `residuals=` to "
                "FunctionObjective to use Gauss-Newton / Levenberg-Marquardt."
            )
        with tf.GradientTape() as tape:
            tape.watch(w)
            e = tf.reshape(tf.convert_to_tensor(self.residuals(w), self.dtype), [-1])
        jacobian = tape.jacobian(e, w)
        value = 0.5 * tf.reduce_sum(e * e)
        gradient = tf.linalg.matvec(jacobian, e, transpose_a=True)
        return value, gradient, tf.matmul(jacobian, jacobian, transpose_a=True)

    def hessian(self, w):
        with tf.GradientTape() as outer:
            outer.watch(w)
            value, gradient = self.value_and_gradient(w)
        return value, gradient, outer.jacobian(gradient, w)


def solver_dtype(dtype):
    """The dtype of a solver's own arithmetic for weights of `dtype`: float64
    for float32 and narrower models (the iterate, histories, line-search
    scalars, J'J and its solves), the weights' own dtype otherwise. The model
    still evaluates in its own dtype."""
    dtype = tf.as_dtype(dtype)
    return tf.float64 if dtype.is_floating and dtype.size < 8 else dtype


def reuses_evaluations(objective):
    """Whether E and g computed at the end of one step still hold at the next.

    True when every call sees the same function (`objective.stationary`: a
    plain function, or a Keras model in batch mode): a step that already
    evaluated E and g at the point it moved to keeps them in its state and
    the next step starts from them instead of paying one more evaluation. A
    mini-batch objective sees a new batch each step and must re-evaluate.
    """
    return bool(getattr(objective, "stationary", isinstance(objective, FunctionObjective)))


def dense_matrix_guard(method, size, dtype, copies=1, budget_bytes=None):
    """Refuse, before allocating, an m x m matrix that would not fit.

    Args:
        method: the solver's name for the message.
        size: m.
        dtype: element dtype.
        copies: how many m x m matrices the method holds at once.
        budget_bytes: the limit; default half of this machine's memory.
    """
    itemsize = tf.as_dtype(dtype).size
    needed = copies * size * size * itemsize
    if budget_bytes is None:
        budget_bytes = _available_memory() // 2
    if needed > budget_bytes:
        raise ValueError(
            f"{method} needs {copies} dense {size} x {size} matrix"
            f"{'es' if copies > 1 else ''} for a model with m={size} trainable "
            f"weights: {needed / 2**30:.1f} GiB, more than the "
            f"{budget_bytes / 2**30:.1f} GiB allowed. Use a per-parameter "
            "optimizer, LBFGS, or a smaller model."
        )


def _available_memory():
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        page_size = os.sysconf("SC_PAGE_SIZE")
        return pages * page_size
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30



# The `keras.optimizers.Optimizer` arguments and their defaults. Keras applies
# them in `Optimizer.apply`, which a solver never calls (it moves the weights
# itself after evaluating the loss at trial points), so a solver refuses them.
_BASE_DEFAULTS = {
    "learning_rate": 1.0,
    "weight_decay": None,
    "clipnorm": None,
    "clipvalue": None,
    "global_clipnorm": None,
    "use_ema": False,
    "ema_momentum": 0.99,
    "ema_overwrite_frequency": None,
    "loss_scale_factor": None,
    "gradient_accumulation_steps": None,
}

_WHY = {
    "learning_rate": "it has no learning rate (its step length comes from its "
    "line search, damping or step-size rule)",
    "weight_decay": "add a `kernel_regularizer` to the layers instead: the "
    "penalty is then part of the objective the solver minimizes",
    "clipnorm": "it does not take gradient steps that could be clipped",
    "clipvalue": "it does not take gradient steps that could be clipped",
    "global_clipnorm": "it does not take gradient steps that could be clipped",
    "use_ema": "it keeps no moving average of the weights",
    "ema_momentum": "it keeps no moving average of the weights",
    "ema_overwrite_frequency": "it keeps no moving average of the weights",
    "loss_scale_factor": "it evaluates the loss itself, unscaled",
    "gradient_accumulation_steps": "one fit batch is one iteration; pass a "
    "larger batch instead",
}


def _is_default(key, value, default):
    if key == "learning_rate":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and value == 1.0
    return value is default or value == default


def _refuse_base_arguments(solver, kwargs):
    for key in list(kwargs):
        if key not in _BASE_DEFAULTS:
            raise ValueError(f"{solver} got an unexpected argument `{key}`. Received: {key}={kwargs[key]!r}")
        if key == "learning_rate" or not _is_default(key, kwargs[key], _BASE_DEFAULTS[key]):
            raise ValueError(
                f"Argument `{key}` is not supported by {solver}: {_WHY[key]}. "
                f"Received: {key}={kwargs[key]!r}"
            )


class Solver(keras.optimizers.Optimizer):
    """Base class of full-batch solvers.

    A solver is a `keras.optimizers.Optimizer`, so `compile`, `get_config`
    and `.keras` files treat it like any optimizer, but it cannot be driven
    by gradients alone: `model.compile(optimizer=solver)` on an ordinary
    model fails at the first step with an error naming `keras_gdzoo.wrap`.

    Subclasses implement:

    * `state_spec(size, dtype)`: dict name -> (shape, initial value) of the
      solver's state; `build` turns it into optimizer variables.
    * `step(w, state, objective)` -> `(w_new, state_new, logs)`: one
      iteration, pure tensors in and out; `logs` maps names to scalars shown
      in fit logs and History. Set `logs[STOP] = 1.0` when the solver cannot
      go on; `stop_message` says why.
    """

    #: Shown when a solver asks training to stop.
    stop_message = "the solver cannot make progress"

    def __init__(self, name=None, **kwargs):
        _refuse_base_arguments(type(self).__name__, kwargs)
        # Keras's base class needs a learning rate; no solver has one (a
        # placeholder that nothing reads, kept out of `get_config`).
        super().__init__(learning_rate=1.0, name=name)
        self._solver_state = {}

    def get_config(self):
        config = super().get_config()
        return {key: value for key, value in config.items() if key not in _BASE_DEFAULTS}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        # Files written before solvers refused the base arguments hold them
        # with Keras's defaults (and the placeholder learning rate 1.0).
        config = dict(config)
        for key, default in _BASE_DEFAULTS.items():
            if key in config and _is_default(key, config[key], default):
                config.pop(key)
        return cls(**config)

    # -- to implement -------------------------------------------------------
    def state_spec(self, size, dtype):
        return {}

    def step(self, w, state, objective):
        raise NotImplementedError

    def check_size(self, size, dtype):
        """Raise before allocating when m makes the method impossible."""

    # -- Keras plumbing -----------------------------------------------------
    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        size = int(sum(math.prod(v.shape) for v in var_list))
        dtype = solver_dtype(var_list[0].dtype if var_list else keras.config.floatx())
        self.check_size(size, dtype)
        self._solver_state = {}
        for key, (shape, initial) in self.state_spec(size, dtype).items():
            self._solver_state[key] = self.add_variable(
                shape=shape,
                initializer=keras.initializers.Constant(initial),
                dtype=dtype,
                name=key,
            )
        self.solver_size = size
        self.iterate = None
        if var_list and tf.as_dtype(var_list[0].dtype) != dtype:
            # The solver's own iterate, for weights narrower than its
            # arithmetic: the model's variables hold it rounded, and the next
            # step resumes from it (not from the rounded weights) while they
            # still hold exactly that rounding.
            self.iterate = self.add_variable(
                shape=[size], initializer="zeros", dtype=dtype, name="iterate"
            )
            self.iterate_known = self.add_variable(
                shape=[], initializer="zeros", dtype=dtype, name="iterate_known"
            )

    def resume_point(self, w, rounded):
        """The iterate to start from: the kept one when `rounded(kept)`
        equals the weights `w` (nothing else changed them), else `w`."""
        if getattr(self, "iterate", None) is None:
            return w
        kept = tf.convert_to_tensor(self.iterate.value)
        same = (self.iterate_known > 0) & tf.reduce_all(tf.equal(rounded(kept), w))
        return tf.where(same, kept, w)

    def keep_iterate(self, w):
        if getattr(self, "iterate", None) is not None:
            self.iterate.assign(w)
            self.iterate_known.assign(tf.ones([], self.iterate_known.dtype))

    @property
    def solver_state(self):
        """The state variables, by name."""
        return self._solver_state

    def read_state(self):
        return {k: tf.convert_to_tensor(v.value) for k, v in self._solver_state.items()}

    def write_state(self, state):
        for key, variable in self._solver_state.items():
            variable.assign(state[key])

    def initial_state(self, size, dtype):
        """The state as tensors, without variables (for `minimize`)."""
        dtype = tf.as_dtype(dtype)
        return {
            key: tf.fill(shape, tf.constant(initial, dtype)) if shape else tf.constant(initial, dtype)
            for key, (shape, initial) in self.state_spec(size, dtype).items()
        }

    def forget_evaluations(self):
        """Drop E and g kept from the last step (the data changed)."""
        variable = self._solver_state.get("point_known")
        if variable is not None:
            variable.assign(tf.zeros_like(variable))

    def apply(self, grads, trainable_variables=None):
        raise ValueError(
            f"{type(self).__name__} is a full-batch solver: it evaluates the "
            "loss at trial points, which a plain Keras model cannot offer. "
            "Wrap the model first: `trainer = keras_gdzoo.wrap(model); "
            f"trainer.compile(optimizer=keras_gdzoo.{type(self).__name__}(...), "
            "loss=...)`."
        )

    def apply_gradients(self, grads_and_vars):
        grads, variables = zip(*grads_and_vars)
        self.apply(grads, variables)

    def update_step(self, gradient, variable, learning_rate):
        self.apply([gradient], [variable])

    # -- outside Keras ------------------------------------------------------
    def minimize(self, objective, w0, iterations=100, tolerance=None, jit_compile=False):
        """Run `iterations` steps on an `Objective` (or a plain function).

        Returns `(w, history)` where `history` is a list of dicts holding each
        iterate `w` (NumPy) and the step's logs. Used by the tests and by
        `gdzoo trajectories`; stops early when a step sets `stop_training` or
        the gradient norm falls under `tolerance`.
        """
        w = tf.convert_to_tensor(w0)
        if not isinstance(objective, Objective):
            objective = FunctionObjective(objective, size=w.shape[0], dtype=w.dtype)
        self.check_size(objective.size, objective.dtype)
        state = self.initial_state(objective.size, objective.dtype)
        def one_step(w, state):
            return self.step(w, state, objective)

        step = tf.function(one_step, jit_compile=jit_compile, reduce_retracing=True)
        history = [{"w": w.numpy()}]
        for _ in range(iterations):
            w, state, logs = step(w, state)
            record = {k: float(v) for k, v in logs.items()}
            record["w"] = w.numpy()
            history.append(record)
            if record.get(STOP, 0.0) > 0:
                break
            if tolerance is not None:
                _, g = objective.value_and_gradient(w)
                if float(tf.norm(g)) < tolerance:
                    break
        return w, history

