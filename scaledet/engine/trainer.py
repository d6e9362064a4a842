"""The training loop: warm-up + schedules, SGD/Adam, AMP, clipping, EMA, accumulation, DDP,
periodic evaluation with keep-best, atomic checkpoints and exact resume."""
from __future__ import annotations

import contextlib
import csv
import functools
import io
import logging
import math
import os
import re
import shutil
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm import tqdm

from scaledet.config import Config, check_model_arguments, save_config
from scaledet.data.collate import build_loader
from scaledet.data.factory import build_datasets
from scaledet.engine import checkpoint as ckpt
from scaledet.engine.run_folder import Resume, RunLock, claim_run_folder, write_marker
from scaledet.engine.distributed import (
    DistInfo, all_reduce_sum, barrier, convert_sync_batchnorm, gather_objects, init_distributed, resolve_device,
    restart_count,
)
from scaledet.engine.evaluate import select_validation_images
from scaledet.engine.sampling import ResumableSampler, SeededAugmentation
from scaledet.engine.schedules import learning_rate
from scaledet.eval.base import EvalResult
from scaledet.errors import CheckpointError, DataError, TrainingError, UsageError
from scaledet.models.detectors.base import Detector
from scaledet.models.weights import BACKBONE_WEIGHT_ARGS
from scaledet.ops.winograd import use_winograd
from scaledet.registry import builder_arguments, create_model
from scaledet.utils.atomic import remove_stale_temps, write_csv

log = logging.getLogger("scaledet.train")


class NonFiniteLossError(TrainingError):
    pass


AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# Fault injection for tests and drills of the failure handling (docs/DISTRIBUTED.md).
FAIL_AT_STEP_ENV = "SCALEDET_FAIL_AT_STEP"  # fail when this optimizer step is about to run
FAIL_RANK_ENV = "SCALEDET_FAIL_RANK"  # only on this rank (default: every rank)
FAIL_MODE_ENV = "SCALEDET_FAIL_MODE"  # raise (an exception, default) | kill (SIGKILL itself)


def injected_failure_from_env(rank: int) -> tuple[int | None, str]:
    """``(step, mode)`` of the failure the environment asks of this rank; only on a job's first
    attempt, so that a torchrun restart (TORCHELASTIC_RESTART_COUNT > 0) runs clean."""
    raw = os.environ.get(FAIL_AT_STEP_ENV)
    if not raw or restart_count() > 0:
        return None, "raise"
    wanted_rank = os.environ.get(FAIL_RANK_ENV)
    if wanted_rank not in (None, "") and int(wanted_rank) != rank:
        return None, "raise"
    mode = os.environ.get(FAIL_MODE_ENV, "raise")
    if mode not in ("raise", "kill"):
        raise UsageError(f"${FAIL_MODE_ENV} must be raise or kill, got {mode!r}")
    return int(raw), mode


def build_model_from_config(cfg: Config, num_classes: int, class_names: list[str] | None = None,
                            label_to_category_id: list[int] | None = None) -> Detector:
    args = dict(cfg.model.args)
    allowed = builder_arguments(cfg.model.name)
    if "num_classes" in allowed:
        args["num_classes"] = num_classes
    if cfg.model.image_size is not None:
        args["image_size"] = cfg.model.image_size
    model = create_model(cfg.model.name, **args)
    model.class_names = class_names
    model.label_to_category_id = label_to_category_id
    if cfg.model.init_checkpoint:
        state = ckpt.load_checkpoint(cfg.model.init_checkpoint)
        try:
            model.load_state_dict(state.get("ema") or state["model"])
        except RuntimeError as err:  # shapes or keys that do not fit this model
            raise CheckpointError(f"{cfg.model.init_checkpoint}: model.init_checkpoint does not fit "
                                  f"{cfg.model.name}: {str(err).strip().splitlines()[0]}") from err
    return model


def with_init_checkpoint_arguments(cfg: Config) -> Config:
    """A converted checkpoint (``scaledet convert tf-retinanet``) as ``model.init_checkpoint`` of
    the same model brings the builder arguments it records: the TF code's arithmetic options and
    the widths its weights have (docs/CONVERT.md). They win over ``model.args``, since the weights
    fit only that model; the class count and input size stay the config's."""
    if not cfg.model.init_checkpoint:
        return cfg
    state = ckpt.load_checkpoint(cfg.model.init_checkpoint)
    if state.get("model_name") != cfg.model.name or "converted_from" not in state:
        return cfg
    recorded = {k: v for k, v in (state.get("model_args") or {}).items() if k not in ("num_classes", "image_size")}
    return cfg.replace({"model.args": {**cfg.model.args, **recorded}})


def model_record(cfg: Config, model: Detector) -> dict[str, Any]:
    """What is needed to rebuild the model from a checkpoint alone (its weights hold the
    backbone's initial weights already, so their file is not needed again)."""
    args = {k: v for k, v in cfg.model.args.items() if k not in BACKBONE_WEIGHT_ARGS}
    args["num_classes"] = model.num_classes
    if cfg.model.image_size is not None:
        args["image_size"] = cfg.model.image_size
    labels = model.label_to_category_id
    return {"model_name": cfg.model.name, "model_args": args, "input_spec": model.input_spec.to_dict(),
            "class_names": list(model.class_names or []), "label_to_category_id": list(labels) if labels else None}


def param_groups(model: nn.Module, cfg: Config) -> list[dict]:
    frozen = [re.compile(p) for p in cfg.train.freeze]
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if any(r.search(name) for r in frozen):
            p.requires_grad_(False)
        if not p.requires_grad:
            continue
        # tensorflow/tpu decays only kernels (.*(kernel|weight):0); BN and biases are 1-D here.
        (decay if p.ndim > 1 or cfg.optim.decay_norm_and_bias else no_decay).append(p)
    return [{"params": decay, "weight_decay": cfg.optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    o = cfg.optim
    if o.optimizer == "sgd":
        return _with_fast_kernels(torch.optim.SGD, groups, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov)
    if o.optimizer == "adam":
        # L2 added to the loss gradient (coupled), as the TF reference's l2 regularizer does.
        return _with_fast_kernels(torch.optim.Adam, groups, lr=o.lr)
    if o.optimizer == "adamw":
        return _with_fast_kernels(torch.optim.AdamW, groups, lr=o.lr)
    raise UsageError(f"unknown optim.optimizer {o.optimizer!r}; allowed: sgd, adam, adamw")


def apply_compute_settings(model: nn.Module, cfg: Config) -> None:
    """In place, how the trainer runs a model's arithmetic: channels-last memory
    (``train.channels_last``) and Winograd convolutions (``train.winograd``: same parameters and
    state-dict keys, decided per call, CPU fp32 only). The benchmarks call it to time the same step."""
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    if cfg.train.winograd:
        use_winograd(model)


def _with_fast_kernels(optimizer_class, groups: list[dict], **kwargs) -> torch.optim.Optimizer:
    """The optimiser with torch's fused kernel (one pass over all parameters; on CPU too since
    torch 2.4), else its multi-tensor ``foreach`` form; torch's CPU default is a Python loop per
    parameter. Same update rule; benchmarks/bench_train_step_parts.py measures the difference."""
    try:
        return optimizer_class(groups, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for these parameters' device or dtype
        return optimizer_class(groups, foreach=True, **kwargs)


class Trainer:
    def __init__(self, cfg: Config, output_dir: str | Path, *, resume: Resume = False, overwrite: bool = False,
                 device: str = "auto", progress: bool = True, fail_at_step: int | None = None,
                 dist_timeout_s: float | None = None, check_data: bool = False):
        self.cfg = cfg
        self.check_data = check_data
        self.output_dir = Path(output_dir)
        self.resume: Resume = resume
        self.overwrite = overwrite
        self.device = resolve_device(device)
        self.progress = progress
        self.info: DistInfo = init_distributed(self.device, dist_timeout_s)
        env_step, self.fail_mode = injected_failure_from_env(self.info.rank)
        # fault injection for tests of restarts: the argument, else the environment
        self.fail_at_step = fail_at_step if fail_at_step is not None else env_step
        if restart_count() > 0 and not resume:
            # torchrun restarted the workers after a failure: carry on from the last checkpoint,
            # or start again when the failure came before the first one.
            self.resume = "auto"
        self.history: list[dict[str, float]] = []
        self.last_evaluation: EvalResult | None = None
        self._lock: RunLock | None = None
        self._stop_signal: int | None = None  # SIGINT/SIGTERM received: save at the next step boundary
        self._tb = None  # TensorBoard writer, made by _writers on the main process

    # ------------------------------------------------------------------ set-up
    def _setup(self) -> None:
        self.cfg = cfg = with_init_checkpoint_arguments(self.cfg)
        check_model_arguments(cfg.model)  # a typo in model.args fails here, before any data is read
        torch.manual_seed(cfg.train.seed + self.info.rank)
        self.bundle = build_datasets(cfg.data, train=True, val=True)
        if self.info.is_main:  # e.g. how many VOC training images have a segmentation mask
            log.info("training data: %r", self.bundle.train)
        select_validation_images(cfg.eval, self.bundle)
        if self.check_data:
            check_dataset_images(self.bundle.train, "training")
            if self.bundle.val is not None:
                check_dataset_images(self.bundle.val, "validation")
        num_classes = cfg.model.num_classes or len(self.bundle.class_names)
        model = build_model_from_config(cfg, num_classes, self.bundle.class_names, self.bundle.label_to_category_id)
        self.image_size = model.default_image_size
        self.bundle.set_transforms(cfg.data, model)
        self.record = model_record(cfg, model)
        if cfg.train.sync_bn and self.info.enabled:
            model = convert_sync_batchnorm(model, self.device)
        if self.info.enabled:
            model.distribute_loss_normalizer(functools.partial(all_reduce_sum, info=self.info), self.info.world)
        model.to(self.device)
        if cfg.train.retain_freed_memory and self.device.type == "cpu":
            from scaledet.utils.memory import retain_freed_memory

            retain_freed_memory()
        apply_compute_settings(model, cfg)
        self.model = model
        self.optimizer = build_optimizer(model, cfg)
        self.amp_dtype = AMP_DTYPES.get(cfg.train.amp, "bad")
        if self.amp_dtype == "bad":
            raise UsageError(f"unknown train.amp {cfg.train.amp!r}; allowed: none, bf16, fp16")
        if self.amp_dtype is torch.float16 and self.device.type != "cuda":
            raise UsageError("train.amp=fp16 needs a CUDA device; use bf16 on CPU")
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.ema = None
        if cfg.train.ema_decay > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay), use_buffers=True)
        self.ddp_model = model
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        per_step = cfg.train.batch_size * cfg.train.accumulate
        self.steps_per_epoch = max(1, (len(self.bundle.train) // self.info.world) // per_step)
        if cfg.train.total_steps:
            self.total_steps = cfg.train.total_steps
        elif cfg.train.max_epochs:
            self.total_steps = cfg.train.max_epochs * self.steps_per_epoch
        else:
            raise UsageError("set train.total_steps or train.max_epochs")
        self.step = self._init_checkpoint_step() if cfg.train.continue_schedule else 0
        self.best = -math.inf
        self.best_stats: dict[str, float] | None = None
        if self.info.enabled:
            # torchrun's restart count is per node (an agent whose workers were healthy does not
            # count the restart), so one rank resuming means every rank resumes.
            flag = torch.tensor(float(self.resume), device=self.device)
            self.resume = bool(all_reduce_sum(flag, self.info).item() > 0)
        if self.resume and (self.output_dir / "last.pt").is_file():
            self._load(self.output_dir / "last.pt")

    def _loader(self):
        cfg = self.cfg
        per_step = cfg.train.batch_size * cfg.train.accumulate
        sampler = ResumableSampler(len(self.bundle.train), seed=cfg.train.seed, rank=self.info.rank,
                                   world=self.info.world, start=self.step * per_step)
        # Augmentation seeds follow the sample (epoch, index), not the rank: a sample is augmented
        # the same whichever process draws it, so N processes reproduce one process's batches.
        dataset = SeededAugmentation(self.bundle.train, cfg.train.seed * 1000)
        # Worker RNGs (anything outside the per-sample seeding) differ per rank and per worker.
        return build_loader(dataset, cfg.train.batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                            size_divisor=self.model.size_divisor, seed=cfg.train.seed + 1000 * self.info.rank,
                            sampler=sampler)

    def _init_checkpoint_step(self) -> int:
        path = self.cfg.model.init_checkpoint
        step = ckpt.load_checkpoint(path).get("step")
        if not isinstance(step, int):
            raise CheckpointError(f"{path}: records no training step for train.continue_schedule (not a checkpoint "
                                  "saved by scaledet train?); set train.continue_schedule=false to start at step 0")
        if step >= self.total_steps:
            raise UsageError(f"{path}: train.continue_schedule starts at its step {step}, but the schedule ends at "
                             f"step {self.total_steps}; raise train.total_steps / train.max_epochs")
        if self.info.is_main:
            log.info("continuing the schedule of %s at step %d of %d", path, step, self.total_steps)
        return step

    # ------------------------------------------------------------------ checkpoints
    def _payload(self) -> dict[str, Any]:
        return {
            "format": ckpt.FORMAT, **self.record, "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "ema_updates": int(self.ema.n_averaged) if self.ema is not None else 0,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(), "step": self.step,
            "best": self.best, "best_stats": self.best_stats, "rng": ckpt.capture_rng(), "config": self.cfg.to_dict(),
        }

    def _save(self, name: str) -> None:
        """Called on every rank (the RNG states are gathered); only rank 0 writes."""
        rng_per_rank = gather_objects(ckpt.capture_rng(), self.info) if self.info.enabled else None
        if self.info.is_main:
            payload = self._payload()
            if rng_per_rank is not None:
                payload["rng_per_rank"] = rng_per_rank
            ckpt.save_atomic(payload, self.output_dir / name)

    def _save_last(self) -> None:
        """last.pt; with ``train.keep_checkpoints: N`` also step_<step>.pt, the last N of them kept."""
        self._save("last.pt")
        keep = self.cfg.train.keep_checkpoints
        if not keep or not self.info.is_main:
            return
        target = self.output_dir / f"step_{self.step:08d}.pt"
        temporary = self.output_dir / f".{target.name}.link.scaledet.tmp"  # removed with the other stale temps
        temporary.unlink(missing_ok=True)
        try:
            os.link(self.output_dir / "last.pt", temporary)  # the same bytes, no second write
        except OSError:  # a file system without hard links
            shutil.copyfile(self.output_dir / "last.pt", temporary)
        os.replace(temporary, target)
        for old in sorted(self.output_dir.glob("step_*.pt"))[:-keep]:
            old.unlink()

    def _load(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path, map_location=self.device)
        stored = state.get("model_name")
        if stored and stored != self.cfg.model.name:
            raise CheckpointError(f"{path}: holds a {stored} model, but the config trains {self.cfg.model.name}; "
                                  f"resume with that run's config or train into another --output")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise CheckpointError(f"{path}: does not fit the model of this config ({self.cfg.model.name} with "
                                  f"model.args {dict(self.cfg.model.args)}): {str(err).strip().splitlines()[0]}") \
                from err
        self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(state.get("ema_updates", 0))
        self.step = int(state["step"])
        self.best = float(state.get("best", -math.inf))
        self.best_stats = state.get("best_stats")
        per_rank = state.get("rng_per_rank")
        if per_rank and len(per_rank) == self.info.world:
            ckpt.restore_rng(per_rank[self.info.rank])
        else:
            ckpt.restore_rng(state["rng"])
            if self.info.rank:  # another world size: keep the ranks' streams apart, reproducibly
                torch.manual_seed(self.cfg.train.seed + self.info.rank + 7_919 * self.step)
        if self.info.is_main:
            log.info("resumed from %s at step %d", path, self.step)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self) -> dict[str, float] | None:
        """Score the model (its EMA when kept) on the validation split, sharded over the ranks;
        the metrics, or None without ground truth. The full result is kept in ``last_evaluation``."""
        from scaledet.engine.evaluate import TorchPredictor, build_evaluator, evaluate_dataset

        model = self.ema.module if self.ema is not None else self.model
        evaluator = build_evaluator(self.cfg.eval, self.bundle, label_to_category_id=self.bundle.label_to_category_id,
                                    results_path=self.output_dir / "val_results.json", tasks=model.tasks)
        if evaluator is None:
            return None
        self.last_evaluation = evaluate_dataset(TorchPredictor(model, self.device, self.amp_dtype), self.bundle.val,
                                                evaluator, batch_size=self.cfg.eval.batch_size, info=self.info)
        self.model.train()
        return self.last_evaluation.metrics

    def _maybe_keep_best(self, stats: dict[str, float] | None) -> None:
        if not stats:
            return
        key = self.cfg.train.keep_best
        if key not in stats:
            raise UsageError(f"train.keep_best={key!r} is not an evaluation metric; have {', '.join(stats)}")
        if stats[key] > self.best:
            self.best, self.best_stats = stats[key], dict(stats)
            self._save("best.pt")

    # ------------------------------------------------------------------ the loop
    def fit(self) -> dict[str, Any]:
        check_model_arguments(self.cfg.model)  # a typo or bad type in model.args: before any file is touched
        try:
            self._claim_output()
            with _stop_on_signals(self):
                return self._fit()
        finally:
            if self._lock is not None:
                self._lock.release()

    def _claim_output(self) -> None:
        """Before anything is read or written: the folder is ours (see engine/run_folder.py)."""
        if self.info.is_main:
            self._lock = RunLock(self.output_dir)  # released by fit, whatever happens
            self.resume = claim_run_folder(self.output_dir, resume=self.resume, overwrite=self.overwrite)
        else:  # rank 0 decides and reports; the others only need to know whether to load
            self.resume = bool(self.resume) and (self.output_dir / "last.pt").is_file()

    def _fit(self) -> dict[str, Any]:
        self._setup()
        cfg = self.cfg
        if self.info.is_main:
            save_config(cfg, self.output_dir / "config.yaml")
            write_marker(self.output_dir, cfg.model.name)
            remove_stale_temps(self.output_dir)  # left by a process killed mid-write
        writer = self._writers()
        self.model.train()
        loader_iter = iter(self._loader())
        nonfinite = 0
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", dynamic_ncols=True,
                   disable=not (self.progress and self.info.is_main))
        last_time, images_seen = time.perf_counter(), 0
        while self.step < self.total_steps:
            if self.fail_at_step is not None and self.step == self.fail_at_step:
                if self.fail_mode == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise RuntimeError(f"injected failure at step {self.step} on rank {self.info.rank}")
            lr = learning_rate(cfg.optim, self.step, self.total_steps)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            losses, finite = self._optimizer_step(loader_iter)
            images_seen += cfg.train.batch_size * cfg.train.accumulate * self.info.world
            if not finite:
                nonfinite += 1
                warnings.warn(f"non-finite loss at step {self.step}; step skipped ({nonfinite} in a row)")
                if nonfinite >= cfg.train.max_nonfinite:
                    raise NonFiniteLossError(
                        f"loss was not finite for {nonfinite} steps in a row (last at step {self.step}); stopping. "
                        f"Checkpoints so far are kept in {self.output_dir}. Try a lower optim.lr, "
                        f"optim.grad_clip, or train.amp=none")
                continue
            nonfinite = 0
            self.step += 1
            now = time.perf_counter()
            ips = images_seen / max(now - last_time, 1e-9)
            record = {"step": self.step, "lr": lr, **{k: float(v) for k, v in losses.items()}, "images_per_s": ips}
            self.history.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{ips:.1f}")
            if self.step % cfg.train.log_every == 0 or self.step == self.total_steps:
                writer(record)
                last_time, images_seen = now, 0
            if cfg.train.eval_every and self.step % cfg.train.eval_every == 0 and self.step < self.total_steps:
                stats = self.evaluate()
                self._log_eval(stats, writer)
                self._draw_curves()
                self._maybe_keep_best(stats)
            if self.step % cfg.train.checkpoint_every == 0 or self._should_stop():
                self._save_last()
            if self._stop_signal is not None:
                bar.close()
                log.warning("stopped by signal %d: saved %s at step %d; continue with --resume",
                            self._stop_signal, self.output_dir / "last.pt", self.step)
                raise _Interrupted(self._stop_signal)
        bar.close()
        stats = self.evaluate()
        self._log_eval(stats, writer)
        self._draw_curves()
        self._maybe_keep_best(stats)
        self._save_last()
        barrier(self.info)
        return {"step": self.step, "final": stats, "best": self.best_stats, "output_dir": str(self.output_dir),
                "evaluation": self.last_evaluation if stats else None}

    def _optimizer_step(self, loader_iter) -> tuple[dict[str, torch.Tensor], bool]:
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        # The forward pass updates BatchNorm running statistics and draws random numbers
        # (stochastic depth) before the loss can be checked: keep both, to put back on a skip.
        buffers = [b.detach().clone() for b in self.model.buffers()]
        rng = torch.get_rng_state()
        totals: dict[str, torch.Tensor] = {}
        finite = torch.ones((), device=self.device)
        for micro in range(cfg.train.accumulate):
            batch = next(loader_iter)
            images = batch["images"].to(self.device, non_blocking=True)
            if cfg.train.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            sync = micro == cfg.train.accumulate - 1 or not self.info.enabled
            context = self.ddp_model.no_sync() if not sync else _nullcontext()
            with context:
                with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None):
                    outputs = self.ddp_model(images)
                losses = self.model.loss(outputs, batch["targets"], batch["image_sizes"])
                loss = losses["loss"] / cfg.train.accumulate
                finite = finite * torch.isfinite(loss.detach()).float()
                self.scaler.scale(torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)).backward()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0) + v.detach().float() / cfg.train.accumulate
        if not self.scaler.is_enabled():
            # a finite loss can still give inf gradients; the fp16 scaler skips those itself.
            # Gradients are identical on every rank after DDP's all-reduce, so this agrees too.
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip or math.inf)
            finite = finite * torch.isfinite(norm).float()
        # every rank must agree to skip, or DDP collectives would diverge
        all_finite = bool(all_reduce_sum(finite, self.info).item() == self.info.world)
        if not all_finite:
            self.optimizer.zero_grad(set_to_none=True)
            with torch.no_grad():
                for buffer, kept in zip(self.model.buffers(), buffers):
                    buffer.copy_(kept)
            torch.set_rng_state(rng)
            return totals, False
        if self.info.enabled:
            totals = self._reduce_for_logging(totals)
        if cfg.optim.grad_clip > 0 and self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        return totals, True

    def _should_stop(self) -> bool:
        """Whether a signal asked to stop; under DDP every rank stops at the same step."""
        if self.info.enabled:
            flag = torch.tensor(float(self._stop_signal or 0), device=self.device)
            signum = int(all_reduce_sum(flag, self.info).item())
            if signum and self._stop_signal is None:
                self._stop_signal = signal.SIGTERM
        return self._stop_signal is not None

    def _reduce_for_logging(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses averaged over processes (the global batch's loss), counts summed."""
        keys = list(totals)  # the same order on every rank
        summed = all_reduce_sum(torch.stack([totals[k] for k in keys]), self.info)
        return {k: v if k.startswith("num_") else v / self.info.world for k, v in zip(keys, summed)}

    # ------------------------------------------------------------------ logging
    def _writers(self):
        if not self.info.is_main:
            return lambda record: None
        csv_path = self.output_dir / "metrics.csv"
        # rows after the checkpoint's step were logged by the run that was interrupted: redone now
        truncate_log(csv_path, self.step)
        truncate_log(self.output_dir / "eval.csv", self.step)
        tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(log_dir=str(self.output_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional at run time; CSV is always written
            tb = None
        self._tb = tb

        def write(record: dict[str, float]) -> None:
            append_log(csv_path, record)
            if tb is not None:
                for k, v in record.items():
                    if k != "step":
                        tb.add_scalar(k, v, int(record["step"]))
                tb.flush()

        return write

    def _log_eval(self, stats: dict[str, float] | None, writer) -> None:
        if not stats or not self.info.is_main:
            return
        append_log(self.output_dir / "eval.csv", {"step": self.step, **stats})
        if self._tb is not None:
            for k, v in stats.items():
                self._tb.add_scalar(f"eval/{k}", v, self.step)

    def _draw_curves(self) -> None:
        """curves.png from the run's CSV logs. A plot that cannot be drawn is a warning: it must
        not end a run whose checkpoints and logs are fine."""
        if not self.info.is_main:
            return
        from scaledet.eval.plots import plot_training_curves

        try:
            plot_training_curves(self.output_dir)
        except Exception as err:  # noqa: BLE001 - reported, training goes on
            warnings.warn(f"{self.output_dir / 'curves.png'}: not drawn ({type(err).__name__}: {err})")


def check_dataset_images(dataset, split: str) -> None:
    """Read every item once (decode + annotations, before transforms are set), so a bad file fails
    before step 1 instead of hours in; all failures are listed, not only the first."""
    failures = []
    for index in tqdm(range(len(dataset)), desc=f"check {split} data", dynamic_ncols=True, leave=False):
        try:
            dataset[index]
        except DataError as err:
            failures.append(str(err).splitlines()[0])
    if failures:
        shown = "; ".join(failures[:5]) + (f"; and {len(failures) - 5} more" if len(failures) > 5 else "")
        raise DataError(f"--check-data: {len(failures)} of {len(dataset)} {split} items cannot be read: {shown}")
    log.info("--check-data: all %d %s items read", len(dataset), split)


def truncate_log(path: Path, step: int) -> None:
    """Keep the complete rows of a metrics CSV up to ``step`` (rewritten atomically)."""
    if not path.is_file():
        return
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        rows = [row for row in reader if _row_step(row) is not None and _row_step(row) <= step
                and None not in row.values()]
    write_csv(path, fields, rows)


def _row_step(row: dict) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None


def append_log(path: Path, record: dict[str, Any]) -> None:
    """One row, in one write: a kill leaves at most a partial last row, which the next resume's
    ``truncate_log`` drops (rewriting the whole table at every log step would grow quadratically)."""
    new = not path.exists()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(record))
    if new:
        writer.writeheader()
    writer.writerow(record)
    with path.open("a", newline="") as f:
        f.write(buffer.getvalue())


class _Interrupted(Exception):
    def __init__(self, signum: int):
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


@contextlib.contextmanager
def _stop_on_signals(trainer: "Trainer"):
    """SIGINT/SIGTERM only set a flag; the loop saves ``last.pt`` at the next step boundary and
    then the signal is re-raised with the previous handlers, so the process ends as it would
    have (Ctrl-C: KeyboardInterrupt, exit 130; SIGTERM: killed, exit 143)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    def request_stop(signum, frame):
        if trainer._stop_signal is not None:  # a second Ctrl-C: stop now, without saving
            raise KeyboardInterrupt
        trainer._stop_signal = signum
        log.warning("signal %d: saving a checkpoint at the end of this step, then stopping", signum)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _Interrupted as stop:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        previous = {}
        signal.raise_signal(stop.signum)
        raise KeyboardInterrupt from None  # a handler that returned: still stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
