"""Construction-time argument checks shared by the whole package.

Every check raises a `ValueError` in Keras wording that names the argument
and quotes the value received, e.g.
"Argument `rho` must be in (0, 1). Received: rho=1.5", and returns the value
as a plain Python number. NumPy scalars (`np.float32(1e-3)`, `np.int64(5)`)
are accepted wherever a Python number is; booleans are never numbers;
infinities and NaN are refused unless a check says otherwise.
"""

import math
import numbers


def real(name, value, allow_infinite=False):
    """`value` as a Python float (finite unless `allow_infinite`)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"Argument `{name}` must be a float. Received: {name}={value!r}")
    value = float(value)
    if math.isnan(value) or (not allow_infinite and math.isinf(value)):
        raise ValueError(f"Argument `{name}` must be finite. Received: {name}={value}")
    return value


def integer(name, value, minimum=None, maximum=None):
    """`value` as a Python int within [minimum, maximum] (either may be None)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"Argument `{name}` must be an integer. Received: {name}={value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"Argument `{name}` must be >= {minimum}. Received: {name}={value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"Argument `{name}` must be <= {maximum}. Received: {name}={value}")
    return value


def positive(name, value):
    """0 < value < inf."""
    value = real(name, value)
    if not value > 0:
        raise ValueError(f"Argument `{name}` must be > 0. Received: {name}={value}")
    return value


def non_negative(name, value):
    """0 <= value < inf."""
    value = real(name, value)
    if not value >= 0:
        raise ValueError(f"Argument `{name}` must be >= 0. Received: {name}={value}")
    return value


def greater_than(name, value, bound, bound_text=None):
    """bound < value < inf; `bound_text` names the bound in the message."""
    value = real(name, value)
    if not value > bound:
        text = bound_text if bound_text is not None else repr(bound)
        raise ValueError(f"Argument `{name}` must be > {text}. Received: {name}={value}")
    return value


def open_unit(name, value, when=""):
    """0 < value < 1."""
    value = real(name, value)
    if not 0 < value < 1:
        raise ValueError(f"Argument `{name}` must be in (0, 1){when}. Received: {name}={value}")
    return value


def half_open_unit(name, value):
    """0 <= value < 1."""
    value = real(name, value)
    if not 0 <= value < 1:
        raise ValueError(f"Argument `{name}` must be in [0, 1). Received: {name}={value}")
    return value


def open_interval(name, value, low, high, low_name=None, high_name=None):
    """low < value < high; the names replace the numbers in the message."""
    value = real(name, value)
    if not low < value < high:
        lo = low_name if low_name is not None else repr(low)
        hi = high_name if high_name is not None else repr(high)
        raise ValueError(f"Argument `{name}` must be in ({lo}, {hi}). Received: {name}={value}")
    return value


def boolean(name, value):
    """A Python (or NumPy) bool."""
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        value = bool(value)
    if not isinstance(value, bool):
        raise ValueError(f"Argument `{name}` must be a bool. Received: {name}={value!r}")
    return value


def choice(name, value, options):
    """One of `options` (strings compared as given)."""
    if value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ValueError(f"Argument `{name}` must be one of {listed}. Received: {name}={value!r}")
    return value


def learning_rate(value):
    """A number must be > 0 and finite (returned as a float, which the Keras
    base class requires); schedules and callables pass through unchanged."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return value
    return positive("learning_rate", value)


def open_closed_unit(name, value):
    """0 < value <= 1."""
    value = real(name, value)
    if not 0 < value <= 1:
        raise ValueError(f"Argument `{name}` must be in (0, 1]. Received: {name}={value}")
    return value


def positive_number(name, value):
    """0 < value < inf, with one message, "must be a positive number",
    whatever is wrong (a string, NaN, infinity, 0): the initializers' wording."""
    try:
        return positive(name, value)
    except ValueError:
        raise ValueError(
            f"Argument `{name}` must be a positive number. Received: {name}={value!r}"
        ) from None
