"""Atomic file writes: write next to the target, then rename, so readers never see half a file
and an interrupted write leaves nothing behind (caches, samples, reports, checkpoints)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DiskFullError", "atomic_path", "replace_folder", "write_atomic"]


def _file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _file_mode())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp_path, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC and not isinstance(exc, DiskFullError):
            raise disk_full(target, None) from None
        raise
    finally:
        tmp_path.unlink(missing_ok=True)


def write_atomic(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically; a full disk is a :class:`DiskFullError` that says
    how much was needed."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    except DiskFullError:
        raise disk_full(path, len(data)) from None


class DiskFullError(OSError):
    """A write ran out of space: names the path, the bytes needed and the bytes free."""

    def __str__(self) -> str:
        return self.strerror or "no space left on device"


def disk_full(path: str | Path, needed: int | None) -> DiskFullError:
    """The one-line error for ENOSPC while writing ``path`` (``needed`` bytes, when known)."""
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    need = f"needs {needed / 1e6:.1f} MB" if needed is not None else "needs more space"
    return DiskFullError(
        errno.ENOSPC, f"{path}: no space left on device ({need}, {free / 1e6:.1f} MB free)"
    )


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def replace_folder(staging: str | Path, target: str | Path) -> None:
    """Put the folder ``staging`` in the place of ``target`` (a folder, or absent) as one step,
    so that ``target`` is always either the whole old folder or the whole new one.

    Where the file system cannot exchange two names, the old folder is renamed aside first:
    a crash between the two renames leaves no ``target`` (never a mix) and the old one beside it.
    """
    staging, target = Path(staging), Path(target)
    if not target.exists():
        os.rename(staging, target)
        return
    if _exchange(staging, target):
        shutil.rmtree(staging)  # now holds the old folder
        return
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.rmdir(old)
    os.rename(target, old)
    os.rename(staging, target)
    shutil.rmtree(old)
