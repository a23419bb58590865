"""The ``initwise`` command line: a thin layer that parses arguments and calls the library.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args)`` runs it and returns an exit code. Errors the user can fix (bad names, bad
shapes, a TARGET that does not load) are printed as one line on stderr, with exit code 2,
unless ``--debug`` is given, which shows the full traceback.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


class CLIError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


# ---------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="show how the activation std evolves through deep MLPs under each scheme",
        description="For each scheme, build a deep MLP (ReLU and tanh), push a batch of "
        "standard-normal inputs through it and print the activation std at a few depths.",
    )
    p.add_argument("--depth", type=int, default=50, help="number of Linear layers (default 50)")
    p.add_argument("--width", type=int, default=256, help="units per layer (default 256)")
    p.add_argument("--batch", type=int, default=512, help="batch size (default 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from .depthprofile import DEMO_SCHEMES, depth_profile, format_profile

    for activation in ("relu", "tanh"):
        rows = depth_profile(
            activation, DEMO_SCHEMES, depth=args.depth, width=args.width,
            batch=args.batch, seed=args.seed,
        )
        print(format_profile(rows, activation, depth=args.depth, width=args.width))
        print()
    return 0


# ------------------------------------------------------------------- subcommands end
# (add new subcommands above this line: an _add_<name> and a _cmd_<name>, then list
#  _add_<name> in _ADDERS below)

_ADDERS = [_add_demo]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initwise",
        description="The right initial weights for every layer of a PyTorch network.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (CLIError, ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        if args.debug:
            raise
        print(f"initwise {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
