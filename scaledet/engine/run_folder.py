"""Who owns a run folder: a marker file says a scaledet run lives there, a lock says one is
running now.

``claim_run_folder`` decides, before anything is written, whether training may use a folder:
- an empty or new folder is taken;
- a folder holding a run is continued only with ``resume`` and replaced only with ``overwrite``
  (then only the files a run writes are removed, nothing else in the folder);
- a folder holding other files is refused unless ``overwrite`` is given (they are kept);
- ``resume=True`` with no ``last.pt`` is an error; ``resume="auto"`` then starts afresh.
The lock is an ``fcntl.flock`` on ``.scaledet-run.lock`` holding the owner's pid: the operating
system drops it when that process dies, so a killed run never leaves a stale lock behind.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Literal

from scaledet.errors import OutputError
from scaledet.utils.atomic import write_json

MARKER = "scaledet-run.json"
LOCK = ".scaledet-run.lock"
# files and folders a training run writes (what --overwrite removes)
RUN_FILES = (MARKER, "last.pt", "best.pt", "config.yaml", "metrics.csv", "eval.csv", "val_results.json",
             "tensorboard", "curves.png", "step_*.pt")

Resume = bool | Literal["auto"]


def _describe(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir() if p.name != LOCK)
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return shown


def _holds_run(folder: Path) -> bool:
    return (folder / MARKER).is_file() or (folder / "last.pt").is_file() or (folder / "config.yaml").is_file()


def claim_run_folder(folder: str | Path, *, resume: Resume, overwrite: bool) -> bool:
    """Check that training may write into ``folder`` (see the module doc); whether to resume."""
    folder = Path(folder)
    if resume and overwrite:
        raise OutputError("--resume and --overwrite contradict each other: continue the run or replace it")
    has_checkpoint = (folder / "last.pt").is_file()
    if resume:
        if has_checkpoint:
            return True
        if resume != "auto":
            raise OutputError(f"{folder}: nothing to resume (no last.pt there); leave out --resume to start a new "
                              f"run, or use --resume auto to resume only when there is a checkpoint")
    if not folder.is_dir() or not any(p.name != LOCK for p in folder.iterdir()):
        return False
    if _holds_run(folder):
        if overwrite:
            for target in (t for name in RUN_FILES for t in folder.glob(name)):
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            return False
        if resume == "auto":  # a run that never reached its first checkpoint: start it again
            return False
        raise OutputError(f"{folder}: holds another training run ({_describe(folder)}); use --resume to continue "
                          f"it, --overwrite to replace it, or another --output")
    if not overwrite and resume != "auto":
        raise OutputError(f"{folder}: not empty and not a scaledet run folder ({_describe(folder)}); choose an empty "
                          f"--output, or --overwrite to train there anyway (those files are kept)")
    return False


class RunLock:
    """Held while a process trains into a folder; released on ``release`` or when it dies.

    ``release`` deletes the lock file (a folder we only looked at stays as it was). A process
    that opened the file just before that deletion would lock a file no longer in the folder,
    so after locking we check that the name still leads to the file we hold, and retry if not.
    """

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._created = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / LOCK
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise OutputError(f"{self.folder}: another training run is using this folder now ({owner}); wait "
                                  f"for it or choose another --output") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd: int | None = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            self.path.unlink(missing_ok=True)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            if self._created and not any(self.folder.iterdir()):  # a refused run leaves no trace
                self.folder.rmdir()


def write_marker(folder: Path, model_name: str) -> None:
    write_json(folder / MARKER, {"kind": "scaledet training run", "model_name": model_name,
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
