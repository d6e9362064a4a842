"""`scaledet train` under torchrun (gloo, CPU, 2 processes): equality with one process, a dead
rank, automatic resume after a restart, and checkpoints that survive a kill mid-save."""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from scaledet.config import save_config
from scaledet.engine.checkpoint import load_checkpoint
from scaledet.engine.evaluate import TorchPredictor, evaluate_dataset
from scaledet.engine.inference import model_from_checkpoint
from scaledet.engine.sampling import ResumableSampler
from scaledet.engine.trainer import Trainer
from scaledet.eval.coco import CocoEvaluator

REPO = Path(__file__).resolve().parents[2]

# A narrow model without drop-connect; the backbone's parameters are frozen because its backward
# pass amplifies float rounding chaotically at this width (two single-process runs with 1 and 2
# threads end 0.17 apart after 3 steps at lr 0.01), so no 1e-5 comparison would mean anything.
# Its BatchNorm layers still run in training mode, so their statistics are synchronised.
DDP_OVERRIDES = (
    "model.args={head_width: 32, endpoints_num_filters: 32, drop_connect_rate: 0.0, score_threshold: 0.005}",
    "train.sync_bn=true", "train.freeze=['^backbone\\.']", "train.total_steps=3", "train.checkpoint_every=3",
    "optim.lr=0.003", "optim.momentum=0.9", "optim.warmup_steps=0", "eval.batch_size=1",
    # NCHW on both sides: oneDNN's channels-last kernels pick batch-size-dependent algorithms,
    # which would mix memory-format rounding into a comparison of DDP against one process.
    "train.channels_last=false",
)


def _torchrun_available() -> bool:
    try:
        import torch.distributed.run  # noqa: F401
    except ImportError:
        return False
    return torch.distributed.is_available() and torch.distributed.is_gloo_available()


pytestmark = pytest.mark.skipif(not _torchrun_available(), reason="torch.distributed with gloo is not available")


def _torchrun(*argv: str, restarts: int = 0, env: dict[str, str] | None = None) -> subprocess.Popen:
    """``scaledet ARGV`` in 2 processes (gloo, one thread each)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           f"--max-restarts={restarts}", "--monitor-interval=0.1", "-m", "scaledet.cli.main", *argv]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "SCALEDET_DIST_TIMEOUT": "30", **(env or {})}
    return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _launch(cfg_path: Path, out: Path, *extra: str, restarts: int = 0, env: dict[str, str] | None = None,
            per_process_batch: int = 2) -> subprocess.Popen:
    return _torchrun("train", str(cfg_path), "--output", str(out), "--no-progress", "--device", "cpu",
                     "--set", f"train.batch_size={per_process_batch}", *extra, restarts=restarts, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 90) -> tuple[int, str]:
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        output, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish within {timeout} s:\n{output[-3000:]}")
    return proc.returncode, output


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _metrics(path: Path) -> list[dict[str, float]]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def test_sampler_shards_are_the_single_process_batches():
    n, world, per_rank_batch = 24, 2, 2
    for start_step in (0, 5, 11):  # also across an epoch boundary and after a resume
        ranks = [iter(ResumableSampler(n, seed=7, rank=r, world=world, start=start_step * per_rank_batch))
                 for r in range(world)]
        single = iter(ResumableSampler(n, seed=7, start=start_step * per_rank_batch * world))
        for _ in range(8):
            shards = [[next(it) for _ in range(per_rank_batch)] for it in ranks]
            batch = [next(single) for _ in range(per_rank_batch * world)]
            # rank r takes positions r, r + world, ... of the same permutation
            assert batch == [shards[i % world][i // world] for i in range(len(batch))]


def test_two_processes_equal_one_process_with_the_global_batch(tiny_config, tmp_path):
    cfg = tiny_config(*DDP_OVERRIDES)
    save_config(cfg, tmp_path / "cfg.yaml")
    ddp = _launch(tmp_path / "cfg.yaml", tmp_path / "ddp", per_process_batch=2)  # runs while we train below

    single_cfg = cfg.replace(["train.batch_size=4"])
    initial = Trainer(single_cfg, tmp_path / "unused", progress=False, device="cpu")
    initial._setup()
    start = {k: v.clone() for k, v in initial.model.state_dict().items()}
    single = Trainer(single_cfg, tmp_path / "single", progress=False, device="cpu")
    single.fit()

    code, output = _finish(ddp)
    assert code == 0, output[-3000:]
    assert output.count('"step": 3') == 1, "only rank 0 reports"
    a = load_checkpoint(tmp_path / "single" / "last.pt")
    b = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert a["step"] == b["step"] == 3
    assert len(b["rng_per_rank"]) == 2
    params = {name for name, _ in single.model.named_parameters()}
    moved = max((a["model"][k] - start[k]).abs().max().item() for k in params)
    assert moved > 1e-3, "the run must change the weights for the comparison to mean anything"
    for key, value in a["model"].items():
        if not value.is_floating_point():
            assert torch.equal(value, b["model"][key]), key
        elif key in params:
            torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-5, msg=key)
        else:  # running statistics: the frozen backbone's float32 forward is itself only good to ~1e-3
            # relative at P6/P7 (1x1 maps at 128 px; measured against float64), whatever the batch split
            torch.testing.assert_close(b["model"][key], value, rtol=0, atol=5e-3, msg=key)

    # the logged loss is the global batch's: per-rank losses averaged, positives summed
    ddp_log = _metrics(tmp_path / "ddp" / "metrics.csv")
    assert [r["step"] for r in ddp_log] == [1, 2, 3]
    for got, want in zip(ddp_log, single.history):
        assert got["num_positives"] == want["num_positives"]
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)

    # evaluation: sharded over the ranks, gathered, scored once. The same weights evaluated by one
    # process give the same detections and metrics (batch 1 and 1 thread: bit-identical per image).
    ddp_dets = json.loads((tmp_path / "ddp" / "val_results.json").read_text())
    assert len({d["image_id"] for d in ddp_dets}) == 8, "every validation image, from both shards"
    with (tmp_path / "ddp" / "eval.csv").open() as f:
        ddp_stats = {k: float(v) for k, v in list(csv.DictReader(f))[-1].items() if k != "step"}
    with _one_thread():
        model = model_from_checkpoint(tmp_path / "ddp" / "last.pt", "cpu")
        evaluator = CocoEvaluator(single.bundle.val_annotations, single.bundle.label_to_category_id,
                                  results_path=tmp_path / "one_process_results.json")
        stats = evaluate_dataset(TorchPredictor(model, torch.device("cpu")), single.bundle.val, evaluator,
                                 batch_size=1).metrics
    one_dets = json.loads((tmp_path / "one_process_results.json").read_text())
    order = lambda d: (d["image_id"], -d["score"], d["bbox"])  # noqa: E731
    assert sorted(ddp_dets, key=order) == sorted(one_dets, key=order)
    assert ddp_stats == pytest.approx(stats, abs=1e-12)
    assert stats["AR100"] > 0, "some detections match, so the comparison is not between empty lists"


def test_dead_rank_fails_the_job_quickly_and_keeps_a_loadable_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config("model.args={head_width: 32, endpoints_num_filters: 32}", "train.total_steps=200",
                      "train.checkpoint_every=2")
    save_config(cfg, tmp_path / "cfg.yaml")
    began = time.monotonic()
    proc = _launch(tmp_path / "cfg.yaml", tmp_path / "run",
                   env={"SCALEDET_FAIL_AT_STEP": "3", "SCALEDET_FAIL_RANK": "1", "SCALEDET_FAIL_MODE": "kill"})
    code, output = _finish(proc, timeout=60)
    assert time.monotonic() - began < 60
    assert code != 0
    root_cause = output.split("Root Cause")[-1]
    assert "rank      : 1" in root_cause and "SIGKILL" in root_cause, output[-3000:]
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["step"] == 2


def test_torchrun_restart_resumes_from_the_last_checkpoint(tiny_config, tmp_path):
    cfg = tiny_config("model.args={head_width: 32, endpoints_num_filters: 32}", "train.total_steps=4",
                      "train.checkpoint_every=2")
    save_config(cfg, tmp_path / "cfg.yaml")
    # the failure is injected on the first attempt only (TORCHELASTIC_RESTART_COUNT=0)
    proc = _launch(tmp_path / "cfg.yaml", tmp_path / "run", restarts=1,
                   env={"SCALEDET_FAIL_AT_STEP": "3", "SCALEDET_FAIL_RANK": "1"})
    code, output = _finish(proc)
    assert code == 0, output[-3000:]
    assert "injected failure at step 3 on rank 1" in output
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    log = _metrics(tmp_path / "run" / "metrics.csv")
    # attempt 1 logged steps 1-3 and died before saving step 3; attempt 2 resumed from step 2 and
    # cut the log back to it, so step 3 is logged once (by the attempt that kept it)
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4]


SAVER = textwrap.dedent("""
    import sys, torch
    from scaledet.engine.checkpoint import save_atomic
    path = sys.argv[1]
    for i in range(1, 10_000):
        save_atomic({"model": {"w": torch.full((2_000_000,), float(i))}, "step": i}, path)
        print(i, flush=True)
""")


def test_kill_during_save_never_leaves_a_broken_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True)
        saved = [int(proc.stdout.readline()) for _ in range(2 + round_)]  # let a few saves complete
        time.sleep(0.007 * (round_ + 1))  # then kill at varying points of the next one
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        state = load_checkpoint(path)
        assert state["step"] >= saved[-1]
        assert torch.equal(state["model"]["w"], torch.full((2_000_000,), float(state["step"])))
    # the kills did land mid-save: their temporary files are still there (the trainer removes them)
    assert list(tmp_path.glob(".last.pt.*.tmp"))


def test_blitznet_trains_under_ddp_with_images_lacking_masks(shared_data, tmp_path):
    """Detection-only images (all-ignore masks) in a DDP batch must not leave the segmentation
    head without gradient: DDP would fail its reduction. 2 processes x 2 VOC images, 3 steps."""
    from scaledet.config import load_config

    voc = shared_data / "voc2012_first100"
    cfg = load_config(None, [
        "model.name=blitznet_tiny", "model.num_classes=20", "model.image_size=128", "data.format=voc",
        f"data.root={voc}", "data.train_split=null", "data.val_split=Segmentation/val", "data.max_images=8",
        "eval.max_images=2", "data.augment=resize", "data.num_workers=0", "optim.optimizer=adam",
        "optim.lr=0.001", "optim.schedule=constant", "train.total_steps=3", "train.checkpoint_every=3",
        "train.log_every=1",
        "eval.metric=voc", "eval.batch_size=2", "train.keep_best=mIoU",
    ])
    save_config(cfg, tmp_path / "cfg.yaml")
    code, output = _finish(_launch(tmp_path / "cfg.yaml", tmp_path / "run", per_process_batch=2))
    assert code == 0, output[-3000:]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 3
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3] and all(math.isfinite(r["seg_loss"]) for r in rows)


@pytest.mark.parametrize("task", ["det", "seg"])
def test_blitznet_single_task_trains_under_ddp_without_unused_parameters(shared_data, tmp_path, task):
    """model.args.tasks=[det] or [seg]: the other head is not built, so DDP (which fails on
    parameters without a gradient) trains it, and evaluation scores only the trained task."""
    from scaledet.config import load_config

    voc = shared_data / "voc2012_first100"
    cfg = load_config(None, [
        "model.name=blitznet_tiny", "model.num_classes=20", "model.image_size=96", "data.format=voc",
        f"data.root={voc}", "data.train_split=Segmentation/train", "data.val_split=Segmentation/val",
        "data.max_images=4", "eval.max_images=2", "data.augment=resize", "data.num_workers=0", "optim.optimizer=adam",
        "optim.lr=0.001", "optim.schedule=constant", "train.total_steps=2", "train.checkpoint_every=2",
        "train.log_every=1", "eval.metric=voc", "eval.batch_size=2",
        f"train.keep_best={'mAP' if task == 'det' else 'mIoU'}", f"model.args={{tasks: [{task}]}}",
    ])
    save_config(cfg, tmp_path / "cfg.yaml")
    code, output = _finish(_launch(tmp_path / "cfg.yaml", tmp_path / "run", per_process_batch=2))
    assert code == 0, output[-3000:]
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    assert checkpoint["step"] == 2
    other = "seg_head." if task == "det" else "det_head."
    assert not any(k.startswith(other) for k in checkpoint["model"])
    rows = _metrics(tmp_path / "run" / "metrics.csv")
    trained = "seg_loss" if task == "seg" else "det_cls_loss"
    untrained = "det_cls_loss" if task == "seg" else "seg_loss"
    assert all(r[trained] > 0 and r[untrained] == 0 for r in rows)
    scored = set(load_checkpoint(tmp_path / "run" / "best.pt")["best_stats"])
    assert scored == ({"mAP"} if task == "det" else {"mIoU", "pixel_acc"})


def test_voc_evaluation_in_two_processes_equals_one_process(shared_data, tmp_path):
    """`scaledet eval` of a BlitzNet under torchrun: each process scores its shard (3 and 2 of 5 VOC
    images), the records are gathered, and VOC mAP, per-class AP and mIoU are the single-process ones."""
    from scaledet.config import load_config
    from scaledet.engine.checkpoint import FORMAT, save_atomic
    from scaledet.engine.evaluate import evaluate_checkpoint
    from scaledet.registry import create_model

    model_args = dict(num_classes=20, image_size=128, score_threshold=0.01)
    torch.manual_seed(0)
    model = create_model("blitznet_tiny", **model_args)
    with torch.no_grad():  # a constant "background" map: random features would give no correct pixel at all
        model.seg_head.classifier.weight.zero_()
        model.seg_head.classifier.bias[0] = 1.0
    save_atomic({"format": FORMAT, "model_name": "blitznet_tiny", "model_args": model_args,
                 "model": model.state_dict(), "ema": None}, tmp_path / "blitz.pt")
    cfg = load_config(None, [
        "data.format=voc", f"data.root={shared_data / 'voc2012_first100'}", "data.val_split=Segmentation/val",
        "data.num_workers=0", "eval.metric=voc", "train.keep_best=mAP", "eval.max_images=5", "eval.batch_size=1",
    ])
    save_config(cfg, tmp_path / "cfg.yaml")
    ddp = _torchrun("eval", str(tmp_path / "cfg.yaml"), "--checkpoint", str(tmp_path / "blitz.pt"), "--json",
                    "--device", "cpu")

    with _one_thread():  # as each torchrun process (OMP_NUM_THREADS=1): bit-identical per image
        single = evaluate_checkpoint(cfg, tmp_path / "blitz.pt", device=torch.device("cpu"), progress=False).to_json()
    code, output = _finish(ddp)
    assert code == 0, output[-3000:]
    printed = [line for line in output.splitlines() if line.startswith("{")]
    assert len(printed) == 1, "only rank 0 prints"
    assert json.loads(printed[0]) == single
    assert single["mAP"] > 0 and single["mIoU"] > 0, "the comparison is not between zeros"
