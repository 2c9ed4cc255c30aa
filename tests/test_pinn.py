"""The physics-informed example: accuracy against the closed-form solution
u(x) = sin(pi x) of u'' = -pi^2 sin(pi x), u(-1) = u(1) = 0."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))

import pinn_poisson  # noqa: E402


def test_pinn_stages_approach_the_closed_form(capsys):
    errors = pinn_poisson.main(["--quick"])
    # Each stage improves on the one before; LM on the residual form ends
    # within 1% of the solution's amplitude after a few iterations.
    assert errors["lbfgs"] < 0.1 * errors["adam"]
    assert errors["lm"] < errors["lbfgs"]
    assert errors["lm"] < 1e-2
    assert "Levenberg-Marquardt via residuals=" in capsys.readouterr().out
