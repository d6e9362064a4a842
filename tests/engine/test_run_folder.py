"""Run folders belong to one run: marker, lock, --resume/--overwrite rules, clear errors when
a checkpoint belongs to another model, metrics truncated to the checkpoint on resume, and a
checkpoint saved on SIGINT/SIGTERM."""
import csv
import hashlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from scaledet.config import save_config
from scaledet.engine.checkpoint import load_checkpoint, save_atomic
from scaledet.engine.run_folder import RunLock, claim_run_folder
from scaledet.engine.trainer import Trainer, truncate_log
from scaledet.errors import CheckpointError, OutputError
from scaledet.registry import create_model


def digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def old_run(tmp_path):
    """A folder holding another run's files, plus a note of the user's."""
    folder = tmp_path / "run"
    folder.mkdir()
    save_atomic({"model": {"w": torch.ones(1)}, "model_name": "retinanet_resnet50_fpn", "step": 7}, folder / "last.pt")
    (folder / "config.yaml").write_text("model: {name: retinanet_resnet50_fpn}\n")
    (folder / "metrics.csv").write_text("step,loss\n1,2.0\n")
    (folder / "notes.txt").write_text("mine")
    return folder


def test_training_into_another_run_is_refused_and_nothing_changes(tiny_config, old_run):
    before = digests(old_run)
    with pytest.raises(OutputError, match=r"run: holds another training run \(config.yaml, last.pt, metrics.csv, "
                                          r"notes.txt\); use --resume to continue it, --overwrite"):
        Trainer(tiny_config(), old_run, progress=False).fit()
    assert digests(old_run) == before


def test_resume_rules(tmp_path, old_run):
    empty = tmp_path / "fresh"
    with pytest.raises(OutputError, match=r"fresh: nothing to resume \(no last.pt there\).*--resume auto"):
        claim_run_folder(empty, resume=True, overwrite=False)
    assert claim_run_folder(empty, resume="auto", overwrite=False) is False
    assert claim_run_folder(old_run, resume=True, overwrite=False) is True
    with pytest.raises(OutputError, match="contradict"):
        claim_run_folder(old_run, resume=True, overwrite=True)
    user = tmp_path / "user"
    user.mkdir()
    (user / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputError, match=r"user: not empty and not a scaledet run folder \(holiday.jpg\)"):
        claim_run_folder(user, resume=False, overwrite=False)
    # --overwrite removes only the files a run writes
    assert claim_run_folder(old_run, resume=False, overwrite=True) is False
    assert sorted(p.name for p in old_run.iterdir()) == ["notes.txt"]


def test_lock_stops_a_second_run_and_is_released(tmp_path):
    first = RunLock(tmp_path)
    with pytest.raises(OutputError, match=rf"another training run is using this folder now \(pid {os.getpid()} on"):
        RunLock(tmp_path)
    first.release()
    RunLock(tmp_path).release()
    assert list(tmp_path.iterdir()) == []  # no lock file left behind


def test_resume_with_another_models_checkpoint_is_a_checkpoint_error(tiny_config, tmp_path, old_run):
    with pytest.raises(CheckpointError, match=r"last.pt: holds a retinanet_resnet50_fpn model, but the config "
                                              r"trains retinanet_spinenet49_tiny"):
        Trainer(tiny_config(), old_run, resume=True, progress=False).fit()
    # same registered name, other widths: the shapes do not fit
    other = tmp_path / "other"
    other.mkdir()
    narrow = create_model("retinanet_spinenet49_tiny", num_classes=5, head_width=16, endpoints_num_filters=16)
    save_atomic({"model": narrow.state_dict(), "model_name": "retinanet_spinenet49_tiny", "step": 1}, other / "last.pt")
    before = digests(other)
    with pytest.raises(CheckpointError, match=r"last.pt: does not fit the model of this config "
                                              r"\(retinanet_spinenet49_tiny with model.args"):
        Trainer(tiny_config(), other, resume=True, progress=False).fit()
    assert {k: v for k, v in digests(other).items() if k == "last.pt"} == before


def test_resume_truncates_metrics_to_the_checkpoint_step(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("step,loss\n1,0.9\n2,0.8\n3,0.7\n4,0.6\n5,0.5\n6,0.4")  # 4..6 were logged after step 3's save
    truncate_log(path, 3)
    assert [row["step"] for row in csv.DictReader(path.open())] == ["1", "2", "3"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_signal_saves_a_checkpoint_then_exits_with_the_usual_code(tiny_config, tmp_path, signum, code):
    cfg = tiny_config("train.total_steps=1000", "train.checkpoint_every=500")
    save_config(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "scaledet.cli.main", "train", str(tmp_path / "cfg.yaml"),
                             "--output", str(out), "--no-progress", "--device", "cpu"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not (out / "metrics.csv").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "metrics.csv").is_file(), proc.communicate()[1].decode()[-2000:]
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == code, err.decode()[-2000:]
    state = load_checkpoint(out / "last.pt")
    assert 1 <= state["step"] < 500  # saved at the step boundary after the signal, not at checkpoint_every
    assert f"stopped by signal {int(signum)}" in err.decode()
    RunLock(out).release()  # the lock was released (it would raise otherwise)
