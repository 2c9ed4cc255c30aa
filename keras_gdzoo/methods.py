"""The one registry of training methods: short names -> classes and their facts.

`METHODS` maps each short name the `gdzoo` command accepts to a `Method`:
the `keras_gdzoo` class and its constructor options, the learning rate the
command uses by default on its small built-in networks, the method's family,
its update in one line, a reference and when to use it. The command, the
table-driven tests and the README's method table all read it; the README
table is `markdown_table()`, printed by `python -m keras_gdzoo.methods`
(`--update README.md` rewrites the table in place).

>>> from keras_gdzoo import methods
>>> solver = methods.METHODS["cg-fr"].build()
>>> type(solver).__name__, solver.beta
('ConjugateGradient', 'fletcher-reeves')
>>> float(methods.METHODS["gd"].build(0.5).learning_rate)
0.5
>>> methods.names("rprop")
['rprop', 'rprop+', 'rprop-', 'irprop+', 'irprop-']
"""

import dataclasses
import sys

#: The families, in the order the tables list them.
FAMILIES = ("per-parameter", "line-search", "rprop", "second-order")


@dataclasses.dataclass(frozen=True)
class Method:
    """A short name's method: how to build it and what to say about it.

    Attributes:
        class_name: the `keras_gdzoo` class (looked up when built).
        options: keyword arguments for it besides the learning rate.
        learning_rate: the `gdzoo` command's default learning rate for
            full-batch training of its small built-in networks; `None` for
            the solvers, which take none.
        trajectory_rates: learning rates for `gdzoo trajectories`, by 2-D
            function name.
        family: one of `FAMILIES`.
        update: the update in one line (the lecture's notation: w weights,
            g = dE/dw, a the learning rate).
        reference: where the method comes from.
        use: when to use it.
    """

    class_name: str
    options: dict = dataclasses.field(default_factory=dict)
    learning_rate: float = None
    trajectory_rates: dict = dataclasses.field(default_factory=dict)
    family: str = "per-parameter"
    update: str = ""
    reference: str = ""
    use: str = ""

    @property
    def is_solver(self):
        """True for full-batch solvers (no learning rate, need `gz.wrap`)."""
        return self.learning_rate is None

    @property
    def cls(self):
        """The `keras_gdzoo` class."""
        import keras_gdzoo

        return getattr(keras_gdzoo, self.class_name)

    def build(self, learning_rate=None, **overrides):
        """A new optimizer; `learning_rate` (if any) replaces the default."""
        options = dict(self.options, **overrides)
        if not self.is_solver:
            options["learning_rate"] = learning_rate or self.learning_rate
        return self.cls(**options)

    @property
    def signature(self):
        """The class with its options, as the README writes it."""
        options = ", ".join(
            f'{key}="{value}"' if isinstance(value, str) else f"{key}={value!r}"
            for key, value in self.options.items()
        )
        return f"{self.class_name}({options})" if options else self.class_name


def _rates(quadratic, rosenbrock, beale, saddle):
    return {"quadratic": quadratic, "rosenbrock": rosenbrock, "beale": beale, "saddle": saddle}


_ADAPTIVE_RATES = _rates(0.2, 0.05, 0.1, 0.1)
_MOMENTUM_RATES = _rates(0.01, 1.5e-4, 1e-3, 0.01)
_CG = "d = −g + β·d_prev, "
_RPROP = "sign-driven per-weight steps, "
_RPROP_REFERENCE = "Riedmiller & Braun 1993; Igel & Hüsken 2003"


def _rprop(variant, update):
    return Method("Rprop", {"variant": variant}, family="rprop", update=_RPROP + update,
                  reference=_RPROP_REFERENCE, use="batch mode only; robust defaults")


METHODS = {
    "gd": Method(
        "GradientDescent", learning_rate=0.1, trajectory_rates=_rates(0.15, 1.5e-3, 1e-2, 0.05),
        update="w −= a·g", reference="Cauchy 1847", use="baseline; slow in ravines"),
    "momentum": Method(
        "Momentum", {"momentum": 0.9}, learning_rate=0.1, trajectory_rates=_MOMENTUM_RATES,
        update="d = μd − a·g; w += d (dampened: a(1−μ)g)", reference="Rumelhart et al. 1986",
        use="ravines; stochastic training"),
    "nag": Method(
        "NesterovMomentum", {"momentum": 0.9}, learning_rate=0.05,
        trajectory_rates=_MOMENTUM_RATES, update="look-ahead gradient (Sutskever form)",
        reference="Nesterov 1983; Sutskever et al. 2013", use="like momentum, steadier at high μ"),
    "adagrad": Method(
        "AdaGrad", learning_rate=0.3, trajectory_rates=_rates(1.0, 0.5, 0.5, 0.5),
        update="G += g²; w −= a·g/√(G+ε)", reference="Duchi et al. 2011",
        use="sparse gradients"),
    "rmsprop": Method(
        "RMSProp", learning_rate=0.001, trajectory_rates=_rates(0.1, 0.02, 0.05, 0.05),
        update="G = ρG + (1−ρ)g² (G(0) = g0²); w −= a·g/√(G+ε)", reference="Hinton 2012",
        use="non-stationary objectives"),
    "adadelta": Method(
        "AdaDelta", learning_rate=1.0, trajectory_rates=_rates(1.0, 1.0, 1.0, 1.0),
        update="Δw = −a·√(D+ε)/√(G+ε)·g", reference="Zeiler 2012",
        use="no learning rate to tune"),
    "adam": Method(
        "Adam", learning_rate=0.02, trajectory_rates=_ADAPTIVE_RATES,
        update="bias-corrected moments m, G; w −= a·m̂/√(Ĝ+ε)", reference="Kingma & Ba 2015",
        use="default for large nets and mini-batches"),
    "adamax": Method(
        "Adamax", learning_rate=0.05, trajectory_rates=_ADAPTIVE_RATES,
        update="u = max(β₂u, abs(g)); w −= a/(1−β₁ᵗ)·m/(u+ε)", reference="Kingma & Ba 2015, §7.1",
        use="like Adam, step bounded by a"),
    "nadam": Method(
        "Nadam", learning_rate=0.02, trajectory_rates=_ADAPTIVE_RATES,
        update="Adam with a Nesterov look-ahead on m", reference="Dozat 2016",
        use="like Adam, often a little faster"),
    "sd": Method(
        "SteepestDescent", family="line-search", update="d = −g, exact line search",
        reference="Cauchy 1847", use="teaching; zigzags"),
    "cg-fr": Method(
        "ConjugateGradient", {"beta": "fletcher-reeves"}, family="line-search",
        update=_CG + "β = g·g/g_prev·g_prev", reference="Fletcher & Reeves 1964",
        use="batch mode, many weights, little memory"),
    "cg-pr": Method(
        "ConjugateGradient", {"beta": "polak-ribiere"}, family="line-search",
        update=_CG + "β = max(0, g·(g−g_prev)/g_prev·g_prev)", reference="Polak & Ribière 1969",
        use="batch mode, many weights, little memory"),
    "bfgs": Method(
        "BFGS", family="line-search", update="d = −B·g, inverse-Hessian update of B",
        reference="Nocedal & Wright 2006, Alg. 6.1",
        use="batch mode, up to a few thousand weights"),
    "lbfgs": Method(
        "LBFGS", family="line-search", update="BFGS from the last 10 (s, y), compact form",
        reference="Nocedal & Wright 2006, Alg. 7.4", use="batch mode, many weights"),
    "rprop": _rprop("irprop+", "the same as irprop+"),
    "rprop+": _rprop("rprop+", "weight backtracking"),
    "rprop-": _rprop("rprop-", "no backtracking"),
    "irprop+": _rprop("irprop+", "backtracking only when E rose"),
    "irprop-": _rprop("irprop-", "g := 0 after a sign change"),
    "newton": Method(
        "Newton", family="second-order", update="w −= (H + μI)⁻¹g, exact Hessian (dense or CG)",
        reference="Nocedal & Wright 2006, Alg. 3.3", use="tiny models"),
    "lm": Method(
        "LevenbergMarquardt", family="second-order",
        update="w −= (ΣJ'J/n + μD)⁻¹ ΣJ'e/n, μ by the gain ratio",
        reference="Levenberg 1944; Marquardt 1963", use="small and medium nets: fastest on SIN"),
    "br": Method(
        "BayesianRegularization", family="second-order",
        update="LM on βE_D + Σ_c α_c E_c, α_c per variable and β re-estimated each iteration",
        reference="MacKay 1992; Foresee & Hagan 1997",
        use="small nets on few or noisy data (MATLAB's trainbr)"),
}


def names(family=None):
    """The short names, all or those of one family, in registry order."""
    if family is not None and family not in FAMILIES:
        listed = ", ".join(repr(f) for f in FAMILIES)
        raise ValueError(f"Argument `family` must be one of {listed}. Received: family={family!r}")
    return [name for name, method in METHODS.items() if family in (None, method.family)]


def get(name):
    """The `Method` called `name`."""
    if name not in METHODS:
        raise ValueError(
            f"Argument `name` must be one of {', '.join(METHODS)}. Received: name={name!r}"
        )
    return METHODS[name]


_COLUMNS = ("`gdzoo` name", "class", "family", "`gdzoo` rate", "update", "reference",
            "when to use")


def markdown_table():
    """The README's method table: one row per short name."""
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for name, method in METHODS.items():
        rate = "–" if method.learning_rate is None else f"{method.learning_rate:g}"
        cells = (name, f"`{method.signature}`", method.family, rate, method.update,
                 method.reference, method.use)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def find_table(text):
    """(start, end) of the method table in `text` (a README), by its header."""
    header = "| " + " | ".join(_COLUMNS) + " |"
    start = text.find(header)
    if start < 0:
        raise ValueError("The text has no method table (its header line is missing).")
    end = start
    while end < len(text) and text.startswith("|", end):
        newline = text.find("\n", end)
        end = len(text) if newline < 0 else newline + 1
    return start, end


def update_readme(path):
    """Rewrite the method table in the file `path`; True when it changed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    start, end = find_table(text)
    new = text[:start] + markdown_table() + text[end:]
    if new != text:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(new)
    return new != text


def main(argv=None):
    """`python -m keras_gdzoo.methods [--update README.md]`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--update"] and len(argv) == 2:
        changed = update_readme(argv[1])
        print(f"{argv[1]}: method table {'updated' if changed else 'already up to date'}")
        return 0
    if argv:
        print("usage: python -m keras_gdzoo.methods [--update README.md]", file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
