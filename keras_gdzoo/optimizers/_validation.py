"""Construction-time checks shared by the per-parameter optimizers.

Every check raises a `ValueError` in Keras wording that names the argument
and quotes the value received, e.g.
"Argument `rho` must be in (0, 1). Received: rho=1.5".
"""

import math
import numbers


def _real(name, value):
    """`value` as a finite Python float, or a ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"Argument `{name}` must be a float. Received: {name}={value!r}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"Argument `{name}` must be finite. Received: {name}={value}"
        )
    return value


def learning_rate(value):
    """A number must be > 0 (returned as a float, which the Keras base class
    requires); schedules and callables are passed through unchanged."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    value = _real("learning_rate", value)
    if not value > 0:
        raise ValueError(
            f"Argument `learning_rate` must be > 0. Received: learning_rate={value}"
        )
    return value


def non_negative(name, value):
    """value >= 0."""
    value = _real(name, value)
    if not value >= 0:
        raise ValueError(f"Argument `{name}` must be >= 0. Received: {name}={value}")
    return value


def open_unit(name, value, when=""):
    """0 < value < 1."""
    value = _real(name, value)
    if not 0 < value < 1:
        raise ValueError(
            f"Argument `{name}` must be in (0, 1){when}. Received: {name}={value}"
        )
    return value


def half_open_unit(name, value):
    """0 <= value < 1."""
    value = _real(name, value)
    if not 0 <= value < 1:
        raise ValueError(
            f"Argument `{name}` must be in [0, 1). Received: {name}={value}"
        )
    return value


def boolean(name, value):
    """A Python bool."""
    if not isinstance(value, bool):
        raise ValueError(
            f"Argument `{name}` must be a bool. Received: {name}={value!r}"
        )
    return value
