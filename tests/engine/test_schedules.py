"""Learning-rate schedules; the MindSpore NAS-FPN port's against the learning rates its log prints."""
import pytest

from scaledet.config import OptimConfig
from scaledet.engine.schedules import learning_rate

# The port's recipe (docs/reference/MINDSPORE_FORMATS.md §5): lr_max 0.1, lr_init 1e-6, lr_end 0.1 x 5e-3,
# warm-up phases of 2, 5, 23, 60 and 160 of 300 epochs ending at lr x (1e-4/3, 1e-3, 1e-2, 1e-1, 1),
# 916 steps per epoch (8 devices x 16 images).
EPOCHS, STEPS_PER_EPOCH = 300, 916
PHASE_EPOCHS = (2, 5, 23, 60, 160)
PHASE_ENDS = (1e-4 / 3, 1e-3, 1e-2, 1e-1, 1.0)
# The port's training log (README_CN.md) prints, after epoch k, the lr of that epoch's last step.
LOGGED = {2: 3e-6, 3: 2.8e-5, 4: 4.6e-5, 5: 6.4e-5, 6: 8.2e-5}


def _port_recipe(schedule: str) -> OptimConfig:
    return OptimConfig(lr=0.1, warmup_start_lr=1e-6, min_lr=0.1 * 5e-3, schedule=schedule,
                       warmup_phases=tuple((e / EPOCHS, f) for e, f in zip(PHASE_EPOCHS, PHASE_ENDS)))


def _lr_after_epoch(cfg: OptimConfig, epoch: int) -> float:
    return learning_rate(cfg, epoch * STEPS_PER_EPOCH - 1, EPOCHS * STEPS_PER_EPOCH)


@pytest.mark.parametrize("epoch", [3, 4, 5, 6])
def test_port_schedule_matches_logged_lr(epoch):
    lr = _lr_after_epoch(_port_recipe("mindspore_nasfpn"), epoch)
    assert lr == pytest.approx(LOGGED[epoch], rel=0.02)


def test_port_schedule_shape():
    cfg, total = _port_recipe("mindspore_nasfpn"), EPOCHS * STEPS_PER_EPOCH
    phase2 = 2 * STEPS_PER_EPOCH
    assert learning_rate(cfg, 0, total) == pytest.approx(1e-6)
    assert abs(_lr_after_epoch(cfg, 2) - LOGGED[2]) < 5e-7  # printed with 6 decimals
    assert learning_rate(cfg, phase2, total) == pytest.approx(1e-5)  # the restart of phase 2
    assert learning_rate(cfg, 250 * STEPS_PER_EPOCH, total) == pytest.approx(0.1)  # cosine starts at lr_max
    assert learning_rate(cfg, total - 1, total) == pytest.approx(5e-4, rel=1e-3)
    # The joined-up multiphase schedule starts phase 2 where phase 1 ended instead (lr / 3e4):
    joined = _port_recipe("multiphase_warmup_cosine")
    assert learning_rate(joined, phase2, total) == pytest.approx(0.1 * 1e-4 / 3)
    assert _lr_after_epoch(joined, 3) < 0.9 * LOGGED[3]


def test_port_schedule_needs_five_phases():
    cfg = OptimConfig(lr=0.1, schedule="mindspore_nasfpn", warmup_phases=((0.1, 1.0),))
    with pytest.raises(ValueError, match="needs 5 warmup_phases"):
        learning_rate(cfg, 0, 100)
