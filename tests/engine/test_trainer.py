import math
import subprocess
import sys

import pytest
import torch

from scaledet.engine.checkpoint import load_checkpoint
from scaledet.engine.trainer import NonFiniteLossError, Trainer


def _losses(trainer):
    return [(r["step"], r["loss"]) for r in trainer.history]


def test_resume_after_kill_matches_uninterrupted_run_step_for_step(tiny_config, tmp_path):
    cfg = tiny_config("train.total_steps=6", "train.checkpoint_every=3")
    straight = Trainer(cfg, tmp_path / "straight", progress=False)
    result = straight.fit()
    run = tmp_path / "straight"
    assert (run / "best.pt").is_file() and load_checkpoint(run / "best.pt")["best_stats"] == result["best"]
    assert (run / "metrics.csv").read_text().count("\n") == 7  # header + one row per step (log_every=1)
    assert (run / "eval.csv").is_file() and any((run / "tensorboard").iterdir())

    crashed = Trainer(cfg, tmp_path / "crash", progress=False, fail_at_step=4)
    with pytest.raises(RuntimeError, match="injected failure"):
        crashed.fit()
    assert load_checkpoint(tmp_path / "crash" / "last.pt")["step"] == 3
    resumed = Trainer(cfg, tmp_path / "crash", resume=True, progress=False)
    resumed.fit()

    expected = dict(_losses(straight))
    got = dict(_losses(crashed)) | dict(_losses(resumed))
    assert sorted(got) == list(range(1, 7))
    for step in range(1, 7):
        assert got[step] == expected[step], f"step {step}: {got[step]} != {expected[step]}"
    a = load_checkpoint(tmp_path / "straight" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "crash" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sigkill_during_training_leaves_a_loadable_checkpoint(tiny_config, tmp_path):
    from scaledet.config import save_config

    cfg = tiny_config("train.total_steps=1000", "train.checkpoint_every=2")
    save_config(cfg, tmp_path / "cfg.yaml")
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "scaledet.cli.main", "train", str(tmp_path / "cfg.yaml"),
                             "--output", str(out), "--no-progress", "--device", "cpu"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        import time

        deadline = time.time() + 120
        while time.time() < deadline and not (out / "last.pt").exists():
            time.sleep(0.2)
        time.sleep(1.0)
        proc.kill()
    finally:
        proc.wait(timeout=30)
    state = load_checkpoint(out / "last.pt")
    assert state["step"] >= 2 and state["step"] % 2 == 0
    # the run picks up from the surviving checkpoint and clears any temp file the kill left behind
    resumed = Trainer(cfg.replace([f"train.total_steps={state['step'] + 1}"]), out, resume=True, progress=False)
    resumed.fit()
    assert [r["step"] for r in resumed.history] == [state["step"] + 1]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_nonfinite_loss_skips_then_stops_with_clear_error(tiny_config, tmp_path, monkeypatch):
    cfg = tiny_config("train.total_steps=8", "train.checkpoint_every=1", "train.max_nonfinite=3")
    trainer = Trainer(cfg, tmp_path / "nan", progress=False)
    calls = {"n": 0}
    original = None

    def poisoned(self, outputs, targets, image_sizes=None):
        calls["n"] += 1
        out = original(self, outputs, targets, image_sizes)
        if calls["n"] == 2 or calls["n"] >= 4:  # one isolated NaN, then a run of them
            out["loss"] = out["loss"] * float("nan")
        return out

    from scaledet.models.detectors.retinanet import RetinaNet

    original = RetinaNet.loss
    monkeypatch.setattr(RetinaNet, "loss", poisoned)
    with pytest.warns(UserWarning, match="non-finite loss"):
        with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
            trainer.fit()
    # steps 1 and 2 succeeded (the NaN of call 2 was skipped), and their checkpoint survives
    assert [r["step"] for r in trainer.history] == [1, 2]
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_gradient_accumulation_equals_large_batch(tiny_config, tmp_path):
    big = Trainer(tiny_config("train.total_steps=2", "train.batch_size=4", "optim.warmup_steps=0"),
                  tmp_path / "big", progress=False)
    big.fit()
    acc = Trainer(tiny_config("train.total_steps=2", "train.batch_size=2", "train.accumulate=2",
                              "optim.warmup_steps=0"), tmp_path / "acc", progress=False)
    acc.fit()
    # same samples per optimizer step; BN statistics see half-batches so allow small drift
    for (s1, l1), (s2, l2) in zip(_losses(big), _losses(acc)):
        assert s1 == s2
    assert abs(_losses(big)[0][1] - _losses(acc)[0][1]) / _losses(big)[0][1] < 0.05


def test_ema_and_freeze(tiny_config, tmp_path):
    cfg = tiny_config("train.total_steps=3", "train.ema_decay=0.9", "train.freeze=['^backbone\\.stem']")
    trainer = Trainer(cfg, tmp_path / "ema", progress=False)
    trainer.fit()
    stem = {k: v for k, v in trainer.model.state_dict().items() if k.startswith("backbone.stem") and "weight" in k}
    assert stem and all(not p.requires_grad for n, p in trainer.model.named_parameters() if n.startswith("backbone.stem"))
    state = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert state["ema"] is not None
    diffs = [(state["ema"][k].float() - state["model"][k].float()).abs().max().item()
             for k in state["model"] if state["model"][k].is_floating_point() and not k.startswith("backbone.stem")]
    assert max(diffs) > 0  # the average lags the weights
    assert math.isfinite(trainer.history[-1]["loss"])


def test_bf16_autocast_training_on_cpu(tiny_config, tmp_path):
    trainer = Trainer(tiny_config("train.total_steps=2", "train.amp=bf16"), tmp_path / "bf16", progress=False)
    trainer.fit()
    assert len(trainer.history) == 2 and all(math.isfinite(r["loss"]) for r in trainer.history)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(tiny_config("train.amp=fp16"), tmp_path / "fp16", progress=False, device="cpu").fit()


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_applies_winograd_as_configured(tiny_config, tmp_path, monkeypatch, enabled):
    calls = []
    monkeypatch.setattr("scaledet.engine.trainer.use_winograd", lambda model: calls.append(model) or 0)
    trainer = Trainer(tiny_config(f"train.winograd={str(enabled).lower()}"), tmp_path / "w", progress=False)
    trainer._setup()
    assert calls == ([trainer.model] if enabled else [])
