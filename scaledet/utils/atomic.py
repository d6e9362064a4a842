"""Atomic writes: every file scaledet writes appears whole or not at all.

The data goes to a temporary file in the destination folder (same file system, so the final
``os.replace`` is atomic), is flushed and fsynced, and only then renamed over the destination;
the folder is fsynced so that the rename survives a power cut. Whatever goes wrong before the
rename (a full disk, a failed check, Ctrl-C) removes the temporary file and leaves the previous
file at the destination untouched. A full disk is reported as :class:`DiskFullError` naming the
destination instead of an errno buried in a traceback.

The standard library has no atomic replace-a-file helper, hence this module.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Mapping, Sequence

from scaledet.errors import DiskFullError, OutputError

__all__ = ["atomic_path", "atomic_open", "write_text", "write_json", "write_yaml", "write_csv", "fsync_dir",
           "check_writable", "remove_stale_temps", "TEMP_GLOB"]

TEMP_GLOB = ".*.scaledet.tmp"  # what a process killed mid-write leaves behind (see remove_stale_temps)
_TEMP_SUFFIX = ".scaledet.tmp"
# torch.save's C++ writer reports a refused write as "[enforce fail at inline_container.cc:...] ...
# file write failed" without an errno; nothing but a refused write (full disk, quota) produces it.
_TORCH_WRITE_FAILURE = "inline_container.cc"


def _default_file_mode() -> int:
    """The mode ``open`` would give a new file (0666 less the umask); mkstemp's own is 0600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _default_file_mode()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_disk_full(err: BaseException) -> bool:
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, RuntimeError) and _TORCH_WRITE_FAILURE in str(err)


def check_writable(path: Path, overwrite: bool, what: str = "output", option: str = "--overwrite") -> None:
    """Refuse to replace an existing ``path`` unless ``overwrite``."""
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: {what} already exists; not replacing it (use {option} to replace it)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; the caller writes the whole file there (any writer
    that takes a file name: ``torch.onnx.export``, PIL, a shard writer), and when the block ends
    without an error it is fsynced and renamed onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP_SUFFIX, dir=path.parent)
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer may have closed without fsync
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _is_disk_full(err):
            raise DiskFullError(f"no space left on device at {path}; the previous file there, if any, "
                                f"is unchanged") from err
        raise


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **open_kwargs) -> Iterator[IO]:
    """``open`` for writing, atomically: streamed writers (``torch.save``, ``csv``) write to the
    yielded file object; it replaces ``path`` only once complete."""
    if not mode.startswith("w"):
        raise ValueError(f"atomic_open writes whole files; mode {mode!r} is not a write mode")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()


def write_text(path: str | Path, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json(path: str | Path, value: Any, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(value, indent=indent))


def write_yaml(path: str | Path, value: Any) -> Path:
    import yaml

    return write_text(path, yaml.safe_dump(value, sort_keys=False))


def write_csv(path: str | Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """The whole table at once (appending to a CSV in place could leave half a row)."""
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(fieldnames), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temporary files a killed process left in ``folder`` (never a finished file)."""
    for stale in Path(folder).glob(TEMP_GLOB):
        stale.unlink(missing_ok=True)
