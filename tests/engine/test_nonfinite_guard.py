"""A skipped non-finite step leaves no trace: weights, BN statistics, EMA and RNG are as if the
batch had never been drawn, and no checkpoint ever holds a non-finite tensor."""
import hashlib
import math

import pytest
import torch

from scaledet.engine.checkpoint import load_checkpoint, save_atomic
from scaledet.engine.trainer import Trainer
from scaledet.errors import CheckpointError

POISONED_BATCH = 2


class _Batches(Trainer):
    """Batch ``POISONED_BATCH`` of the loader is all NaN pixels (``mode='nan'``) or left out."""

    mode = "nan"

    def _loader(self):
        for index, batch in enumerate(super()._loader()):
            if index == POISONED_BATCH:
                if self.mode == "skip":
                    continue
                batch["images"] = torch.full_like(batch["images"], math.nan)
            yield batch


def test_one_nan_batch_leaves_weights_and_bn_stats_as_a_run_without_it(tiny_config, tmp_path):
    cfg = tiny_config("train.total_steps=6", "train.checkpoint_every=6", "train.ema_decay=0.5")
    poisoned = _Batches(cfg, tmp_path / "nan", progress=False)
    with pytest.warns(UserWarning, match="non-finite loss at step 2"):
        poisoned.fit()
    clean = _Batches(cfg, tmp_path / "skip", progress=False)
    clean.mode = "skip"
    clean.fit()
    assert poisoned.step == clean.step == 6
    bn_stats = [k for k in poisoned.model.state_dict() if k.endswith("running_var")]
    assert bn_stats  # the tiny model has BatchNorm, so the statistics are part of the comparison
    for name, expected in [("model", clean.model.state_dict()), ("ema", clean.ema.module.state_dict())]:
        actual = (poisoned.model if name == "model" else poisoned.ema.module).state_dict()
        for key, value in expected.items():
            if value.is_floating_point():
                assert torch.isfinite(actual[key]).all(), f"{name}.{key} is not finite"
            assert torch.equal(actual[key], value), f"{name}.{key} differs from the run without the NaN batch"
    state = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_checkpoint_with_a_nonfinite_tensor_is_refused_and_the_previous_file_kept(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "step": 1}, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError, match=r"last.pt: not saved: non-finite values in model.bn.running_var"):
        save_atomic({"model": {"bn.running_var": torch.tensor([1.0, math.nan])}, "step": 2}, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left
