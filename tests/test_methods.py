"""The method registry: every short name builds its class, and the README's
method table is the one the registry renders."""

import os

import keras
import pytest

import keras_gdzoo as gz
from keras_gdzoo import methods
from keras_gdzoo import problems

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The `gdzoo` names as the README and `gdzoo --help` have always listed them,
# and MATLAB's trainbr.
_NAMES = ["gd", "momentum", "nag", "adagrad", "rmsprop", "adadelta", "adam", "adamax", "nadam",
          "sd", "cg-fr", "cg-pr", "bfgs", "lbfgs", "rprop", "rprop+", "rprop-", "irprop+",
          "irprop-", "newton", "lm", "br"]


def test_the_names_are_the_commands_names():
    assert list(methods.METHODS) == _NAMES
    assert sorted(sum((methods.names(f) for f in methods.FAMILIES), [])) == sorted(_NAMES)
    assert methods.names("second-order") == ["newton", "lm", "br"]
    with pytest.raises(ValueError, match="Received: family='quasi'"):
        methods.names("quasi")
    assert methods.get("lm") is methods.METHODS["lm"]
    with pytest.raises(ValueError, match="Received: name='nope'"):
        methods.get("nope")


@pytest.mark.parametrize("name", _NAMES)
def test_each_method_builds_its_class_with_its_options(name):
    method = methods.METHODS[name]
    optimizer = method.build()
    assert type(optimizer) is getattr(gz, method.class_name)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    config = optimizer.get_config()
    for key, value in method.options.items():
        assert config[key] == value, (name, key)
    assert method.family in methods.FAMILIES
    # Per-parameter methods work in plain compile; everything else is a solver.
    assert isinstance(optimizer, gz.Solver) == (method.family != "per-parameter")
    assert method.is_solver == isinstance(optimizer, gz.Solver)
    assert method.update and method.reference and method.use
    if method.is_solver:
        assert method.trajectory_rates == {}
    else:
        assert float(optimizer.learning_rate) == pytest.approx(method.learning_rate)
        assert float(method.build(0.25).learning_rate) == pytest.approx(0.25)
        assert set(method.trajectory_rates) == set(problems.SURFACES)


def test_rprop_names_are_its_variants():
    variants = {name: methods.METHODS[name].build().variant for name in methods.names("rprop")}
    assert variants == {"rprop": "irprop+", "rprop+": "rprop+", "rprop-": "rprop-",
                        "irprop+": "irprop+", "irprop-": "irprop-"}


def test_readme_method_table_is_the_rendered_registry():
    with open(os.path.join(_ROOT, "README.md"), encoding="utf-8") as handle:
        readme = handle.read()
    start, end = methods.find_table(readme)
    assert readme[start:end] == methods.markdown_table(), (
        "README.md's method table is stale: run `python -m keras_gdzoo.methods --update README.md`"
    )
    assert readme.count("| `gdzoo` name |") == 1


def test_markdown_table_has_a_row_per_name_and_no_stray_pipes():
    lines = methods.markdown_table().splitlines()
    assert len(lines) == 2 + len(_NAMES)
    columns = lines[0].count("|")
    assert all(line.count("|") == columns for line in lines)  # a "|" in a cell breaks the row
    assert [line.split(" | ")[0][2:] for line in lines[2:]] == _NAMES
    assert "| lm | `LevenbergMarquardt` | second-order | – |" in lines[-2]
    assert "| gd | `GradientDescent` | per-parameter | 0.1 |" in lines[2]


def test_main_prints_and_updates_the_table(tmp_path, capsys):
    assert methods.main([]) == 0
    assert capsys.readouterr().out == methods.markdown_table()
    readme = tmp_path / "README.md"
    stale = methods.markdown_table().replace("| 0.1 |", "| 0.7 |")
    readme.write_text("# title\n\n" + stale + "\nafter\n", encoding="utf-8")
    assert methods.main(["--update", str(readme)]) == 0
    assert readme.read_text(encoding="utf-8") == "# title\n\n" + methods.markdown_table() + \
        "\nafter\n"
    assert "updated" in capsys.readouterr().out
    assert methods.update_readme(str(readme)) is False
    assert methods.main(["--frobnicate"]) == 2
    with pytest.raises(ValueError, match="no method table"):
        methods.find_table("# no table here\n")
