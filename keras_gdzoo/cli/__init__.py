"""The `gdzoo` command (also `python -m keras_gdzoo`).

Three subcommands, each printing a table and writing PNG plots and CSV/JSON
results into `--out` (default `./gdzoo-out`):

* `gdzoo compare`: train a built-in problem's network with several methods
  from the same initial weights per seed; report the final loss, epochs and
  seconds to the problem's error goal, and the success rate (the MATLAB
  benchmark's way of choosing a training function).
* `gdzoo trajectories`: each method's path on a 2-D function's contours
  (the lecture's GD / momentum / NAG / steepest descent / CG / LM pictures).
* `gdzoo init`: variances and histograms of activations and gradients per
  layer of a deep network for several weight initializations (the lecture's
  "information flow" figure).

The package: `compare`, `trajectories` and `init` each compute their result
(`run(args) -> result`, no files) and format its table (`summary(result)`);
`plots` draws a result's figures, `output` writes the files, `common` holds
the argument parsing they share. `main(argv)` parses, runs, writes, prints,
and returns the exit code: 0 on success, 1 when a data set cannot be loaded
or a file cannot be written, 2 for bad arguments (a one-line message on
stderr, as argparse gives).
"""

import argparse
import sys

from keras_gdzoo import methods as methods_lib
from keras_gdzoo import problems as problems_lib
from keras_gdzoo.cli import common
from keras_gdzoo.cli import compare
from keras_gdzoo.cli import init
from keras_gdzoo.cli import output
from keras_gdzoo.cli import trajectories
from keras_gdzoo.cli.common import UsageError

#: command -> the module with its `run(args, report)` and `summary(result)`.
COMMANDS = {"compare": compare, "trajectories": trajectories, "init": init}


class _Parser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


def _add_out(parser):
    parser.add_argument("--out", default="gdzoo-out",
                        help="output folder (default: ./gdzoo-out)")


def build_parser():
    """The `gdzoo` argument parser."""
    parser = _Parser(
        prog="gdzoo",
        description="Compare classic neural-network training methods (keras_gdzoo).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    method_help = "comma-separated short names, optionally NAME:LEARNING_RATE; one of: " + \
        ", ".join(methods_lib.METHODS)

    p = commands.add_parser(
        "compare", help="train a built-in problem with several methods",
        description="Train a built-in problem's network with each method from the same initial "
                    "weights per seed; report loss, epochs and seconds to the error goal.")
    p.add_argument("--problem", default="sin",
                   help=f"one of {', '.join(problems_lib.names())} (default: sin)")
    p.add_argument("--methods", default=compare.DEFAULT_METHODS,
                   help=f"{method_help} (default: {compare.DEFAULT_METHODS})")
    p.add_argument("--epochs", type=common.count, help="epochs per run (default: the problem's)")
    p.add_argument("--seeds", type=common.count, default=3, help="seeds 0..K-1 (default: 3)")
    p.add_argument("--batch-size", type=common.count,
                   help="default: the problem's, else the whole training set (batch mode)")
    p.add_argument("--goal", type=common.positive_float,
                   help="error goal (default: the problem's)")
    p.add_argument("--samples", type=common.count,
                   help="data size for sin and sinc (sinc: 2000)")
    p.add_argument("--data-dir", help="tensorflow_datasets directory holding mnist/")
    _add_out(p)

    p = commands.add_parser(
        "trajectories", help="paths of methods on 2-D functions",
        description="Contour plot of a 2-D function with each method's path.")
    p.add_argument("--function", default="quadratic", choices=list(problems_lib.SURFACES))
    p.add_argument("--methods", help=f"{method_help} (default: depends on the function)")
    p.add_argument("--iterations", type=common.count, help="default: depends on the function")
    _add_out(p)

    p = commands.add_parser(
        "init", help="activation and gradient variance per layer for initializations",
        description="Histograms and variances of activations and gradients per layer of a deep "
                    "network, for several weight initialization schemes.")
    p.add_argument("--depth", type=common.count, default=10)
    p.add_argument("--width", type=common.count, default=256)
    p.add_argument("--samples", type=common.count, default=1000)
    p.add_argument("--activation", default="tanh", help=f"one of {', '.join(init.ACTIVATIONS)}")
    p.add_argument("--schemes", default=init.DEFAULT_SCHEMES,
                   help="comma-separated NAME or NAME:SCALE, NAME one of "
                        f"{', '.join(init.SCHEMES)} (default: {init.DEFAULT_SCHEMES})")
    p.add_argument("--seed", type=common.seed, default=0,
                   help=f"an integer in [0, {common.MAX_SEED}] (default: 0)")
    _add_out(p)
    return parser


def _report(line):
    print(line, flush=True)


def run_command(args):
    """Check `--out`, run the subcommand, write its files, print its table."""
    command = COMMANDS[args.command]
    common.check_out(args.out)
    result = command.run(args, report=_report)
    written = output.write(args.command, result, args.out)
    print(command.summary(result))
    print(f"wrote {', '.join(written)} in {args.out}")
    return 0


def main(argv=None):
    """Run the `gdzoo` command; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"gdzoo: error: {error}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # --help
        return exit_.code or 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return run_command(args)
    except UsageError as error:
        print(f"gdzoo {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (OSError, ImportError) as error:
        # A data set that is not there (or its optional package), a file
        # that cannot be written after all (a full disk).
        text = str(error).strip().splitlines()
        print(f"gdzoo {args.command}: error: {text[0] if text else type(error).__name__}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gdzoo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
