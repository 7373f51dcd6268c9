"""Atomic file writes: write a temp file beside the target, fsync, rename, fsync the directory.

A write that runs out of space raises :class:`core.errors.DiskFull` (one line: what could not
be written, bytes needed vs free) and leaves the previous file and no temp file behind.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

from core.errors import DiskFull

NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def is_no_space(exc: BaseException) -> bool:
    """True for the OSError a write raises when the filesystem (or a quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def free_bytes(path: str | os.PathLike) -> int | None:
    """Free bytes on the filesystem holding ``path`` (its nearest existing ancestor), or None."""
    here = Path(path).absolute()
    for candidate in (here, *here.parents):
        if candidate.exists():
            try:
                return shutil.disk_usage(candidate).free
            except OSError:
                return None
    return None


def disk_full(path: str | os.PathLike, needed: int | None, what: str = "") -> DiskFull:
    """The DiskFull error for a failed write of ``needed`` bytes to ``path``."""
    free = free_bytes(path)
    subject = f"{what} {path}" if what else str(path)
    need = f"needs {needed:,} bytes" if needed else "needs more space"
    have = f", {free:,} free" if free is not None else ""
    return DiskFull(f"cannot write {subject}: no space left on the device ({need}{have}); "
                    "free some space and try again", path=str(path), needed=needed, free=free, what=what)


@contextlib.contextmanager
def no_space_as_error(path: str | os.PathLike, needed: int | None = None, what: str = "") -> Iterator[None]:
    """Turn an out-of-space OSError inside the block into :class:`DiskFull` about ``path``.

    A DiskFull from an inner write that did not say what it was writing is re-raised as ``what``.
    """
    try:
        yield
    except DiskFull as exc:
        if exc.what or not what:
            raise
        raise disk_full(exc.path, exc.needed or needed, what) from None
    except OSError as exc:
        if is_no_space(exc):
            raise disk_full(path, needed, what) from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, *, size: int | None = None, what: str = "") -> Iterator[BinaryIO]:
    """Open a temp file for binary writing that replaces ``path`` only if the block succeeds.

    A crash (even signal 9) at any moment leaves either the old file or the new one, never a
    torn mix; a failed block leaves no temp file behind. ``size`` (the bytes about to be
    written, when known) and ``what`` only make a DiskFull message more exact.
    """
    path = Path(path)
    written = 0
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        if is_no_space(exc):
            raise disk_full(path, size, what) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            try:
                yield handle
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                with contextlib.suppress(OSError, ValueError):
                    written = handle.tell()
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if is_no_space(exc):
            raise disk_full(path, size or written or None, what) from None
        raise
    _fsync_dir(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes, *, what: str = "") -> None:
    """Write ``data`` to ``path`` atomically (DiskFull if it does not fit)."""
    with atomic_open(path, size=len(data), what=what) as handle:
        handle.write(data)


def write_text(path: str | os.PathLike, text: str, *, what: str = "") -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"), what=what)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # some filesystems (and Android's shared storage) refuse opening a directory
    try:
        os.fsync(fd)
    except OSError:
        pass  # fsync on a directory is advisory; the rename itself already happened
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of the file at ``path``, read in blocks by :func:`hashlib.file_digest`."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
