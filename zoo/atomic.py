"""Atomic file writes: a reader sees the old file or the complete new one, never a partial file."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp make private entries (0600 / 0700); finished outputs get the usual permissions.
FILE_MODE = 0o666 & ~_current_umask()
DIR_MODE = 0o777 & ~_current_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file lives in the destination folder (``os.replace`` is atomic only within one
    file system) and keeps the destination's suffix so writers that pick a format from the
    extension still work. On any exception it is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | Path, data: object) -> Path:
    """Write ``data`` as indented UTF-8 JSON, atomically; returns the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=True) + "\n", encoding="utf-8")
    return path


#: What :func:`ensure_writable` checks a path for (see there).
WRITE_KINDS = ("file", "folder", "renamed folder")


def ensure_writable(path: str | Path, what: str, *, kind: str = "file", fix: str | None = None) -> Path:
    """Check, before any work, that ``path`` can be written; returns it as a :class:`Path`.

    ``kind``: ``"file"``, written atomically (a temporary file beside it, then a rename): it must
    not be a folder, and its folder must be writable; ``"folder"``, files are written inside it:
    it must be a writable folder; ``"renamed folder"``, built beside it and renamed into place
    (``zoo export``): it must be a folder if it exists, and its parent writable. Missing folders
    must be creatable: the check creates them and a probe file, then removes everything it
    created, so a command refused later for another reason leaves nothing behind (the writers
    create the folders again). Raises :class:`~zoo.errors.ZooError` ``cannot write WHAT PATH:
    REASON; FIX`` naming the exact obstacle (a file where a folder is needed, permission denied,
    read-only file system, ...).
    """
    from zoo.errors import ZooError

    if kind not in WRITE_KINDS:
        raise ValueError(f"kind must be one of {WRITE_KINDS}, got {kind!r}")
    path = Path(path)

    def refuse(reason: str, also: str = "") -> ZooError:
        return ZooError(f"cannot write {what} {path}: {reason}", (fix or "choose another path") + also)

    if kind == "file" and path.is_dir():
        raise refuse("it is a folder, not a file")
    if kind != "file" and path.exists() and not path.is_dir():
        raise refuse("it exists and is not a folder")
    home = path if kind == "folder" else path.parent  # the folder that gets new entries
    existing = home
    while not existing.exists() and existing != existing.parent:  # exists() is False below a file too
        existing = existing.parent
    if not existing.is_dir():
        raise refuse(f"{existing} is a file, not a folder")
    missing = list(reversed([home, *home.parents][: len(home.parents) - len(existing.parents)]))
    created: list[Path] = []
    try:
        for directory in missing:
            directory.mkdir()
            created.append(directory)
        handle, probe = tempfile.mkstemp(prefix=".zoo-write-check-", dir=home)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        where = Path(err.filename) if err.filename else home
        where = where if where.is_dir() else where.parent
        raise refuse(f"{(err.strerror or type(err).__name__).lower()} in {where}",
                     f", or make {where} writable") from None
    finally:
        for directory in reversed(created):
            try:
                directory.rmdir()
            except OSError:
                pass
    return path
