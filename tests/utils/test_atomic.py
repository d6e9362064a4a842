"""The atomic-write helper: a failed or disk-full write leaves the previous file as it was."""
import csv
import errno
import hashlib
import os

import pytest
import torch

from scaledet.engine.checkpoint import load_checkpoint, save_atomic
from scaledet.errors import DiskFullError, OutputError
from scaledet.utils.atomic import atomic_open, check_writable, write_csv, write_json


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_at_fsync_keeps_the_previous_file(tmp_path, monkeypatch):
    path = write_json(tmp_path / "results.json", {"AP": 0.5})
    before = digest(path)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(DiskFullError, match=r"no space left on device at .*results.json"):
        write_json(path, {"AP": 0.7})
    monkeypatch.undo()
    assert digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_an_error_inside_the_block_keeps_the_previous_file(tmp_path):
    path = tmp_path / "a.csv"
    write_csv(path, ["step", "loss"], [{"step": 1, "loss": 2.0}])
    before = digest(path)
    with pytest.raises(ZeroDivisionError):
        with atomic_open(path, "w") as f:
            f.write("half a tab")
            1 / 0
    assert digest(path) == before and len(list(tmp_path.iterdir())) == 1
    assert list(csv.DictReader(path.open())) == [{"step": "1", "loss": "2.0"}]


def test_checkpoint_on_a_full_disk_says_so_instead_of_torchs_enforce_message(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(2)}, "step": 1}, path)
    before = digest(path)

    def full_disk_save(obj, f, *args, **kwargs):  # what torch's C++ writer raises when a write is refused
        f.write(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk_save)
    with pytest.raises(DiskFullError, match=r"^no space left on device at .*last.pt; the previous file"):
        save_atomic({"model": {"w": torch.zeros(2)}, "step": 2}, path)
    monkeypatch.undo()
    assert digest(path) == before and load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_existing_file_is_not_replaced_without_permission(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"user's model")
    with pytest.raises(OutputError, match=r"model.onnx: ONNX file already exists.*--overwrite"):
        check_writable(path, False, "ONNX file")
    check_writable(path, True, "ONNX file")
    assert path.read_bytes() == b"user's model"


def test_written_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = write_json(tmp_path / "results.json", [])
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
