"""The ``initwise`` command line: a thin layer that parses arguments and calls the library.

Each subcommand is a pair of functions in the module of its group: :mod:`.autoplan` (recommend,
plan, init), :mod:`.diagnose` and :mod:`.evidence` (demo, compare, sweep, claim), with what they
share in :mod:`.common`. ``add_<name>(subparsers)`` declares the arguments of a subcommand and
``_cmd_<name>(args)`` runs it and returns an exit code; a new subcommand is listed in ``_ADDERS``
below. Errors the user can fix (bad names, bad shapes, a TARGET that does not load) are printed
as one line on stderr, with exit code 2, unless ``--debug`` is given, which shows the full
traceback (the user's own frames included). Every option is checked before any work
(:mod:`.options`: numbers in range, options that do not apply, outputs that would overwrite an
input); Ctrl-C exits 130 with one line, and files are written atomically, so an interrupted
command leaves no partial output.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..discover import one_line
from .autoplan import add_init, add_plan, add_recommend
from .diagnose import add_diagnose
from .evidence import add_claim, add_compare, add_demo, add_sweep
from .options import CLIError, check_paths, given_options, target_file

# in the order of the help text: choose, then measure, then show the evidence
_ADDERS = [add_recommend, add_plan, add_init, add_diagnose, add_demo, add_compare, add_sweep, add_claim]


def _version() -> str:
    import platform

    import torch

    from .. import __version__

    return f"initwise {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


class _UsageError(Exception):
    """An argparse error (unknown option, a number out of range), raised instead of exiting so
    that main() prints it as one line like every other error."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise _UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="initwise",
        description="The right initial weights for every layer of a PyTorch network.",
    )
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the versions of initwise, torch and Python and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _ADDERS:
        add(sub)
    # --debug is accepted after the subcommand too; default SUPPRESS so that a subcommand
    # without it does not reset the value given before the subcommand
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


# Output options checked before any work starts: files must go into an existing folder and
# never replace an input (the TARGET's file, --from-plan) or another output; a report folder
# must be creatable (it is written whole, at the end).
_OUTPUT_FILES = ("save", "json", "plot")
_OUTPUT_DIRS = ("out",)


def _check_outputs(args: argparse.Namespace) -> None:
    inputs = {}
    source = target_file(getattr(args, "target", None))
    if source:
        inputs[f"the TARGET's file ({source})"] = source
    if isinstance(getattr(args, "from_plan", None), str):
        inputs["the --from-plan input"] = args.from_plan
    check_paths(args, _OUTPUT_FILES, _OUTPUT_DIRS, inputs)


_EXTRAS = ("rich", "matplotlib", "sklearn", "mnist1d")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status:
    0, 1 (a failure, e.g. of the user's model, or a claim not reproduced), 2 (an error in the
    arguments or a TARGET that does not load) or 130 (interrupted with Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "initwise"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"initwise {args.command}"
        args.given = given_options(build_parser, argv)
        return _run(args)
    except _UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see '{exc.prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted (Ctrl-C); no file was written or changed", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # raised by the user's code (argparse exits before this point)
        if args.debug:
            raise
        print(f"initwise {args.command}: error: the model's code called sys.exit({exc.code!r}) "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    except (CLIError, ValueError, TypeError, OSError, ImportError) as exc:
        if args.debug:
            raise
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name in _EXTRAS:
            hint = " (it comes with the extras: pip install 'initwise[full]')"
        print(f"initwise {args.command}: error: {one_line(exc, 300)}{hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else (e.g. a model's RuntimeError): one line too
        if args.debug:
            raise
        print(f"initwise {args.command}: error: {type(exc).__name__}: {one_line(exc, 300)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1

