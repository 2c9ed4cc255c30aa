"""Line searches: how far to go along a search direction.

A full-batch solver picks a direction d at w and asks a line search for a
step a > 0 along it. The search sees the one-dimensional function

    phi(a) = E(w + a*d),    phi'(a) = dE/dw(w + a*d) . d,

with phi(0) = E(w) and phi'(0) = g.d < 0 (d must be a descent direction),
and returns the step it accepted together with E and dE/dw there, so the
solver does not evaluate them again.

Three searches, each named by the string a solver's `line_search=` accepts:

* `"strong-wolfe"`: `StrongWolfe`, bracketing and zoom (Nocedal & Wright,
  Algorithms 3.5 and 3.6). The default of CG and BFGS.
* `"more-thuente"`: `MoreThuente`, Moré & Thuente's search for the strong
  Wolfe conditions (MINPACK-2's dcsrch, the search of SciPy's L-BFGS-B).
  The default of L-BFGS.
* `"armijo"`: `Backtracking`, Armijo's sufficient decrease by shrinking.
* `"exact"`: `Exact`, the lecture's a = argmin_{a>0} E(w + a*d), located by
  bracketing and Brent's method. The default of steepest descent.

Two layers, as SciPy's `line_search_wolfe2` over `scalar_search_wolfe2`:

* `scalar` (`strong_wolfe`, `backtracking`), `more_thuente` and `brent`
  (`exact`): searches
  on a function phi(a) of one step, knowing nothing of weights;
* `base.LineSearch` and its subclasses in `searches`: the vector layer,
  which builds phi from an objective, w and d and returns a
  `LineSearchResult` with the gradient at the accepted step.

Every search is a pure function of tensors whose loops are `tf.while_loop`s
over `NamedTuple` states with a bounded number of evaluations
(`max_evaluations`), so it traces into the solver's one `tf.function` and
compiles with XLA. That control flow is written out and skips AutoGraph
(which only added seconds of tracing); the objective's own code is still
converted by AutoGraph, as in any `tf.function`. A search never raises
and never accepts a non-finite loss: it returns a `LineSearchResult` whose
`failed` flag tells the solver to try something else, with `step` 0 and
`value`/`gradient` those at w (no move).
"""

import inspect

import keras

from keras_gdzoo.line_search import brent
from keras_gdzoo.line_search import more_thuente
from keras_gdzoo.line_search import scalar
from keras_gdzoo.line_search.base import LineSearch
from keras_gdzoo.line_search.base import LineSearchResult
from keras_gdzoo.line_search.base import implements_search
from keras_gdzoo.line_search.searches import Backtracking
from keras_gdzoo.line_search.searches import Exact
from keras_gdzoo.line_search.searches import MoreThuente
from keras_gdzoo.line_search.searches import StrongWolfe

__all__ = [
    "Backtracking",
    "Exact",
    "LineSearch",
    "LineSearchResult",
    "MoreThuente",
    "StrongWolfe",
    "brent",
    "get",
    "more_thuente",
    "scalar",
]

_IDENTIFIERS = {
    "strong-wolfe": StrongWolfe,
    "more-thuente": MoreThuente,
    "armijo": Backtracking,
    "exact": Exact,
}


def get(identifier, **defaults):
    """A line search from a name, a config dict or an instance.

    Args:
        identifier: `"strong-wolfe"`, `"armijo"`, `"exact"`, a `LineSearch`
            instance (returned as is) or the dict
            `keras.saving.serialize_keras_object` made of one. The abstract
            `LineSearch` itself (or a subclass that does not implement
            `_search`) is refused.
        **defaults: keyword arguments for the class a string names; those the
            class does not take are ignored (so `ConjugateGradient` asks for
            `c2=0.1`, which only `"strong-wolfe"` uses).

    Example:

    >>> get("strong-wolfe", c2=0.1)
    StrongWolfe(c1=0.0001, c2=0.1, max_evaluations=25)
    """
    search = identifier
    if isinstance(identifier, dict):
        search = keras.saving.deserialize_keras_object(identifier)
        if not isinstance(search, LineSearch):
            raise ValueError(
                "Argument `line_search` must describe a keras_gdzoo line search. "
                f"Received: line_search={identifier!r}"
            )
    if isinstance(search, LineSearch):
        if not implements_search(search):
            raise ValueError(
                "Argument `line_search` must be a line search that can search: "
                f"{type(search).__name__} does not implement `_search` (use "
                "StrongWolfe, Backtracking or Exact). "
                f"Received: line_search={identifier!r}"
            )
        return search
    if isinstance(identifier, str) and identifier in _IDENTIFIERS:
        cls = _IDENTIFIERS[identifier]
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in defaults.items() if k in accepted})
    raise ValueError(
        "Argument `line_search` must be one of "
        f"{sorted(_IDENTIFIERS)} or a `keras_gdzoo.line_search.LineSearch` "
        f"instance. Received: line_search={identifier!r}"
    )
