"""Evaluation loops: COCO mAP for COCO-style data, VOC mAP + mIoU for VOC-style data.

Sharded across ranks under DDP: each rank predicts its slice, results are gathered, and the
metric is computed once on rank 0 (then shared so every rank returns the same numbers).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from scaledet.data.collate import collate
from scaledet.engine.distributed import DistInfo, gather_objects
from scaledet.engine.inference import unpack_detections


def _loader(dataset: Dataset, batch_size: int, size_divisor: int, info: DistInfo, num_workers: int) -> DataLoader:
    shard = Subset(dataset, range(info.rank, len(dataset), info.world)) if info.enabled else dataset
    return DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=lambda b: collate(b, size_divisor))


@torch.inference_mode()
def predict_dataset(model, dataset: Dataset, *, batch_size: int, device: torch.device, amp_dtype=None,
                    info: DistInfo = DistInfo(), num_workers: int = 0, progress: bool = False,
                    keep_masks: bool = False) -> list[dict[str, Any]]:
    """Detections for every image of ``dataset`` (this rank's shard), in original pixels."""
    model.eval()
    out = []
    loader = _loader(dataset, batch_size, model.size_divisor, info, num_workers)
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = batch["images"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(images)
        post = model.postprocess(outputs, batch["image_sizes"])
        for target, det in zip(batch["targets"], unpack_detections(post, batch["targets"], batch["image_sizes"])):
            record = {"image_id": target["image_id"], "boxes": det["boxes"], "scores": det["scores"],
                      "labels": det["labels"], "file_name": target.get("file_name")}
            if keep_masks and "masks" in det:
                record["masks"] = det["masks"]
                record["gt_mask"] = target.get("orig_mask")
            out.append(record)
    return out


def evaluate_coco_dataset(model, dataset: Dataset, annotations: Path, label_to_category_id, *, batch_size: int,
                          device: torch.device, amp_dtype=None, info: DistInfo = DistInfo(),
                          results_path: Path | None = None, progress: bool = False) -> dict[str, float]:
    from scaledet.eval.coco import COCO_STAT_NAMES, detections_to_coco_results, evaluate_coco

    dets = predict_dataset(model, dataset, batch_size=batch_size, device=device, amp_dtype=amp_dtype, info=info,
                           progress=progress)
    results = []
    for d in dets:
        results.extend(detections_to_coco_results(d["image_id"], d["boxes"], d["scores"], d["labels"],
                                                  label_to_category_id))
    gathered = gather_objects(results, info)
    if not info.is_main:
        stats = None
    else:
        results = [r for part in gathered for r in part]
        if results_path is not None:
            results_path.parent.mkdir(parents=True, exist_ok=True)
            results_path.write_text(json.dumps(results))
        stats = evaluate_coco(annotations, results) if results else {k: 0.0 for k in COCO_STAT_NAMES}
    return gather_objects(stats, info)[0]


def evaluate_checkpoint(cfg, checkpoint: Path, *, device: torch.device, output: Path | None = None,
                        progress: bool = True) -> dict[str, Any]:
    """Evaluate a checkpoint on the validation split a config names; returns the metric dict."""
    from scaledet.data.factory import build_datasets
    from scaledet.engine.inference import model_from_checkpoint

    model = model_from_checkpoint(checkpoint, device)
    bundle = build_datasets(cfg.data, train=False, val=True)
    if cfg.eval.max_images:
        bundle.val = Subset(bundle.val, range(min(cfg.eval.max_images, len(bundle.val))))
    bundle.set_transforms(cfg.data, model)
    if cfg.eval.score_threshold is not None:
        model.postprocessor.score_threshold = cfg.eval.score_threshold
    if cfg.eval.metric == "voc":
        from scaledet.engine.evaluate_voc import evaluate_voc_dataset

        return evaluate_voc_dataset(model, bundle.val, batch_size=cfg.eval.batch_size, device=device,
                                    metric=cfg.eval.voc_metric, class_names=bundle.class_names, progress=progress)
    label_map = getattr(model, "label_to_category_id", None) or bundle.label_to_category_id
    results_path = (output or checkpoint.parent) / "results.json"
    stats = evaluate_coco_dataset(model, bundle.val, bundle.val_annotations, label_map,
                                  batch_size=cfg.eval.batch_size, device=device, results_path=results_path,
                                  progress=progress)
    return {"stats": stats, "results_path": str(results_path)}
