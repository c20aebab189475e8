"""Atomic file writes: a killed process leaves either the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, then rename.

    Args:
        path: destination; parent folders are created.
        data: file contents.
    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_name = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # O_EXCL: a fresh file of our own; mode 0o666 minus the process umask, as open() gives (mkstemp would give 0600)
    fd = os.open(tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, value: Any) -> Path:
    """Pretty-printed JSON version of :func:`atomic_write_bytes`."""
    return atomic_write_text(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB blocks.

    Args:
        path: the file.
    Returns:
        The hex digest.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def staged_folder(out_dir: str | Path, replace: bool = False) -> Iterator[Path]:
    """A fresh sibling folder to write into; it becomes ``out_dir`` only when the block completes.

    An interrupted write leaves ``out_dir`` as it was (and no staging folder); with ``replace`` an earlier
    ``out_dir`` is swapped out only after the new one is complete.

    Args:
        out_dir: the destination folder.
        replace: allow replacing a non-empty ``out_dir``.
    Returns:
        A context manager yielding the staging folder.
    Raises:
        FileExistsError: when ``out_dir`` holds files and ``replace`` is not set (nothing is written).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not replace:
        raise FileExistsError(f"{out_dir} exists and is not empty (an earlier export?); choose a new folder or pass "
                              "replace=True (--replace in the CLI), which swaps it only once the new export is "
                              "complete (nothing was overwritten)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        yield staging
        previous = out_dir.rename(staging.with_name(staging.name + ".old")) if out_dir.exists() else None
        staging.rename(out_dir)
        if previous is not None:
            shutil.rmtree(previous)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
