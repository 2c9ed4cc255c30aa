"""What the subcommands share: bad-input errors and the parsing of arguments.

Every check here raises `UsageError`, which `gdzoo` reports in one line
(`gdzoo compare: error: ...`) with exit code 2, as argparse does.
"""

import argparse
import math
import os
import tempfile

from keras_gdzoo import methods as methods_lib


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit code 2."""


def positive(kind, text, what):
    """`text` as a finite `kind` (int or float) > 0."""
    try:
        value = kind(text)
    except (TypeError, ValueError, OverflowError):
        raise UsageError(f"{what} must be a positive number, got {text!r}") from None
    if not value > 0 or not math.isfinite(value):
        raise UsageError(f"{what} must be positive, got {text!r}")
    return value


def count(text):
    """argparse type: an integer > 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


#: The largest seed: the initializers' seeds are 1000 * seed + layer, and
#: seeds must fit an int32.
MAX_SEED = (2**31 - 1) // 1000 - 1000


def seed(text):
    """argparse type: an integer seed in [0, MAX_SEED]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in [0, {MAX_SEED}], got {value}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0."""
    try:
        return positive(float, text, "value")
    except UsageError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_methods(text):
    """'gd:0.5,adam' -> [('gd:0.5', 'gd', 0.5), ('adam', 'adam', None)]."""
    parsed = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, rate = item.partition(":")
        if name not in methods_lib.METHODS:
            raise UsageError(
                f"unknown method {name!r}; choose from {', '.join(methods_lib.METHODS)}"
            )
        learning_rate = None
        if rate:
            if methods_lib.METHODS[name].is_solver:
                raise UsageError(f"method {name!r} takes no learning rate (got {item!r})")
            learning_rate = positive(float, rate, f"learning rate in {item!r}")
        if any(label == item for label, _, _ in parsed):
            raise UsageError(f"method {item!r} is given twice")
        parsed.append((item, name, learning_rate))
    if not parsed:
        raise UsageError("no methods given")
    return parsed


def check_out(path):
    """Refuse an output folder `path` that cannot be made or written.

    `path` must be a folder, or not exist yet with a folder as its nearest
    existing parent; that folder must be writable. Checked before any work
    (nothing is created here), so that a long run never ends on a write
    error. Besides `os.access` (which lets root write anywhere), a temporary
    file is created and removed in that folder: some file systems (/proc, a
    read-only mount) refuse writes that the permission bits allow.
    """
    if not path:
        raise UsageError("--out must not be empty")
    target = os.path.abspath(path)
    existing = target
    while not os.path.lexists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        if existing == target:
            raise UsageError(f"--out {path!r} exists and is not a folder")
        raise UsageError(f"--out {path!r} is under {existing!r}, which is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"--out {path!r}: cannot write into {existing!r} (permission denied)")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise UsageError(
            f"--out {path!r}: cannot write into {existing!r} ({error.strerror or error})"
        ) from None


def one_line(error):
    """An exception as 'TypeName: first line of its message'."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__
