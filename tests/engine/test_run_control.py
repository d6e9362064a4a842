"""Run control: the last N step checkpoints are kept, and a schedule continues from the step an
init checkpoint recorded (the MindSpore NAS-FPN port's PRE_TRAINED_EPOCH_SIZE)."""
import pytest

from scaledet.config import ConfigError
from scaledet.engine.checkpoint import load_checkpoint
from scaledet.engine.trainer import Trainer
from scaledet.errors import UsageError

pytestmark = pytest.mark.usefixtures("one_thread")


def test_keep_checkpoints_then_continue_the_schedule_from_one(tiny_config, tmp_path):
    first_cfg = tiny_config("train.total_steps=4", "train.checkpoint_every=1", "train.keep_checkpoints=2")
    first = Trainer(first_cfg, tmp_path / "first", progress=False)
    first.fit()
    kept = sorted(p.name for p in (tmp_path / "first").glob("step_*.pt"))
    assert kept == ["step_00000003.pt", "step_00000004.pt"]  # steps 1 and 2 were removed
    assert load_checkpoint(tmp_path / "first" / "step_00000003.pt")["step"] == 3
    assert not list((tmp_path / "first").glob(".*.tmp"))

    init = tmp_path / "first" / "step_00000003.pt"
    second = Trainer(tiny_config("train.total_steps=4", f"model.init_checkpoint={init}",
                                 "train.continue_schedule=true"), tmp_path / "second", progress=False)
    second.fit()
    assert [record["step"] for record in second.history] == [4]  # one step left of the 4-step schedule
    continued, original = second.history[0], first.history[3]
    assert continued["lr"] == original["lr"]  # the schedule goes on where the checkpoint stopped
    # the same weights on the same batch (data order follows the step): the same loss before the update
    assert continued["loss"] == pytest.approx(original["loss"], rel=1e-5)
    assert load_checkpoint(tmp_path / "second" / "last.pt")["step"] == 4

    with pytest.raises(UsageError, match="starts at its step 4, but the schedule ends at step 4"):
        Trainer(tiny_config("train.total_steps=4", f"model.init_checkpoint={tmp_path / 'first' / 'last.pt'}",
                            "train.continue_schedule=true"), tmp_path / "third", progress=False).fit()


def test_continue_schedule_needs_an_init_checkpoint(tiny_config):
    with pytest.raises(ConfigError, match="continue_schedule=true .* model.init_checkpoint, which is not set"):
        tiny_config("train.continue_schedule=true")
    with pytest.raises(ConfigError, match="keep_checkpoints must be 0 or more"):
        tiny_config("train.keep_checkpoints=-1")
