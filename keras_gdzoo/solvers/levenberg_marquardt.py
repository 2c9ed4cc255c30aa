"""The Levenberg-Marquardt method."""

import keras
import tensorflow as tf

from keras_gdzoo import curvature
from keras_gdzoo import matrix_free
from keras_gdzoo import validation
from keras_gdzoo.solvers import damping as damping_rules
from keras_gdzoo.solvers.base import STOP
from keras_gdzoo.solvers.base import Solver
from keras_gdzoo.solvers.base import dense_matrix_guard
from keras_gdzoo.solvers.base import reuses_evaluations
from keras_gdzoo.solvers.lm_systems import DIAGONAL_PROBES  # noqa: F401
from keras_gdzoo.solvers.lm_systems import _DenseTerms
from keras_gdzoo.solvers.lm_systems import _MatrixFreeTerms
from keras_gdzoo.solvers.lm_systems import _SampleSpaceTerms
from keras_gdzoo.solvers.newton import LINEAR_SOLVERS
from keras_gdzoo.solvers.newton import refuse_unused_cg_arguments
from keras_gdzoo.solvers.newton import resolve_linear_solver

#: The damping rule used when `damping_rule` is not given (see the class
#: docstring for why): "auto" is AUTO_RULES[0] where the step is solved by
#: a factorization, AUTO_RULES[1] where it is solved by CG.
DEFAULT_DAMPING_RULE = "auto"
AUTO_RULES = ("trust-region", "scaled-gain-ratio")

# Status codes, logged as `status` (as scipy.optimize.least_squares's,
# negative for a stop that is not convergence).
RUNNING = 0
GTOL = 1
FTOL = 2
XTOL = 3
FTOL_AND_XTOL = 4
DAMPING_EXCEEDED = -1
NOT_FINITE = -2

STATUS_MESSAGES = {
    RUNNING: "the solver cannot make progress",
    GTOL: "converged (gtol): the gradient is orthogonal to the residuals within "
    "gtol, max_j |g_j| / sqrt(2 E A_jj) <= gtol",
    FTOL: "converged (ftol): the actual and the predicted relative reductions of "
    "the loss are both below ftol",
    XTOL: "converged (xtol): the step is below xtol relative to the weights",
    FTOL_AND_XTOL: "converged (ftol and xtol): the relative reductions of the loss "
    "are below ftol and the step below xtol",
    DAMPING_EXCEEDED: "the damping exceeded max_damping: no step lowers the loss "
    "(a minimum, or a loss the model cannot lower)",
    NOT_FINITE: "the loss, gradient or Gauss-Newton matrix is not finite at the "
    "current weights (NaN or inf in the data?); weights and damping were kept",
}

_LECTURE_ARGUMENTS = ("damping_decrease", "damping_increase")



@keras.saving.register_keras_serializable(package="keras_gdzoo")
class LevenbergMarquardt(Solver):
    """Levenberg-Marquardt: Gauss-Newton steps with adaptive damping.

    For the quadratic loss E(w) = 1/(2n) sum_i e_i(w)'e_i(w), with J_i the
    K x m Jacobian of the error e_i of example i, A = 1/n sum_i J_i'J_i and
    g = 1/n sum_i J_i'e_i, one trial step is

        w(tau+1) = w(tau) - (A + mu D)^-1 g

    with D = I (the lecture) or D = diag(d), d the running maximum of
    diag(A) over the iterations (Marquardt's scaling, as MINPACK's `lmder`;
    `damping_rule` says which). A step that lowers the loss is kept; one that
    does not (or gives a non-finite loss) is undone and solved again with a
    larger mu, at most `attempts` times per iteration. How mu moves is the
    damping rule's (`keras_gdzoo.solvers.damping`):

    * `"trust-region"`: MINPACK's step control (Moré 1978), D = I: mu is
      solved, by Moré's safeguarded Newton iteration on the secular
      equation, so that the step has length ||delta|| = Delta within 10%
      (mu = 0 when the Gauss-Newton step is shorter); the radius Delta
      shrinks by a factor t in [0.1, 0.5] after a poor step (rho <= 1/4)
      and becomes 2 ||delta|| after a good one (rho >= 3/4); a step is kept
      when rho >= 1e-4. See `damping.TrustRegionDamping`;
    * `"scaled-trust-region"`: the same in the scaled norm ||D^(1/2) delta||
      (MINPACK's default `mode=1`);
    * `"scaled-gain-ratio"`: D = diag(d) and Nielsen's (1999) rule on the
      gain ratio rho = actual / predicted reduction of E: mu *=
      max(1/3, 1 - (2 rho - 1)^3) after an accepted step, mu *= nu, nu *= 2
      after a rejected one (nu = 2 after each accepted step);
    * `"gain-ratio"`: the same rule with D = I;
    * `"lecture"`: D = I; mu *= `damping_decrease` after a step that lowers
      E, mu *= `damping_increase` after one that does not (the lecture's
      rule, Hagan & Menhaj 1994);
    * `"marquardt"`: the lecture's factors with D = diag(d) (Marquardt 1963);
    * `"auto"` (default): `"trust-region"` where the step is solved by a
      factorization (dense, sample space), `"scaled-gain-ratio"` where it
      is solved by CG (a trust radius needs factorizations to solve for
      mu).

    The default is the most robust on the Moré-Garbow-Hillstrom test
    problems (17 problems from their standard and 10x starting points,
    `benchmarks/bench_minpack.py`, float64): "trust-region" solves 32 of
    the 34 runs in a median of 26 loss evaluations, as many as MINPACK
    unscaled (`x_scale=1.0`, median 38 with tolerances 1e-15) and more than
    MINPACK with its own scaling (`x_scale="jac"`, 30); with the same
    tolerances both trust-region rules take MINPACK's steps (same iterates
    and evaluation counts on most runs). "scaled-trust-region" solves 30
    (as `x_scale="jac"`: the scaled region misses Powell's badly scaled
    problem and Box 3-D from 10 x0), "scaled-gain-ratio" 31, the lecture's
    rule 31 with a median of 38 evaluations (mu bouncing between two values
    with about two attempts per iteration).

    Small mu gives Newton's method on the Gauss-Newton approximation of the
    Hessian, large mu gradient descent with learning rate 1/mu (D = I).

    Stopping (`stop_training` in the logs, the reason as `status`; see
    `STATUS_MESSAGES`), with the meanings of scipy.optimize.least_squares's
    MINPACK tolerances:

    * `gtol` (status 1): max_j |g_j| / sqrt(2 E A_jj) <= gtol, the largest
      cosine between the residual vector and a column of J; also when E = 0;
    * `ftol` (2): a trial step whose actual and predicted relative
      reductions of E are both at most ftol (and rho <= 2);
    * `xtol` (3): a trial step with ||S delta|| <= xtol (xtol + ||S w||),
      S = D^(1/2) (status 4: ftol and xtol together);
    * the damping over its cap (-1): mu / s > `max_damping`, with s =
      max_j A_jj for the rules with D = I and s = 1 for the scaled rules
      (D >= diag(A) already carries the curvature's scale): the damping
      term is then max_damping times the largest curvature;
    * a non-finite loss, gradient or Gauss-Newton matrix at w (-2): nothing
      is moved and no state changes.

    A trial step that rounds back to w (w - delta == w in the objective's
    dtype, or ||S delta|| <= eps ||S w||) is never accepted; with xtol > 0
    it ends training (status 3), whatever xtol.

    Defaults: gtol = ftol = 1e-8 as SciPy's; xtol = 1e-10, below SciPy's
    1e-8, because ||S w|| is dominated by the largest scaled weight: with
    1e-8, Brown's badly scaled problem (weights 1e6 and 2e-6) stops one
    iteration early at F = 1e-12 instead of 1e-20.

    Each fit batch is one iteration (batch mode with `batch_size=len(x)`,
    mini-batch mode otherwise). The state (mu, the rule's nu or trust
    radius, d, the last status) is kept in optimizer variables, so a
    resumed run continues exactly.

    Args:
        damping: mu at the first iteration, > 0; relative to d for the
            scaled rules. The trust-region rules start from mu = 0 (as
            MINPACK) and solve mu from the radius, so it is not used there.
        damping_decrease: factor applied to mu after a step that lowers E,
            in (0, 1); lecture rules only (default 0.1).
        damping_increase: factor applied to mu after a step that does not,
            > 1; lecture rules only (default 10).
        max_damping: training stops once mu / s exceeds it (see above);
            > 0, and > damping for the scaled rules.
        attempts: most trial steps per iteration, an integer >= 1.
        damping_rule: a name above or a
            `keras_gdzoo.solvers.damping.DampingRule`.
        gtol, ftol, xtol: stopping tolerances (>= 0; 0 disables a test,
            though an exactly zero gradient still stops).
        linear_solver: how the damped system is solved. `"cholesky"`: the
            dense m x m Gauss-Newton matrix and its Cholesky factor (or the
            sample-space form, below). `"cg"`: conjugate gradients on
            Gauss-Newton-vector products (`keras_gdzoo.matrix_free`), never
            a Jacobian or an m x m matrix, memory O(m) plus the batch's
            activations. `"auto"` (default): `"cholesky"` when m <= 2000,
            else `"cg"` (`Newton`'s rule); with `"auto"`, only objectives
            without Gauss-Newton-vector products (a custom `compute_loss`)
            stay dense.
        cg_max_iterations: most Gauss-Newton-vector products per CG solve,
            an integer >= 1 (`"cg"` only).
        cg_tolerance: CG stops once ||r|| <= cg_tolerance * ||g||, the
            relative residual, in (0, 1) (`"cg"` only).
        name: optimizer name.
        **kwargs: the `keras.optimizers.Optimizer` arguments (`clipnorm`,
            `use_ema`, ...) are refused by name: a solver cannot honour them.

    Logs: `damping` (mu after the iteration), `attempts` (trial steps
    solved in this iteration), `accepted` (1.0 when a step was kept),
    `evaluations` (loss evaluations in this iteration), `status`, with CG
    `cg_iterations` (Gauss-Newton-vector products of all CG solves in the
    iteration), and with a trust-region rule `radius` (Delta after the
    iteration).

    Example:

    >>> trainer = keras_gdzoo.wrap(model)
    >>> trainer.compile(optimizer=keras_gdzoo.LevenbergMarquardt(), loss="mse")
    >>> history = trainer.fit(x, y, batch_size=len(x), epochs=20, verbose=0)
    >>> history.history["status"][-1] in (0.0, 1.0, 2.0, 3.0, 4.0, -1.0)
    True

    Note:
        * Mean squared error uses the lecture's scaling above (g and A of
          1/(2n) sum e'e); Keras's "mse" is 1/(nK) sum e^2, proportional, so
          steps are accepted by comparing the compiled loss and the gain
          ratio uses relative reductions (as MINPACK), which the factor
          between the two does not change.
        * The cross-entropies use the generalized Gauss-Newton matrix
          1/n sum J_i' H_i J_i with H_i the Hessian of the loss of example i
          with respect to the model output (Schraudolph, 2002); see
          `keras_gdzoo.curvature`. Other losses are refused.
        * When n*K < m (fewer residuals than weights) the step is solved in
          sample space, J'(n mu I + J J')^-1 e, an (nK) x (nK) system (single
          replica only). The linear systems are solved by Cholesky
          factorization, in float64 for float32 models; when that fails (mu
          too small for the round-off in A), the attempt counts as a
          rejected step and mu rises to at least eps * trace(A) besides the
          rule's factor.
        * With CG, each trial step solves the same damped system as the
          dense path (in the scaled variables S delta for the scaled rules)
          by CG from the previous solve's solution (warm start, Martens
          2010, kept in the solver's state). diag(A), for gtol and the
          scaled rules' d, is exact for m <= 2000 (per-example Jacobians
          in chunks, K backward passes per example, memory O(chunk K m)),
          so a small model gives the dense path's iterates to the CG
          tolerance; beyond, Hutchinson's estimate 1/4 sum_k v_k * (A v_k)
          over 4 fixed Rademacher vectors, clamped at 0 (4 products; the
          exact one would cost more than CG itself). trace(A),
          for the floor on mu after a failed solve, is the sum of that
          diagonal (no product). A CG solve that meets a non-finite
          number or a direction of non-positive curvature counts as a
          failed factorization.
        * mu never falls below the smallest normal number of the dtype, so
          the rule can always raise it again.
        * The trust-region rules solve the secular equation by Cholesky
          factorizations of the damped system (one per Newton iteration, at
          most 11 per trial step; MINPACK updates a QR factorization of J
          instead); the other rules control mu itself and need one solve
          per trial step. `linear_solver="cg"` with a trust-region rule is
          refused, and with `"auto"` a trust-region rule always factorizes.

    References:
        Levenberg, K. (1944). A method for the solution of certain non-linear
        problems in least squares. Quarterly of Applied Mathematics 2(2).
        Marquardt, D. W. (1963). An algorithm for least-squares estimation of
        nonlinear parameters. SIAM J. Applied Mathematics 11(2).
        Moré, J. J. (1978). The Levenberg-Marquardt algorithm: implementation
        and theory. Lecture Notes in Mathematics 630.
        Hagan, M. T. & Menhaj, M. B. (1994). Training feedforward networks
        with the Marquardt algorithm. IEEE Trans. Neural Networks 5(6).
        Nielsen, H. B. (1999). Damping parameter in Marquardt's method.
        IMM-REP-1999-05, Technical University of Denmark.
    """


    def __init__(
        self,
        damping=1e-3,
        damping_decrease=None,
        damping_increase=None,
        max_damping=1e10,
        attempts=10,
        damping_rule=DEFAULT_DAMPING_RULE,
        gtol=1e-8,
        ftol=1e-8,
        xtol=1e-10,
        linear_solver="auto",
        cg_max_iterations=20,
        cg_tolerance=1e-2,
        name=None,
        **kwargs,
    ):
        damping = validation.positive("damping", damping)
        attempts = validation.integer("attempts", attempts, minimum=1)
        if isinstance(damping_rule, str) and damping_rule == "auto":
            rules = tuple(
                _resolve_rule(name, damping_decrease, damping_increase, passed="'auto'")
                for name in AUTO_RULES
            )
        else:
            rule = _resolve_rule(damping_rule, damping_decrease, damping_increase)
            rules = (rule, rule)
        if any(rule.scaled for rule in rules):  # mu and max_damping in the same (relative) units
            max_damping = validation.greater_than(
                "max_damping", max_damping, damping, bound_text=f"damping={damping}"
            )
        else:
            max_damping = validation.positive("max_damping", max_damping)
        gtol = validation.non_negative("gtol", gtol)
        ftol = validation.non_negative("ftol", ftol)
        xtol = validation.non_negative("xtol", xtol)
        linear_solver = validation.choice("linear_solver", linear_solver, LINEAR_SOLVERS)
        if linear_solver == "cg" and rules[1].trust_region:
            raise ValueError(
                "Argument `linear_solver` must be 'auto' or 'cholesky' with a trust-region "
                "damping rule: mu is solved from the radius by factorizations, which CG "
                f"does not give (use damping_rule='auto' or 'scaled-gain-ratio' with CG). "
                f"Received: linear_solver='cg' with damping_rule={damping_rule!r}"
            )
        if linear_solver == "cg" and type(self).step is not LevenbergMarquardt.step:
            # BayesianRegularization: its evidence update needs the dense matrix.
            raise ValueError(
                f"Argument `linear_solver` must be 'auto' or 'cholesky' for "
                f"{type(self).__name__}: its step needs the dense m x m matrix. "
                "Received: linear_solver='cg'"
            )
        cg_max_iterations = validation.integer("cg_max_iterations", cg_max_iterations, minimum=1)
        cg_tolerance = validation.open_unit("cg_tolerance", cg_tolerance)
        refuse_unused_cg_arguments(
            type(self).__name__, linear_solver, cg_max_iterations, cg_tolerance, 20, 1e-2
        )
        super().__init__(name=name, **kwargs)
        # The rule of factorized (dense, sample-space) solves and of CG solves.
        self._factorized_rule, self._cg_rule = rules
        self.damping_rule = "auto" if rules[0] is not rules[1] else rules[0]
        self.gtol, self.ftol, self.xtol = gtol, ftol, xtol
        self.damping = damping
        self.max_damping = max_damping
        self.attempts = attempts
        self.linear_solver = linear_solver
        self.cg_max_iterations = cg_max_iterations
        self.cg_tolerance = cg_tolerance

    @property
    def damping_decrease(self):
        """The lecture rule's factor after an accepted step (None for others)."""
        return getattr(self.damping_rule, "decrease", None)

    @property
    def damping_increase(self):
        """The lecture rule's factor after a rejected step (None for others)."""
        return getattr(self.damping_rule, "increase", None)

    @property
    def stop_message(self):
        """Why training stopped: the text of the last iteration's status."""
        variable = self._solver_state.get("status") if hasattr(self, "_solver_state") else None
        if variable is None:
            return STATUS_MESSAGES[DAMPING_EXCEEDED]
        code = int(round(float(variable.numpy())))
        return STATUS_MESSAGES.get(code, STATUS_MESSAGES[RUNNING])

    def get_config(self):
        config = super().get_config()
        config.update(
            damping=self.damping,
            max_damping=self.max_damping,
            attempts=self.attempts,
            damping_rule=keras.saving.serialize_keras_object(self.damping_rule),
            gtol=self.gtol,
            ftol=self.ftol,
            xtol=self.xtol,
            linear_solver=self.linear_solver,
            cg_max_iterations=self.cg_max_iterations,
            cg_tolerance=self.cg_tolerance,
        )
        return config

    def uses_cg(self, size):
        """Whether the step solves by CG for a model of m = `size` weights
        (never for a subclass with its own dense `step`, such as
        `BayesianRegularization`, nor for a trust-region rule)."""
        if type(self).step is not LevenbergMarquardt.step or self._cg_rule.trust_region:
            return False
        return resolve_linear_solver(self.linear_solver, size) == "cg"

    def state_spec(self, size, dtype):
        by_cg = self.uses_cg(size)
        # With "auto" and CG, a model the matrix-free products cannot serve
        # (a custom compute_loss) stays dense: both rules' state is kept.
        rules = [self._factorized_rule] + ([self._cg_rule] if by_cg else [])
        first = self._cg_rule if by_cg else self._factorized_rule
        # The trust-region rules solve mu from the radius, from 0 (MINPACK).
        spec = {
            "damping": ([], 0.0 if first.trust_region else self.damping),
            "status": ([], 0.0),
            "loss": ([], 0.0),
            "point_known": ([], 0.0),
        }
        for rule in rules:
            for key, initial in rule.state_spec().items():
                spec[key] = ([], initial)
        if any(rule.scaled for rule in rules):
            # 0 until the first iteration sets it (then every entry is > 0).
            spec["scale"] = ([size], 0.0)
        if self.uses_cg(size):
            # The last CG solution, CG's starting point at the next solve.
            spec["cg_solution"] = ([size], 0.0)
        return spec

    def check_size(self, size, dtype):
        if self.uses_cg(size):
            return
        # The matrix, and the damped copy and its Cholesky factor, which are
        # float64 (two float32-sized matrices each) for narrower dtypes.
        copies = 1 + 2 * max(1, 8 // tf.as_dtype(dtype).size)
        dense_matrix_guard(type(self).__name__, size, dtype, copies=copies)

    # -- one iteration ----------------------------------------------------------
    @tf.autograph.experimental.do_not_convert
    def step(self, w, state, objective):
        value = self._value_at(w, state, objective)
        stationary = reuses_evaluations(objective)
        if self._solves_by_cg(w, objective):
            terms = _MatrixFreeTerms(objective, w, self.cg_tolerance, self.cg_max_iterations)
            return self._iterate(w, state, value, objective.value, terms, stationary, objective)

        def in_parameter_space():
            energy, gradient, matrix = objective.gauss_newton(w)
            terms = _DenseTerms(energy, gradient, curvature.symmetrize(matrix))
            return self._iterate(w, state, value, objective.value, terms, stationary, objective)

        def in_sample_space():
            energy, gradient, system = objective.gauss_newton_sample_space(w)
            terms = _SampleSpaceTerms(energy, gradient, system)
            return self._iterate(w, state, value, objective.value, terms, stationary, objective)

        prefers = getattr(objective, "prefers_sample_space", None)
        use_sample_space = prefers(w) if prefers is not None else False
        if isinstance(use_sample_space, bool):
            branch = in_sample_space if use_sample_space else in_parameter_space
            return branch()
        return tf.cond(use_sample_space, in_sample_space, in_parameter_space)

    def _solves_by_cg(self, w, objective):
        """CG for this objective: `uses_cg`, and with `"auto"` only where
        the matrix-free Gauss-Newton products exist (one compiled loss, one
        per output, or residuals)."""
        if not self.uses_cg(int(w.shape[0])):
            return False
        if self.linear_solver == "cg":  # refused by matrix_free if unavailable
            return True
        return matrix_free.has_gauss_newton_products(objective)

    def _value_at(self, w, state, objective):
        """E(w) by `objective.value`, the same code path as the trial points;
        the value kept from the last step when the objective is stationary."""
        if not reuses_evaluations(objective):
            return tf.cast(objective.value(w), w.dtype)
        return tf.cond(
            state["point_known"] > 0,
            lambda: tf.cast(state["loss"], w.dtype),
            lambda: tf.cast(objective.value(w), w.dtype),
        )

    def _iterate(self, w, state, value, value_fn, terms, stationary, objective):
        """Trial steps until one lowers the loss; returns (w, state, logs).

        `terms` holds E, g and the curvature (`_DenseTerms`,
        `_SampleSpaceTerms` or `_MatrixFreeTerms`); `value` is the loss at w and `value_fn` gives
        it at a trial point, both by the same code path.
        """
        dtype = w.dtype
        rule = self._cg_rule if isinstance(terms, _MatrixFreeTerms) else self._factorized_rule
        eps = tf.constant(curvature.machine_epsilon(dtype), dtype)
        # A null step is one the objective cannot tell from w: compared in
        # the objective's dtype when it is narrower than the iterate's.
        model_dtype = tf.as_dtype(getattr(objective, "dtype", None) or dtype)
        if not model_dtype.is_floating or model_dtype.size > dtype.size:
            model_dtype = dtype
        smallest = tf.constant(curvature.smallest_normal(dtype), dtype)
        energy = tf.cast(terms.energy, dtype)
        gradient = tf.cast(terms.gradient, dtype)
        diagonal = tf.cast(terms.diagonal(), dtype)
        evaluated_here = tf.cast(tf.logical_not(stationary & (state["point_known"] > 0)), dtype)

        finite = (
            tf.math.is_finite(value)
            & tf.math.is_finite(energy)
            & tf.reduce_all(tf.math.is_finite(gradient))
            & tf.reduce_all(tf.math.is_finite(diagonal))
        )
        # Computations below see zeros where the curvature is not finite; no
        # result of them is kept then.
        diagonal = tf.where(finite, diagonal, tf.zeros_like(diagonal))
        gradient = tf.where(finite, gradient, tf.zeros_like(gradient))
        energy = tf.where(finite, energy, tf.zeros_like(energy))

        if rule.scaled:
            old = tf.cast(state["scale"], dtype)
            first = tf.where(diagonal > 0, diagonal, tf.ones_like(diagonal))
            scale = tf.where(old > 0, tf.maximum(old, diagonal), first)
            scale = tf.where(finite, scale, old)
            root = tf.sqrt(tf.where(scale > 0, scale, tf.ones_like(scale)))
            curvature_scale = tf.ones([], dtype)
        else:
            scale, root = None, None
            curvature_scale = tf.maximum(tf.reduce_max(diagonal), smallest)
        trust = rule.trust_region
        if trust:
            # mu is solved from the radius (the rule's secular equation).
            radius_system, system = terms.radius_system(root), None
            factorization_floor = tf.zeros([], dtype)
        else:
            system = terms.system(root)
            factorization_floor = eps * tf.abs(tf.cast(system.trace, dtype))
        by_cg = isinstance(system, matrix_free.MatrixFreeSystem)
        cap = self.max_damping * curvature_scale

        # gtol: the largest cosine between the residuals and a column of J.
        ok_columns = (diagonal > 0) & (energy > 0)
        cosines = tf.where(
            ok_columns,
            tf.abs(gradient)
            / tf.sqrt(tf.where(ok_columns, 2.0 * energy * diagonal, tf.ones_like(diagonal))),
            tf.zeros_like(diagonal),
        )
        gradient_converged = finite & (tf.reduce_max(cosines) <= self.gtol)
        active = finite & ~gradient_converged
        weighted_w = w if root is None else root * w
        w_norm = tf.norm(weighted_w)

        rule_keys = sorted(rule.state_spec())
        damping0 = tf.cast(state["damping"], dtype)
        rule_state0 = {key: tf.cast(state[key], dtype) for key in rule_keys}
        rule_start = dict(rule_state0)
        if trust:
            rule_start["radius"] = rule.initial_radius(rule_state0["radius"], w_norm)

        def keep_going(tries, mu, rule_state, accepted, new_w, new_value, small, flat, calls,
                       guess, cg):
            return active & ~accepted & ~small & ~flat & (tries < self.attempts) & (mu <= cap)

        def attempt(tries, mu, rule_state, accepted, new_w, new_value, small, flat, calls,
                    guess, cg):
            if trust:
                radius = rule_state["radius"]
                delta, mu = rule.solve(radius_system, radius, mu)
                solved = tf.reduce_all(tf.math.is_finite(delta))
            elif by_cg:
                delta, more, solved = system.solve_from(mu, guess)
                delta = tf.cast(delta, dtype)
                guess = tf.where(tf.reduce_all(tf.math.is_finite(delta)), delta, guess)
                cg = cg + more
            else:
                delta, solved = system.solve(mu)
                delta = tf.cast(delta, dtype)
            if root is not None:
                step_norm = tf.norm(delta)  # the solve ran in S-scaled variables
                delta = delta / root
            else:
                step_norm = tf.norm(delta)
            trial = w - delta
            unchanged = tf.equal(tf.cast(trial, model_dtype), tf.cast(w, model_dtype))
            null = tf.reduce_all(unchanged) | (step_norm <= eps * w_norm)
            small = solved & (
                (step_norm <= self.xtol * (self.xtol + w_norm)) | (null & (self.xtol > 0))
            )
            evaluate = solved & ~null
            trial_value = tf.cond(
                evaluate,
                lambda: tf.cast(value_fn(trial), dtype),
                lambda: tf.constant(float("nan"), dtype),
            )
            predicted = rule.predicted_reduction(delta, gradient, mu, scale)
            predicted_relative = predicted / tf.where(energy > 0, energy, tf.ones_like(energy))
            actual_relative = (value - trial_value) / tf.where(
                value != 0, tf.abs(value), tf.ones_like(value)
            )
            positive = predicted_relative > 0
            one = tf.ones_like(predicted_relative)
            ratio = tf.where(
                positive, actual_relative / tf.where(positive, predicted_relative, one), -one
            )
            usable = evaluate & tf.math.is_finite(trial_value)
            lowered = usable & (trial_value < value)
            flat = (
                usable
                & (tf.abs(actual_relative) <= self.ftol)
                & (predicted_relative <= self.ftol)
                & (ratio <= 2.0)
            )
            ratio = tf.where(tf.math.is_finite(ratio), ratio, -tf.ones_like(ratio))
            if trust:
                lowered = lowered & (ratio >= rule.acceptance)
                # Until a step is kept the radius is at most the step's length.
                radius = tf.where(rule_state["first"] > 0, tf.minimum(radius, step_norm), radius)
                blew_up = ~usable | ~(trial_value < 100.0 * value)
                slope = tf.reduce_sum(gradient * delta) / tf.where(
                    energy > 0, 2.0 * energy, tf.ones_like(energy)
                )
                radius, mu = rule.update(
                    radius, mu, ratio, step_norm, tf.where(blew_up, -one, actual_relative),
                    -slope, blew_up,
                )
                rule_state = {
                    "radius": radius,
                    "first": tf.where(lowered, tf.zeros_like(radius), rule_state["first"]),
                }
                return (
                    tries + 1, mu, rule_state, lowered, tf.where(lowered, trial, w),
                    tf.where(lowered, trial_value, value), small, flat,
                    calls + tf.cast(evaluate, dtype), guess, cg,
                )
            raised, raised_state = rule.rejected(mu, rule_state)
            raised = tf.where(solved, raised, tf.maximum(raised, factorization_floor))
            lowered_mu, lowered_state = rule.accepted(mu, rule_state, ratio)
            mu = tf.where(lowered, tf.maximum(lowered_mu, smallest), raised)
            rule_state = {
                key: tf.where(lowered, lowered_state[key], raised_state[key]) for key in rule_keys
            }
            return (
                tries + 1,
                mu,
                rule_state,
                lowered,
                tf.where(lowered, trial, w),
                tf.where(lowered, trial_value, value),
                small,
                flat,
                calls + tf.cast(evaluate, dtype),
                guess,
                cg,
            )

        false = tf.constant(False)
        guess0 = tf.cast(state["cg_solution"], dtype) if by_cg else tf.zeros([], dtype)
        (tries, mu, rule_state, accepted, new_w, new_value, small, flat, calls, guess,
         cg) = tf.while_loop(
            keep_going,
            attempt,
            (tf.constant(0), damping0, rule_start, false, w, value, false, false,
             tf.zeros([], dtype), guess0, tf.constant(0)),
            maximum_iterations=self.attempts,
        )
        status = tf.where(mu > cap, DAMPING_EXCEEDED, RUNNING)
        status = tf.where(small, XTOL, status)
        status = tf.where(flat, tf.where(small, FTOL_AND_XTOL, FTOL), status)
        status = tf.where(gradient_converged, GTOL, status)
        status = tf.where(finite, status, NOT_FINITE)
        status = tf.cast(status, dtype)

        keep = finite & tf.math.is_finite(mu)
        mu = tf.where(keep, mu, damping0)
        new_state = {
            "damping": mu,
            "status": status,
            "loss": tf.where(finite, new_value, tf.zeros_like(new_value)),
            "point_known": tf.cast(finite & stationary, dtype),
        }
        for key in rule_keys:
            new_state[key] = tf.where(keep, rule_state[key], rule_state0[key])
        if scale is not None:
            new_state["scale"] = scale
        for key in state:  # the other rule's state under damping_rule="auto"
            if key not in new_state and key not in ("scale", "cg_solution"):
                new_state[key] = state[key]
        if by_cg:
            solution = tf.where(finite, guess, guess0)
            new_state["cg_solution"] = tf.cast(solution, state["cg_solution"].dtype)
        logs = {
            "damping": mu,
            "attempts": tf.cast(tries, dtype),
            "accepted": tf.cast(accepted, dtype),
            "evaluations": evaluated_here + calls,
            "status": status,
            STOP: tf.cast(status != RUNNING, dtype),
        }
        if by_cg:
            logs["cg_iterations"] = tf.cast(cg, dtype)
        if trust:
            logs["radius"] = new_state["radius"]
        return tf.where(accepted, new_w, w), new_state, logs


def _resolve_rule(rule, decrease, increase, passed=None):
    """The damping rule, with the lecture's factors where given (`passed`:
    the name the user passed, when not `rule`)."""
    given = {
        key: value
        for key, value in zip(_LECTURE_ARGUMENTS, (decrease, increase))
        if value is not None
    }
    if isinstance(rule, str) and rule in ("lecture", "marquardt"):
        return damping_rules.LectureDamping(
            decrease=0.1 if decrease is None else decrease,
            increase=10.0 if increase is None else increase,
            scaled=rule == "marquardt",
        )
    rule = damping_rules.get(rule)
    for key, value in given.items():
        raise ValueError(
            f"Argument `{key}` is used only by the lecture rules "
            '(damping_rule="lecture" or "marquardt"); set a rule object\'s own '
            f"arguments instead. Received: {key}={value!r} with "
            f"damping_rule={passed or type(rule).__name__}"
        )
    return rule

