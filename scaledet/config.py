"""Experiment configuration: frozen dataclasses loaded from YAML, overridable with dotted keys.

``load_config("retinanet_spinenet49s_coco", ["train.total_steps=10", "model.args.head_width=64"])``
(a packaged recipe, see :mod:`scaledet.configs`, or a path to a YAML file).
Everything that can be checked without reading data is checked when the config is built: unknown
keys and values outside a ``Literal``'s choices are errors that name the key and list what is
allowed, and so are settings that contradict each other. ``model.args`` is checked against the
model's builder by :func:`check_model_arguments`, which the trainer calls before it reads data.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from scaledet.configs import resolve_config
from scaledet.errors import UsageError
from scaledet.eval.metric_names import METRIC_NAMES

# Any metric an evaluator reports; which ones are allowed depends on eval.metric (checked in Config).
_METRIC_NAME = Literal[tuple(name for names in METRIC_NAMES.values() for name in names)]


class ConfigError(UsageError):
    pass


@dataclass(frozen=True)
class ModelConfig:
    name: str = "retinanet_spinenet49_tiny"
    num_classes: int | None = None  # None: taken from the data set
    image_size: int | None = None  # None: the model's published default
    args: Mapping[str, Any] = field(default_factory=dict)  # further keyword arguments of the builder
    init_checkpoint: str | None = None  # start from these weights (a scaledet checkpoint)


@dataclass(frozen=True)
class DataConfig:
    format: Literal["synthetic", "coco", "voc", "tfrecord", "mindrecord"] = "synthetic"
    # Relative data paths below are taken under root, a relative root under $SCALEDET_DATA_ROOT
    # (scaledet/data/paths.py). voc: the VOC20xx folder; synthetic: where to write it.
    root: str | None = None
    train_images: str | None = None
    train_annotations: str | None = None
    val_images: str | None = None
    val_annotations: str | None = None
    train_split: str | None = "train"  # voc: an ImageSets list; None = every annotated image
    val_split: str | None = "val"
    # voc: a folder of extra <id>.png class masks (SBD's SegmentationClassAug) for training images
    # without an official SegmentationClass mask; they count in the data set's num_masked
    extra_masks_dir: str | None = None
    train_pattern: str | None = None  # tfrecord shards, e.g. /data/coco/train-*
    val_pattern: str | None = None
    # tfrecord: the category table (label -> id, names) when no annotation json gives it; with
    # neither, every record is read once at start to find the ids (scaledet/data/factory.py)
    category_ids: tuple[int, ...] = ()
    class_names: tuple[str, ...] = ()
    # RetinaNet/TPU | BlitzNet | the MindSpore NAS-FPN port's | none
    augment: Literal["scale_jitter", "ssd", "port_iou_crop", "resize"] = "scale_jitter"
    scale_min: float = 0.5
    scale_max: float = 2.0
    hflip: float = 0.5
    num_workers: int = 2
    synthetic_train: int = 400
    synthetic_val: int = 100
    synthetic_image_size: int = 256
    max_images: int | None = None  # use only the first N training images (overfitting checks)
    allow_outside_root: bool = False  # let annotation files name images outside their folder (absolute, '..')


@dataclass(frozen=True)
class OptimConfig:
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01  # peak learning rate for the global batch
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5
    decay_norm_and_bias: bool = False  # TPU decays only conv/linear kernels
    schedule: Literal["constant", "step", "cosine", "multiphase_warmup_cosine", "mindspore_nasfpn"] = "step"
    warmup_steps: int = 0
    warmup_start_lr: float | None = None  # absolute; default lr / 10 at step 0
    decay_steps: tuple[int, ...] = ()  # step schedule boundaries
    decay_rate: float = 0.1
    min_lr: float = 0.0  # cosine end
    warmup_phases: tuple[tuple[float, float], ...] = ()  # multiphase: (fraction of total steps, lr factor at end)
    grad_clip: float = 0.0  # max global grad norm; 0 = off


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 8  # per process
    total_steps: int | None = None
    max_epochs: int | None = None  # used when total_steps is not given
    accumulate: int = 1  # gradient accumulation micro-steps per optimizer step
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 0  # optimizer steps between evaluations; 0 = only at the end
    checkpoint_every: int = 200
    keep_checkpoints: int = 0  # also keep step_<N>.pt of the last N saves of last.pt; 0 = last.pt (and best.pt) only
    # start at the step model.init_checkpoint recorded, its schedule going on (LR, data order): the
    # MindSpore NAS-FPN port's PRE_TRAINED + PRE_TRAINED_EPOCH_SIZE; false = a new schedule from step 0
    continue_schedule: bool = False
    keep_best: _METRIC_NAME = "AP50"  # metric deciding best.pt; one that eval.metric reports
    ema_decay: float = 0.0  # 0 = no EMA of weights
    sync_bn: bool = False
    freeze: tuple[str, ...] = ()  # regexes of parameter names not trained
    max_nonfinite: int = 5  # consecutive non-finite losses tolerated before stopping
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and GPU (tensor cores)
    # CPU fp32: wide 3x3 stride-1 convolutions on large maps by Winograd F(4x4, 3x3), a quarter of the
    # multiply-adds, same result up to fp32 rounding (scaledet/ops/winograd.py); no effect on GPU or under amp
    winograd: bool = True
    retain_freed_memory: bool = True  # CPU: malloc keeps freed memory, no page faults per step (utils/memory.py)


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 8
    metric: Literal["coco", "voc"] = "coco"  # voc: VOC mAP + mIoU, for data.format=voc
    voc_metric: Literal["area", "11point"] = "area"  # VOC2010+ all-point AP | VOC2007 11-point AP
    # mIoU label maps: reference = seg logits resized bilinearly to the original size, then argmax
    # (the BlitzNet authors' protocol); fast = argmax at network size, nearest resize of the labels
    miou_method: Literal["reference", "fast"] = "reference"
    score_threshold: float | None = None  # None: the model's own
    max_images: int | None = None
    # which validation images are scored: all | the MindSpore NAS-FPN port's subset (>= 1 annotation,
    # no crowd annotation; its published AP is on that subset); scaledet/eval/image_filters.py
    image_filter: Literal["all", "annotated_non_crowd"] = "all"


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        _check_ranges(self)
        reported = METRIC_NAMES[self.eval.metric]
        if self.train.keep_best not in reported:
            raise ConfigError(f"train.keep_best={self.train.keep_best!r} is not a metric of "
                              f"eval.metric={self.eval.metric!r}; allowed: {', '.join(reported)}")
        if self.eval.image_filter != "all" and self.eval.metric != "coco":
            raise ConfigError(f"eval.image_filter={self.eval.image_filter!r} selects images of a COCO annotation "
                              f"file and needs eval.metric='coco', not {self.eval.metric!r}")
        if self.train.continue_schedule and not self.model.init_checkpoint:
            raise ConfigError("train.continue_schedule=true continues the schedule of model.init_checkpoint, "
                              "which is not set")
        if self.train.keep_checkpoints < 0:
            raise ConfigError(f"train.keep_checkpoints must be 0 or more, got {self.train.keep_checkpoints}")
        if self.eval.metric == "voc" and self.data.format != "voc":
            raise ConfigError(f"eval.metric='voc' scores against VOC annotations and needs data.format='voc', "
                              f"not {self.data.format!r}")

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def replace(self, overrides: list[str] | Mapping[str, Any]) -> "Config":
        raw = self.to_dict()
        items = overrides.items() if isinstance(overrides, Mapping) else (_split_override(o) for o in overrides)
        for key, value in items:
            _set_dotted(raw, key, value)
        return config_from_dict(raw)


# Largest square side a model may be built for: SpineNet-190 uses 1280, and a 4096^2 input already
# needs tens of GB of activations (an unbounded value would try to allocate them and die late).
MAX_IMAGE_SIZE = 4096

# key -> (lowest allowed, whether the lowest is allowed, highest or None); None values are skipped.
# Everything here would otherwise fail late (after training) or silently (0 steps, lr 0).
_RANGES: dict[str, tuple[float, bool, float | None]] = {
    "model.num_classes": (0, False, None), "model.image_size": (0, False, MAX_IMAGE_SIZE),
    "data.scale_min": (0, False, None), "data.scale_max": (0, False, None), "data.hflip": (0, True, 1),
    "data.num_workers": (0, True, None), "data.synthetic_train": (0, False, None),
    "data.synthetic_val": (0, True, None), "data.synthetic_image_size": (0, False, MAX_IMAGE_SIZE),
    "data.max_images": (0, False, None),
    "optim.lr": (0, False, None), "optim.momentum": (0, True, 1), "optim.weight_decay": (0, True, None),
    "optim.warmup_steps": (0, True, None), "optim.warmup_start_lr": (0, True, None),
    "optim.decay_rate": (0, False, None), "optim.min_lr": (0, True, None), "optim.grad_clip": (0, True, None),
    "train.batch_size": (0, False, None), "train.total_steps": (0, False, None), "train.max_epochs": (0, False, None),
    "train.accumulate": (0, False, None), "train.log_every": (0, False, None), "train.eval_every": (0, True, None),
    "train.checkpoint_every": (0, False, None), "train.ema_decay": (0, True, 1),
    "train.max_nonfinite": (0, False, None),
    "eval.batch_size": (0, False, None), "eval.score_threshold": (0, True, 1), "eval.max_images": (0, False, None),
}


def _check_ranges(config: "Config") -> None:
    for key, (low, low_ok, high) in _RANGES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
        if value < low or (value == low and not low_ok) or (high is not None and value > high):
            above = f">= {low}" if low_ok else f"> {low}"
            raise ConfigError(f"config key {key!r} must be {above}" + (f" and <= {high}" if high is not None else "")
                              + f", got {value}")
    if config.data.scale_max < config.data.scale_min:
        raise ConfigError(f"config key 'data.scale_max' ({config.data.scale_max}) is below data.scale_min "
                          f"({config.data.scale_min})")
    steps = config.optim.decay_steps
    if any(s <= 0 for s in steps) or list(steps) != sorted(set(steps)):
        raise ConfigError(f"config key 'optim.decay_steps' must be positive and increasing, got {list(steps)}")


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, dict) or part not in node:
            allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(none)"
            raise ConfigError(f"unknown config key {'.'.join(parts[:i + 1])!r}; allowed: {allowed}")
        if node[part] is None:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value  # unknown leaf keys are caught by config_from_dict with the allowed list


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if annotation is Any:
        return value
    if origin is Literal:
        # `1 == True` and `0 == False`: compare types too, so only the listed values pass.
        if not any(value == choice and type(value) is type(choice) for choice in args):
            raise ConfigError(f"config key {key!r} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if origin in (dict, Mapping, typing.Mapping) or annotation in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"config key {key!r} must be a mapping, got {value!r}")
        return dict(value)
    if annotation in _SCALARS:
        accepted, convert = _SCALARS[annotation]
        # bool is an int to Python, but `true` is not a number in a config
        if isinstance(value, accepted) and (annotation is bool or not isinstance(value, bool)):
            return convert(value)
        if annotation is int and isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key {key!r} must be {_SCALAR_NAMES[annotation]}, got {value!r}")
    return value


# annotation -> (accepted Python types, conversion); and how an error names it
_SCALARS = {bool: (bool, bool), int: (int, int), float: ((int, float), float), str: (str, str)}
_SCALAR_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _build(cls: type, raw: Mapping[str, Any] | None, prefix: str):
    raw = dict(raw or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {where!r}; allowed: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], hint, key)
    return cls(**kwargs)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    return _build(Config, raw, "")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or start from defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            path = resolve_config(path)  # a YAML file, or the name of a packaged recipe
        except FileNotFoundError as err:
            raise ConfigError(str(err)) from None
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from err
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        config = config_from_dict(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path else str(err)) from err
    return config.replace(overrides) if overrides else config


def check_model_arguments(model: ModelConfig) -> None:
    """``model.name`` is registered and ``model.args`` are arguments its builder takes.

    Imports the model registry (and so torch), which is why it is not part of loading; the trainer
    calls it first, before any data is read.
    """
    from scaledet.registry import builder_argument_types, builder_arguments

    try:
        allowed = builder_arguments(model.name)
    except KeyError as err:
        raise ConfigError(f"model.name: {err.args[0]}") from None
    unknown = sorted(set(model.args) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(f'model.args.{k}' for k in unknown)}; "
                          f"{model.name} takes: {', '.join(allowed)}")
    types = builder_argument_types(model.name)
    for key, value in model.args.items():
        if key in types and value is not None:
            _coerce(value, types[key], f"model.args.{key}")  # checked only; the value is passed as given


def save_config(config: Config, path: str | Path) -> None:
    from scaledet.utils.atomic import write_yaml

    write_yaml(path, config.to_dict())
