"""Checks of the command line's options, before any work: numbers in range, shapes, options that
do not apply, output paths (never an input file), which options were given.

Used by :mod:`initwise.cli` only (the library never imports either).
"""
from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["MAX_ELEMENTS", "MAX_SEED", "CLIError", "check_paths", "check_size", "float_range",
           "given_options", "int_range", "parse_shape", "reject"]

#: Seeds are 64-bit (torch.Generator.manual_seed's range).
MAX_SEED = 2**64 - 1
#: The most elements an input batch or a built-in model may hold: 2^28 (1 GiB in float32), so
#: that a typo (--depth 100000000) is an error, not an out-of-memory kill.
MAX_ELEMENTS = 2**28
_INT = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: '²'.isdigit() is True, int('²') fails


class CLIError(Exception):
    """An error the user can fix; printed as one line, without a traceback."""


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer from ``lo`` to ``hi``."""
    def parse(text: str) -> int:
        if not _INT.fullmatch(text.strip()):
            raise argparse.ArgumentTypeError(f"must be an integer (digits 0-9), got {text!r}")
        value = int(text)
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be an integer from {lo} to {hi}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type``: a finite number in ``[lo, hi]`` (``lo_open``/``hi_open``: the bound
    itself excluded)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
        if value < lo or value > hi or lo_open and value == lo or hi_open and value == hi:
            left, right = "(" if lo_open else "[", ")" if hi_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{lo:g}, {hi:g}{right}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """Comma-separated positive integers (ASCII digits), each at most 2^31 - 1, with at most
    :data:`MAX_ELEMENTS` elements in all."""
    parts = [t.strip() for t in str(text).split(",")]
    if not text or not text.strip() or not all(_INT.fullmatch(t) and not t.startswith(("+", "-")) for t in parts):
        raise CLIError(f"{option} must be comma-separated positive integers (digits 0-9) such as "
                       f"1,3,32,32, got {text!r}")
    shape = tuple(int(t) for t in parts)
    if any(s < 1 for s in shape):
        raise CLIError(f"{option} {text}: every size must be at least 1")
    if any(s > 2**31 - 1 for s in shape):
        raise CLIError(f"{option} {text}: a size above 2^31 - 1 is too large")
    check_size(math.prod(shape), f"{option} {text}", "an input of")
    return shape


def check_size(elements: int, what: str, noun: str = "") -> None:
    """``CLIError`` when ``elements`` exceeds :data:`MAX_ELEMENTS`."""
    if elements > MAX_ELEMENTS:
        gib = elements * 4 / 2**30
        raise CLIError(f"{what} means {noun + ' ' if noun else ''}{elements:.3g} elements ({gib:.3g} GiB in "
                       f"float32); the limit is {MAX_ELEMENTS} (1 GiB): choose smaller sizes")


def given_options(build_parser: Callable[[], argparse.ArgumentParser], argv: list[str]) -> set[str]:
    """The ``dest`` of every option that ``argv`` gives explicitly: ``argv`` parsed again with
    every default replaced by ``SUPPRESS``, so that only given options set an attribute."""
    parser = build_parser()
    parsers = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            parsers.extend(action.choices.values())
    for p in parsers:
        for action in p._actions:
            if not isinstance(action, (argparse._SubParsersAction, argparse._HelpAction,
                                       argparse._VersionAction)):
                action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"func", "command"}


def _flag(dest: str) -> str:
    return "TARGET" if dest == "target" else "--" + dest.replace("_", "-")


def reject(args: argparse.Namespace, options: Iterable[str], reason: str) -> None:
    """``CLIError`` when any of ``options`` (dests) was given: it does not apply ``reason``."""
    given = sorted(o for o in options if o in getattr(args, "given", set()))
    if given:
        names = ", ".join(_flag(o) for o in given)
        raise CLIError(f"{names} {'does' if len(given) == 1 else 'do'} not apply {reason}")


def _same(a: str, b: str) -> bool:
    return os.path.realpath(os.path.abspath(a)) == os.path.realpath(os.path.abspath(b))


def target_file(spec: Any) -> str | None:
    """The file of a ``path/to/file.py:factory`` TARGET (``None`` for ``package.module:factory``)."""
    if not isinstance(spec, str) or ":" not in spec:
        return None
    where = spec.rpartition(":")[0]
    return where if where.endswith(".py") or os.sep in where or "/" in where else None


def check_paths(args: argparse.Namespace, files: tuple[str, ...], dirs: tuple[str, ...],
                inputs: dict[str, str]) -> None:
    """Output files (options ``files``) go into an existing writable folder and are neither a
    folder nor an input file (``inputs``: label -> path) nor another output; output folders
    (``dirs``) can be created (nothing is created here: reports are staged and moved into place)."""
    outputs: dict[str, str] = {}
    for attr in files:
        path = getattr(args, attr, None)
        if not isinstance(path, str):
            continue
        option = _flag(attr)
        if not path or os.path.isdir(path):
            raise CLIError(f"{option} {path!r} is a folder; give a file name")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise CLIError(f"{option} {path!r}: folder {folder!r} does not exist or is not writable")
        for label, source in inputs.items():
            if _same(path, source):
                raise CLIError(f"{option} {path!r} is {label}; writing it would destroy it: choose another name")
        for other, opath in outputs.items():
            if _same(path, opath):
                raise CLIError(f"{option} and {other} are the same file {path!r}; one would overwrite the other")
        outputs[option] = path
    for attr in dirs:
        path = getattr(args, attr, None)
        if not isinstance(path, str):
            continue
        option = _flag(attr)
        if os.path.exists(path) and not os.path.isdir(path):
            raise CLIError(f"{option} {path!r} exists and is not a folder")
        base = os.path.abspath(path)
        while not os.path.isdir(base):
            base = os.path.dirname(base)
        if not os.access(base, os.W_OK):
            raise CLIError(f"{option} {path!r}: folder {base!r} is not writable")
