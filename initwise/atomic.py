"""Atomic file writes: a file is either the old one or the complete new one, never half of each.

Every writer of the library and the CLI goes through here. A file is written to a temporary
name in the same folder (created with the same permissions as a plain ``open(path, "w")``,
i.e. ``0o666`` less the umask), flushed and ``fsync``-ed, then renamed over the target with
``os.replace``, which POSIX and Windows make atomic within one file system. If anything fails
(disk full, file-size limit, Ctrl-C, an error while producing the contents) the temporary file
is removed and the target keeps its old contents, or stays absent.

:func:`staged_folder` does the same for a report folder: its files are written into a
temporary folder beside it, and only when all of them are written are they moved into place
(a new folder appears whole, with one rename; the files of an existing one are replaced one by
one, each atomically). A failure leaves no folder and no partial file behind.

>>> write_text("plan.json", text)
>>> torch_save(model.state_dict(), "weights.pt")
>>> with staged_folder("report") as tmp:
...     write_text(os.path.join(tmp, "results.json"), text)
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from typing import IO, Any, Iterator

__all__ = ["atomic_open", "write_text", "write_bytes", "torch_save", "savefig", "staged_folder",
           "relocate"]


def _target(path: str | os.PathLike) -> str:
    """The file a write to ``path`` must replace: a symbolic link is followed (as ``open``
    does), so that the link survives and its target gets the new contents."""
    path = os.fspath(path)
    if not path:
        raise ValueError("cannot write to an empty path")
    return os.path.realpath(path) if os.path.islink(path) else path


def _temp_name(target: str) -> str:
    folder, base = os.path.split(os.path.abspath(target))
    return os.path.join(folder, f".{base}.{secrets.token_hex(4)}.tmp")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8",
                newline: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing; on a normal exit of the ``with``
    block it replaces ``path`` (atomically), on any exception (``KeyboardInterrupt`` included)
    it is removed and ``path`` is left as it was. ``mode`` is ``"w"`` (text) or ``"wb"``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    target = _target(path)
    if os.path.isdir(target):
        raise IsADirectoryError(f"{os.fspath(path)!r} is a folder; give a file name")
    tmp = _temp_name(target)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if mode == "wb":
            fh = os.fdopen(fd, "wb")
        else:
            fh = os.fdopen(fd, "w", encoding=encoding, newline=newline)
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(path: str | os.PathLike, text: str, *, encoding: str = "utf-8") -> str:
    """Write ``text`` to ``path`` atomically; return the path as a string."""
    if not isinstance(text, str):
        raise TypeError(f"write_text needs a str, got {type(text).__name__}")
    with atomic_open(path, "w", encoding=encoding) as fh:
        fh.write(text)
    return os.fspath(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; return the path as a string."""
    with atomic_open(path, "wb") as fh:
        fh.write(bytes(data))
    return os.fspath(path)


def torch_save(obj: Any, path: str | os.PathLike) -> str:
    """``torch.save(obj, path)``, atomically: a failed save keeps the previous file loadable."""
    import torch

    with atomic_open(path, "wb") as fh:
        writer = _Recording(fh)
        try:
            torch.save(obj, writer)
        except RuntimeError:
            if writer.error is not None:  # torch reports a failed write as a RuntimeError
                raise writer.error from None
            raise
    return os.fspath(path)


class _Recording:
    """A binary file that remembers the ``OSError`` of a failed write (disk full, file-size
    limit), which ``torch.save`` would otherwise turn into an unrelated ``RuntimeError``."""

    def __init__(self, fh: IO[bytes]) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: bytes) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def savefig(fig: Any, path: str | os.PathLike, **kwargs: Any) -> str:
    """``fig.savefig(path, **kwargs)`` for a matplotlib figure, atomically. The format is the
    file's extension (as matplotlib infers it from a name), unless ``format=`` is given."""
    fmt = kwargs.pop("format", None) or os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or None
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format=fmt, **kwargs)
    return os.fspath(path)


def relocate(paths: dict[str, str], staged: str, final: str | os.PathLike) -> dict[str, str]:
    """``paths`` (as written under the staging folder ``staged``) renamed to their final place
    under ``final``."""
    final = os.fspath(final)
    out = {}
    for key, p in paths.items():
        rel = os.path.relpath(p, staged)
        out[key] = final if rel == "." else os.path.join(final, rel)
    return out


@contextlib.contextmanager
def staged_folder(out_dir: str | os.PathLike) -> Iterator[str]:
    """Yield a new empty temporary folder beside ``out_dir`` to write a report into; when the
    ``with`` block ends normally, its contents are moved to ``out_dir``: a folder that did not
    exist is created by one rename (it appears complete), an existing one gets each file
    replaced atomically (other files in it are kept). On any exception the temporary folder is
    removed and ``out_dir`` is left as it was (not created when it did not exist)."""
    final = os.path.abspath(_target(out_dir))
    if os.path.exists(final) and not os.path.isdir(final):
        raise NotADirectoryError(f"{os.fspath(out_dir)!r} exists and is not a folder")
    base = os.path.dirname(final)
    while not os.path.isdir(base):  # missing parents are created only at the end, with it
        base = os.path.dirname(base)
    tmp = _temp_name(os.path.join(base, os.path.basename(final)))
    os.mkdir(tmp)  # mode 0o777 less the umask, as the folder itself would get
    try:
        yield tmp
        if not os.path.isdir(final):
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.rename(tmp, final)
            return
        _merge(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _merge(src: str, dst: str) -> None:
    """Move every file under ``src`` to the same place under ``dst`` (each by ``os.replace``)."""
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        here = dst if rel == "." else os.path.join(dst, rel)
        os.makedirs(here, exist_ok=True)
        for name in files:
            os.replace(os.path.join(root, name), os.path.join(here, name))
