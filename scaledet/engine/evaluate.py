"""The evaluation loop: a predictor over a data set, scored by a pluggable evaluator.

The loop knows neither the metric nor the model type:

* the thing evaluated is a :class:`Predictor` — padded images in, the fixed-size post-processed
  output out (:class:`TorchPredictor` wraps a scaledet Detector; an ONNX Runtime session can
  stand in the same way);
* the metric is an :class:`~scaledet.eval.base.Evaluator` (COCO, VOC + mIoU), fed one batch at a
  time with detections in original pixels.

Under DDP each rank predicts a round-robin shard of the data set; the evaluators' per-image
records are gathered to rank 0 in data set order, scored once there, and the result is shared so
every rank returns the same :class:`~scaledet.eval.base.EvalResult`.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from scaledet.config import EvalConfig
from scaledet.data.collate import collate
from scaledet.engine.distributed import DistInfo, gather_objects
from scaledet.data.input_spec import InputSpec
from scaledet.data.prediction import mask_method_used
from scaledet.engine.inference import unpack_detections
from scaledet.errors import UsageError
from scaledet.eval.base import EvalResult, Evaluator

if TYPE_CHECKING:
    from scaledet.data.factory import DataBundle


class Predictor(Protocol):
    """What the loop evaluates. ``size_divisor``: inputs are padded to a multiple of it;
    ``input_spec``: the pre-processing (its ``resize_method`` also resizes segmentation logits)."""

    size_divisor: int
    input_spec: InputSpec

    def __call__(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """``images [B,3,H,W]`` (normalised, padded) -> the post-processor's fixed-size output:
        ``boxes [B,K,4]``, ``scores``, ``labels``, ``num_detections`` (and ``mask [B,H,W]``)."""
        ...


class TorchPredictor:
    """A scaledet Detector as a :class:`Predictor`, in eval mode, under autocast when ``amp_dtype``."""

    def __init__(self, model: torch.nn.Module, device: torch.device, amp_dtype: torch.dtype | None = None) -> None:
        self.model = model.eval()
        self.device = device
        self.amp_dtype = amp_dtype
        self.size_divisor = model.size_divisor
        self.input_spec = model.input_spec

    def __call__(self, images: torch.Tensor, image_sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        images = images.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            outputs = self.model(images)
        return self.model.postprocess(outputs, image_sizes)


def _in_data_set_order(parts: list[list]) -> list:
    # Rank r held positions r, r + world, r + 2 * world, ... of the data set.
    world = len(parts)
    return [parts[i % world][i // world] for i in range(sum(len(part) for part in parts))]


@torch.inference_mode()
def evaluate_dataset(predictor: Predictor, dataset: Dataset, evaluator: Evaluator, *, batch_size: int,
                     info: DistInfo = DistInfo(), num_workers: int = 0, progress: bool = False) -> EvalResult:
    """Run ``predictor`` over ``dataset`` (this rank's shard under DDP) and score it with ``evaluator``;
    every rank returns the same result."""
    shard = Subset(dataset, range(info.rank, len(dataset), info.world)) if info.enabled else dataset
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=functools.partial(collate, size_divisor=predictor.size_divisor))
    evaluator.reset()
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        post = predictor(batch["images"], batch["image_sizes"])
        if mask_method_used(post, evaluator.mask_method) not in (None, evaluator.mask_method):
            raise UsageError(f"mIoU method {evaluator.mask_method!r} needs segmentation logits, which this "
                             "predictor does not return; set eval.miou_method=fast")
        evaluator.process(batch["targets"], unpack_detections(post, batch["targets"], batch["image_sizes"],
                                                              mask_method=evaluator.mask_method,
                                                              mask_resize=predictor.input_spec.resize_method))
    if not info.enabled:
        return evaluator.evaluate()
    parts = gather_objects(evaluator.records, info)
    result = None
    if info.is_main:
        evaluator.records = _in_data_set_order(parts)
        result = evaluator.evaluate()
    return gather_objects(result, info)[0]


def _unwrap(dataset: Dataset) -> Dataset:
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    return dataset


def build_evaluator(cfg: EvalConfig, bundle: DataBundle, *, label_to_category_id=None,
                    results_path: Path | None = None, tasks: Sequence[str] = ("det", "seg")) -> Evaluator | None:
    """The evaluator ``eval.metric`` names for ``bundle.val``; None when there is nothing to score
    against (no validation split, or COCO scoring without a COCO annotation file). ``tasks``: what
    the model does (``Detector.tasks``); VOC scores only those."""
    if bundle.val is None:
        return None
    if cfg.metric == "voc":
        from scaledet.data.voc import VOCDetection
        from scaledet.eval.voc import VocEvaluator

        voc = _unwrap(bundle.val)
        if not isinstance(voc, VOCDetection):
            raise UsageError(f"eval.metric=voc needs a VOC validation set, got {type(voc).__name__}")
        return VocEvaluator(voc.ground_truth, bundle.class_names, cfg.voc_metric, cfg.miou_method, tasks)
    if bundle.val_annotations is None:
        return None
    from scaledet.eval.coco import CocoEvaluator

    return CocoEvaluator(bundle.val_annotations, label_to_category_id or bundle.label_to_category_id,
                         results_path, image_ids=bundle.val_image_ids)


def select_validation_images(cfg: EvalConfig, bundle: DataBundle) -> None:
    """Narrow ``bundle.val`` as ``eval.image_filter`` and then ``eval.max_images`` say.

    The filter's image ids go to ``bundle.val_image_ids``, so COCO scoring counts only them (the
    MindSpore port's evaluation, docs/reference/MINDSPORE_FORMATS.md §3). A data set that lists its
    items' image ids without reading them (COCO JSON) also drops the other images; record files
    (MindRecord, TFRecord) keep their rows, and their images outside the filter go unscored.
    """
    if bundle.val is None:
        return
    if cfg.image_filter != "all":
        from scaledet.eval.image_filters import filtered_image_ids

        if bundle.val_annotations is None:
            raise UsageError(f"eval.image_filter={cfg.image_filter} selects images of a COCO annotation file; "
                             "set data.val_annotations")
        kept = filtered_image_ids(cfg.image_filter, bundle.val_annotations)
        bundle.val_image_ids = kept
        from scaledet.data.coco import CocoDetection

        if isinstance(bundle.val, CocoDetection):  # its image ids are known without reading the images
            wanted = set(kept)
            bundle.val = Subset(bundle.val, [k for k, image_id in enumerate(bundle.val.image_ids)
                                             if image_id in wanted])
    if cfg.max_images:
        bundle.val = Subset(bundle.val, range(min(cfg.max_images, len(bundle.val))))


def evaluate_on_config(cfg, predictor: Predictor, model, *, results_path: Path | None, progress: bool = True,
                       info: DistInfo = DistInfo(), tasks: Sequence[str] = ("det", "seg")) -> EvalResult:
    """Score ``predictor`` on the validation split ``cfg`` names. ``model`` (a Detector, or anything
    with its ``input_spec`` and ``label_to_category_id``) says how to prepare the images and which
    data set category each label is; the same loop serves every kind of predictor. ``tasks``: what
    the model does (``Detector.tasks``); VOC scores only those."""
    from scaledet.data.factory import build_datasets

    bundle = build_datasets(cfg.data, train=False, val=True)
    select_validation_images(cfg.eval, bundle)
    bundle.set_transforms(cfg.data, model)
    evaluator = build_evaluator(cfg.eval, bundle, label_to_category_id=model.label_to_category_id,
                                results_path=results_path, tasks=tasks)
    if evaluator is None:
        raise UsageError(f"eval.metric={cfg.eval.metric}: data.format={cfg.data.format} gives no ground truth "
                         "to score against (COCO scoring needs data.val_annotations)")
    return evaluate_dataset(predictor, bundle.val, evaluator, batch_size=cfg.eval.batch_size,
                            info=info, progress=progress and info.is_main)


def evaluate_checkpoint(cfg, checkpoint: Path, *, device: torch.device, output: Path | None = None,
                        progress: bool = True, info: DistInfo = DistInfo(), precision: str = "fp32") -> EvalResult:
    """Evaluate a checkpoint on the validation split a config names (sharded under DDP);
    ``precision="bf16"`` scores the bfloat16 deployment copy (``optimized_for_inference``)."""
    from scaledet.engine.inference import model_from_checkpoint

    model = model_from_checkpoint(checkpoint, device)
    if cfg.eval.score_threshold is not None:
        model.postprocessor.score_threshold = cfg.eval.score_threshold
    network = model.optimized_for_inference(precision=precision) if precision != "fp32" else model
    return evaluate_on_config(cfg, TorchPredictor(network, device), model,
                              results_path=(output or checkpoint.parent) / "results.json", progress=progress,
                              info=info, tasks=model.tasks)
