"""Atomic file writes: a reader sees the old file or the complete new one, never a half file.

Each writer goes to a temporary file in the target's own directory (so ``os.replace`` is a rename
on one file system), is flushed and fsynced, then renamed over the target. If anything fails, the
temporary file is removed and the target is left as it was. Missing parent folders are created.
Failures of the file system (permission, disk full, a folder in the way) raise :class:`UserError`;
an exception from the caller's serialisation propagates unchanged.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch

from archsearch.errors import UserError



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_writable(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or a UserError now, before long work, if no file can be written there:
    it is a folder, a file stands where a folder should, or the folder is not writable."""
    target = Path(path)
    if target.is_dir():
        raise UserError(f"cannot write '{target}': it is a folder; give a file name")
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UserError(f"cannot write '{target}': '{folder}' is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write '{target}': the folder '{folder}' is not writable; choose another path")
    return target


@contextmanager
def _atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file object; on a clean exit it replaces ``path``, else it is deleted."""
    target = Path(path)
    tmp: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except OSError as exc:
        check_writable(target)  # names the cause where it is the path itself
        raise UserError(f"cannot write {target}: {exc.strerror or exc}; check the folder exists "
                        f"and is writable, and that the disk has space") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_file(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int = 2) -> None:
    """Write ``obj`` as JSON (with a final newline) atomically; serialises before touching disk."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Let ``write(f)`` fill a binary file that replaces ``path`` only if it returns normally."""
    with _atomic_file(path) as f:
        write(f)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically: an interrupted save never leaves a broken file."""
    atomic_write_with(path, lambda f: torch.save(obj, f))
