"""Character-level text from the Python standard library's own source files (offline, real).

The corpus is a FIXED, sorted list of top-level modules of the running interpreter's standard
library (found with ``sysconfig.get_paths()["stdlib"]``): :data:`TRAIN_FILES` for training and
the disjoint :data:`TEST_FILES` for testing. Nothing is downloaded and nothing random happens
while loading: the same interpreter gives the same streams. (Another Python version ships other
versions of these files, so the streams, and the losses measured on them, differ slightly.)

Characters are mapped to ids by :func:`encode`: an ASCII character is its code point (0-127),
any other character the id 0 (NUL never occurs in source text). So the vocabulary has
:data:`VOCAB` = 128 ids and the chance-level loss is ``ln 128 = 4.852`` nats per character.

Windows: a training batch is ``batch`` windows of ``context + 1`` characters at offsets drawn
by a seeded ``torch.Generator`` (input = the first ``context``, target = the last ``context``:
next-character prediction); the test set is ``n`` windows at evenly spaced offsets of the test
stream, the same for every run.
"""
from __future__ import annotations

import functools
import os
import sysconfig
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["TEST_FILES", "TRAIN_FILES", "VOCAB", "TextData", "encode", "load_text", "stdlib_dir"]

#: training modules: present, at top level, in CPython 3.9 to 3.13 (sorted)
TRAIN_FILES: tuple[str, ...] = (
    "argparse.py", "ast.py", "calendar.py", "configparser.py", "contextlib.py", "copy.py",
    "csv.py", "dataclasses.py", "difflib.py", "enum.py", "functools.py", "inspect.py",
    "pprint.py", "random.py", "shutil.py", "statistics.py", "string.py", "subprocess.py",
    "tarfile.py", "threading.py", "tokenize.py", "typing.py",
)
#: test modules, disjoint from the training ones (sorted)
TEST_FILES: tuple[str, ...] = ("fractions.py", "heapq.py", "shlex.py", "textwrap.py")

#: number of character ids (ASCII; every other character is id 0)
VOCAB = 128


def stdlib_dir() -> str:
    """The folder of the running interpreter's standard library (``sysconfig``'s "stdlib")."""
    return sysconfig.get_paths()["stdlib"]


def encode(text: str) -> torch.Tensor:
    """Character ids of ``text`` (int64): the code point for ASCII, 0 for anything else."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
    return torch.from_numpy(np.where(codes < VOCAB, codes, 0))


def _read(names: tuple[str, ...], folder: str) -> str:
    parts = []
    for name in names:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ValueError(f"standard-library source {name!r} not found in {folder!r}: this "
                             f"interpreter ships no {name} (a stripped install?); use a CPython "
                             f"3.9-3.13 with its Lib/ sources")
        with open(path, encoding="utf-8") as f:
            parts.append(f.read())
    return "\n".join(parts)


@dataclass(frozen=True)
class TextData:
    """The encoded training and test streams (1-D int64 tensors of character ids)."""

    train: torch.Tensor
    test: torch.Tensor
    folder: str

    def batch(self, batch: int, context: int, generator: torch.Generator
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch`` training windows at offsets drawn from ``generator``: (inputs, targets),
        both (batch, context), targets shifted by one character."""
        _check_window(batch, context, self.train.numel())
        starts = torch.randint(0, self.train.numel() - context, (batch,), generator=generator)
        return _windows(self.train, starts, context)

    def test_windows(self, n: int, context: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` test windows at evenly spaced offsets ``i * (len - context - 1) // (n - 1)``:
        the same fixed test set for every run."""
        _check_window(n, context, self.test.numel())
        last = self.test.numel() - context - 1
        starts = torch.tensor([i * last // max(1, n - 1) for i in range(n)], dtype=torch.int64)
        return _windows(self.test, starts, context)


def _check_window(n: int, context: int, length: int) -> None:
    for key, value in (("batch", n), ("context", context)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if context + 1 > length:
        raise ValueError(f"context {context} does not fit a stream of {length} characters")


def _windows(stream: torch.Tensor, starts: torch.Tensor, context: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(context + 1)[None, :]
    w = stream[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


@functools.lru_cache(maxsize=4)
def load_text(folder: str | None = None) -> TextData:
    """Read and encode :data:`TRAIN_FILES` and :data:`TEST_FILES` (files joined by a newline,
    in the listed order) from ``folder`` (default: :func:`stdlib_dir`); cached per folder."""
    folder = folder or stdlib_dir()
    return TextData(train=encode(_read(TRAIN_FILES, folder)),
                    test=encode(_read(TEST_FILES, folder)), folder=folder)
