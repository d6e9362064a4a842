"""Learning-rate schedules as pure functions of the optimizer step (so resuming is exact)."""
from __future__ import annotations

import math

from scaledet.config import OptimConfig
from scaledet.errors import UsageError

SCHEDULES = ("constant", "step", "cosine", "multiphase_warmup_cosine", "mindspore_nasfpn")

# The MindSpore NAS-FPN port's get_lr restarts warm-up phases 2..5 at these absolute learning rates,
# whatever lr_max is; with its lr_max 0.1 only phase 2 jumps (from lr/3e4 to 1e-5)
# (docs/reference/MINDSPORE_FORMATS.md §5).
PORT_PHASE_STARTS = (None, 1e-5, 1e-4, 1e-3, 1e-2)


def learning_rate(cfg: OptimConfig, step: int, total_steps: int) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if cfg.schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {cfg.schedule!r}; allowed: {', '.join(SCHEDULES)}")
    if cfg.schedule == "multiphase_warmup_cosine":
        return _multiphase(cfg, step, total_steps)
    if cfg.schedule == "mindspore_nasfpn":
        if len(cfg.warmup_phases) != len(PORT_PHASE_STARTS):
            raise UsageError(f"schedule mindspore_nasfpn needs {len(PORT_PHASE_STARTS)} warmup_phases (the port's), "
                             f"got {len(cfg.warmup_phases)}")
        return _multiphase(cfg, step, total_steps, PORT_PHASE_STARTS)
    start = cfg.warmup_start_lr if cfg.warmup_start_lr is not None else cfg.lr / 10
    if step < cfg.warmup_steps:
        return start + (cfg.lr - start) * step / cfg.warmup_steps
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        passed = sum(1 for boundary in cfg.decay_steps if step >= boundary)
        return cfg.lr * cfg.decay_rate ** passed
    span = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _multiphase(cfg: OptimConfig, step: int, total_steps: int,
                starts: tuple[float | None, ...] | None = None) -> float:
    """Piecewise-linear warm-up through ``warmup_phases`` then cosine to ``min_lr``.

    Each phase is (fraction of the total steps, lr factor reached at its end); the MindSpore
    NAS-FPN port warms up over 2+5+23+60+160 of 300 epochs before a cosine over the last 50.
    A phase starts where the previous one ended, or at ``starts[k]`` (an absolute lr) when given.
    """
    start = cfg.warmup_start_lr if cfg.warmup_start_lr is not None else 0.0
    begin, factor_begin = 0, start / cfg.lr if cfg.lr else 0.0
    for k, (fraction, factor) in enumerate(cfg.warmup_phases):
        if starts is not None and starts[k] is not None:
            factor_begin = starts[k] / cfg.lr
        end = begin + round(fraction * total_steps)
        if step < end:
            t = (step - begin) / max(1, end - begin)
            return cfg.lr * (factor_begin + (factor - factor_begin) * t)
        begin, factor_begin = end, factor
    span = max(1, total_steps - begin)
    progress = min(1.0, (step - begin) / span)
    peak = cfg.lr * factor_begin
    return cfg.min_lr + (peak - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
