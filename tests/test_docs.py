"""The documentation runs and tells the truth.

* Every docstring example of the package's public modules, classes and
  functions runs as a doctest, in a namespace that provides `keras`,
  `keras_gdzoo` (also `gz`), `np`, `tf`, a fresh 1-5-1 tanh model `model`
  and 41 points of a sine as `x`, `y`.
* Every `Defaults:` line of docs/methods.md is the constructor's signature.
* Nothing in the repository points outside it.
"""

import ast
import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gdzoo
import keras_gdzoo as gz

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public_modules():
    names = ["keras_gdzoo"]
    for info in pkgutil.walk_packages(keras_gdzoo.__path__, "keras_gdzoo."):
        parts = info.name.split(".")
        if not any(part.startswith("_") for part in parts[1:]):
            names.append(info.name)
    return names


def _public(test_name):
    return not any(part.startswith("_") for part in test_name.split(".")[1:])


def _doctests():
    finder = doctest.DocTestFinder(exclude_empty=True)
    found = {}
    for name in _public_modules():
        module = importlib.import_module(name)
        for test in finder.find(module):
            # A class re-exported elsewhere is found again: keep the first.
            if test.examples and _public(test.name) and test.name not in found:
                found[test.name] = test
    return found


_DOCTESTS = _doctests()


def _namespace():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((1,)),
        keras.layers.Dense(5, activation="tanh"),
        keras.layers.Dense(1),
    ])
    x = np.linspace(-1.0, 1.0, 41, dtype="float32").reshape(-1, 1)
    return {"keras": keras, "keras_gdzoo": keras_gdzoo, "gz": gz, "np": np, "tf": tf,
            "model": model, "x": x, "y": np.sin(np.pi * x)}


def test_the_package_has_docstring_examples():
    # The examples of the main classes must be among those run.
    for name in ("keras_gdzoo.problems", "keras_gdzoo.methods",
                 "keras_gdzoo.optimizers.gradient_descent.Momentum"):
        assert any(test.startswith(name) for test in _DOCTESTS), name
    assert len(_DOCTESTS) >= 10


@pytest.mark.parametrize("name", sorted(_DOCTESTS))
def test_docstring_example_runs(name):
    test = _DOCTESTS[name]
    test.globs = dict(test.globs, **_namespace())
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    messages = []
    runner.run(test, out=messages.append)
    assert runner.failures == 0, "".join(messages)


def test_a_failing_example_fails():
    """The runner above reports a wrong output (so the test cannot pass idly)."""
    parser = doctest.DocTestParser()
    test = parser.get_doctest(">>> 1 + 1\n3\n", _namespace(), "wrong", None, 0)
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    runner.run(test, out=lambda text: None)
    assert runner.failures == 1


# -- docs/methods.md ----------------------------------------------------------------
def _defaults_lines():
    with open(os.path.join(_ROOT, "docs", "methods.md"), encoding="utf-8") as handle:
        text = handle.read()
    return re.findall(r"Defaults: `(gz\.[\w.]+\(.*?\))`", text)


def _resolve(dotted):
    target = gz
    for part in dotted.split(".")[1:]:
        target = getattr(target, part)
    return target


def test_docs_methods_lists_every_registered_class():
    from keras_gdzoo import methods

    documented = {call.split("(")[0].split(".")[-1] for call in _defaults_lines()}
    assert {method.class_name for method in methods.METHODS.values()} <= documented


@pytest.mark.parametrize("call", _defaults_lines())
def test_docs_methods_defaults_are_the_signatures(call):
    expression = ast.parse(call, mode="eval").body
    target = _resolve(ast.unparse(expression.func))
    parameters = inspect.signature(target).parameters
    for keyword in expression.keywords:
        assert keyword.arg in parameters, f"{call}: no argument `{keyword.arg}`"
        default = parameters[keyword.arg].default
        assert default == ast.literal_eval(keyword.value), (
            f"{call}: `{keyword.arg}` defaults to {default!r} in the code")
    # Arguments without a default are not "defaults"; everything else of the
    # constructor itself (not the Keras base's **kwargs, not `name`) is listed.
    listed = {keyword.arg for keyword in expression.keywords}
    own = {p.name for p in parameters.values()
           if p.default is not inspect.Parameter.empty and p.name != "name"
           and p.kind is p.POSITIONAL_OR_KEYWORD}
    hidden = {"damping_decrease", "damping_increase"}  # described in the text instead
    assert own - hidden <= listed, f"{call} leaves out {sorted(own - hidden - listed)}"


# -- self-contained ------------------------------------------------------------------
# Built by concatenation so that this file does not match itself.
_OUTSIDE = ["../" + "shared", "DESIGN" + ".md", "lecture" + ".md"]


def _repository_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=_ROOT, capture_output=True, text=True, timeout=60, check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [path for path in listed if os.path.isfile(os.path.join(_ROOT, path))]


def test_nothing_points_outside_the_repository():
    offending = []
    for path in _repository_files():
        try:
            with open(os.path.join(_ROOT, path), encoding="utf-8") as handle:
                text = handle.read()
        except (UnicodeDecodeError, OSError):
            continue  # not text
        for number, line in enumerate(text.splitlines(), start=1):
            if any(pattern in line for pattern in _OUTSIDE):
                offending.append(f"{path}:{number}: {line.strip()}")
    assert not offending, "\n".join(offending)
