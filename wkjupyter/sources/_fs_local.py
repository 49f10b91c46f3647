"""Local files, read the way the server needs: from the page cache on the event loop when it
holds them, else in a thread, and confined to ``AccessOptions.local_roots`` when given.

A confined read checks the file the kernel really opened (``/proc/self/fd``), not a path
resolved before the open, so no symlink swapped in between can lead it elsewhere
(:func:`open_confined`).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
from pathlib import Path
from typing import BinaryIO, Final

from wkjupyter.errors import OutsideLocalRootsError

__all__ = [
    "MISS",
    "OUTSIDE_LOCAL_ROOTS",
    "is_local_file",
    "list_local",
    "open_confined",
    "read_cached",
    "read_local",
    "read_local_suffix",
]

OUTSIDE_LOCAL_ROOTS: Final = "is outside the allowed local roots"

MISS: Final = object()
_NOWAIT: Final = getattr(os, "RWF_NOWAIT", None)
_MAX_CACHED_READ: Final = 16 * 2**20


def read_cached(
    path: str, byte_range: tuple[int, int] | None, roots: tuple[str, ...] | None = None
) -> bytes | object | None:
    """A local file's bytes when the page cache holds all of them, else ``MISS``.

    ``preadv(RWF_NOWAIT)`` (Linux) fails instead of waiting for the disk, so this never
    blocks the event loop on data; a miss goes to a thread. It spares the thread hand-off,
    which costs ten times the read of a cached chunk (bench/serve.py). ``None``: no such file.
    """
    if _NOWAIT is None:
        return MISS
    try:
        fd = open_confined(path, os.O_RDONLY | os.O_CLOEXEC, roots)
    except OutsideLocalRootsError:
        raise
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return MISS
    try:
        size = os.fstat(fd).st_size
        start, end = byte_range if byte_range is not None else (0, size)
        length = max(0, min(end, size) - start)
        if length == 0 or length > _MAX_CACHED_READ:
            return b"" if length == 0 and start <= size else MISS
        buffer = bytearray(length)
        if os.preadv(fd, [buffer], start, _NOWAIT) != length:
            return MISS
        return bytes(buffer)
    except OSError:  # BlockingIOError: not cached; EISDIR, EOPNOTSUPP ...: let the thread say
        return MISS
    finally:
        os.close(fd)


def read_local(
    path: str, byte_range: tuple[int, int] | None, roots: tuple[str, ...] | None = None
) -> bytes | None:
    try:
        with _open_local(path, roots) as f:
            if byte_range is None:
                return f.read()
            start, end = byte_range
            f.seek(start)
            return f.read(max(0, end - start))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def read_local_suffix(path: str, nbytes: int, roots: tuple[str, ...] | None = None) -> bytes | None:
    try:
        with _open_local(path, roots) as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - nbytes))
            return f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def list_local(path: str, roots: tuple[str, ...] | None = None) -> list[str]:
    try:
        if roots is None:
            with os.scandir(path) as it:
                return sorted(e.name + ("/" if e.is_dir() else "") for e in it)
        fd = open_confined(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, roots)
    except (FileNotFoundError, NotADirectoryError):
        return []
    # A symlink that leads outside the roots is left out: whether it names a folder (or
    # anything) there must not show, and nothing below it could be read anyway. Entries are
    # looked at through the open folder, while it is open.
    real_roots = _real_roots(roots)
    names = []
    try:
        with os.scandir(fd) as it:
            for e in it:
                if e.is_symlink() and not _below(
                    os.path.realpath(os.path.join(path, e.name)), real_roots
                ):
                    continue
                names.append(e.name + ("/" if e.is_dir() else ""))
    finally:
        os.close(fd)
    return sorted(names)


def is_local_file(path: str, roots: tuple[str, ...] | None) -> bool:
    if roots is None:
        return Path(path).is_file()
    try:  # O_PATH: no read permission needed, as for stat, and no open side effects
        fd = open_confined(path, _O_PATH | os.O_CLOEXEC, roots)
    except OutsideLocalRootsError:
        raise
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES):
            return False
        raise
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    finally:
        os.close(fd)


# -- local roots ----------------------------------------------------------------------------

_O_PATH: Final = getattr(os, "O_PATH", os.O_RDONLY)


def _open_local(path: str, roots: tuple[str, ...] | None) -> BinaryIO:
    """``open(path, "rb")``, confined to ``roots`` when they are given."""
    if roots is None:
        return open(path, "rb")  # the caller closes it
    fd = open_confined(path, os.O_RDONLY | os.O_CLOEXEC, roots)
    try:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_confined(path: str, flags: int, roots: tuple[str, ...] | None) -> int:
    """``os.open(path, flags)``; with ``roots``, only when the file really opened lies below
    one of them, else :class:`OutsideLocalRootsError`.

    The check is on the descriptor, after the open (``/proc/self/fd``), so no symlink swapped
    in between a check and the open can lead the read elsewhere. Before it, a path outside
    the roots both as written and as resolved is not opened at all (``..``, absolute paths
    elsewhere); one written inside that a symlink leads out of is opened and closed unread
    (``O_NOCTTY`` and ``O_NONBLOCK``: a terminal or FIFO there does no harm). When the
    open fails, the path is resolved (``realpath``): outside, the answer is the same refusal
    as for an outside file that exists, so a refusal tells nothing about what is there. (A
    symlink swapped between the failed open and that resolution can still make an outside
    miss answer "absent": which outside paths exist, never their content.)
    """
    if roots is None:
        return os.open(path, flags)
    absolute = os.path.abspath(path)
    real_roots = _real_roots(roots)
    lexically = _below(absolute, roots) or _below(absolute, real_roots)
    if not lexically and not _below(os.path.realpath(absolute), real_roots):
        raise _outside(path, roots)  # not opened at all
    try:
        fd = os.open(path, flags | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        if not _below(os.path.realpath(path), real_roots):
            raise _outside(path, roots) from None
        raise
    try:
        opened = _opened_path(fd, path)
    except BaseException:
        os.close(fd)
        raise
    if opened is None or not _below(opened, real_roots):
        os.close(fd)
        raise _outside(path, roots)
    return fd


def _opened_path(fd: int, path: str) -> str | None:
    """The real path of the file open at ``fd`` (``None``: it cannot be told)."""
    with contextlib.suppress(OSError):
        return os.readlink(f"/proc/self/fd/{fd}")  # Linux: what the kernel opened
    # Elsewhere: the resolved path, if it is the very file that was opened.
    real = os.path.realpath(path)
    try:
        st, opened = os.stat(real), os.fstat(fd)
    except OSError:
        return None
    return real if (st.st_dev, st.st_ino) == (opened.st_dev, opened.st_ino) else None


@functools.lru_cache(maxsize=64)
def _real_roots(roots: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(os.path.realpath(r) for r in roots)


def _below(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _outside(path: str, roots: tuple[str, ...]) -> OutsideLocalRootsError:
    shown = ", ".join(roots) or "none"
    return OutsideLocalRootsError(
        f"local path {path!r} {OUTSIDE_LOCAL_ROOTS} ({shown}), so it is not read"
    )
