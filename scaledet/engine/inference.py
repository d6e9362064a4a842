"""User-facing prediction: any image input in, torchvision-style detections in original pixels out."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from scaledet.data.collate import collate
from scaledet.data.images import load_image, to_rgb_tensor


def eval_transform_for(model, image_size: int | None = None):
    """The evaluation transform matching how the model was trained (long side or square)."""
    from scaledet.data.factory import eval_transform

    square = getattr(model, "resize_mode", "long_side") == "square"
    return eval_transform(image_size or model.default_image_size, model.pixel_mean, model.pixel_std, square)


def _as_list(images: Any) -> list:
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _decode(item: Any) -> torch.Tensor:
    return load_image(item) if isinstance(item, (str, Path)) else to_rgb_tensor(item)


def unpack_detections(post: dict[str, torch.Tensor], targets: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                      score_threshold: float | None = None) -> list[dict[str, torch.Tensor]]:
    """Fixed-size post-processor output -> per-image dicts in original pixels (masks resized)."""
    results = []
    for i, target in enumerate(targets):
        n = int(post["num_detections"][i])
        boxes = post["boxes"][i, :n].float().cpu()
        scores = post["scores"][i, :n].float().cpu()
        labels = post["labels"][i, :n].cpu()
        if score_threshold is not None:
            keep = scores >= score_threshold
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        sy, sx = target["scale"]
        boxes = boxes / torch.tensor([sx, sy, sx, sy])
        oh, ow = target["orig_size"]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, ow)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, oh)
        out = {"boxes": boxes, "scores": scores, "labels": labels}
        if "mask" in post:
            h, w = image_sizes[i]
            logits_or_mask = post["mask"][i, :h, :w]
            out["masks"] = F.interpolate(logits_or_mask[None, None].float(), size=(oh, ow),
                                         mode="nearest")[0, 0].to(torch.int64).cpu()
        results.append(out)
    return results


def predict_images(model, images: Any, *, score_threshold: float | None = None, image_size: int | None = None,
                   batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    items = _as_list(images)
    transform = eval_transform_for(model, image_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    results: list[dict[str, torch.Tensor]] = []
    try:
        for start in range(0, len(items), batch_size):
            batch = [transform(_decode(item)) for item in items[start:start + batch_size]]
            collated = collate(batch, model.size_divisor)
            outputs = model(collated["images"].to(device))
            post = model.postprocess(outputs, collated["image_sizes"])
            results.extend(unpack_detections(post, collated["targets"], collated["image_sizes"], score_threshold))
    finally:
        model.train(was_training)
    return results


def model_from_checkpoint(path, device: torch.device | str = "cpu", *, use_ema: bool = True):
    """Rebuild a model from a scaledet checkpoint alone (name + builder args are stored in it)."""
    from scaledet.engine.checkpoint import CheckpointError, load_checkpoint
    from scaledet.registry import create_model

    state = load_checkpoint(path)
    if "model_name" not in state:
        raise CheckpointError(f"{path}: checkpoint lacks 'model_name'; was it written by scaledet?")
    model = create_model(state["model_name"], **dict(state.get("model_args") or {}))
    weights = state["ema"] if use_ema and state.get("ema") is not None else state["model"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path}: weights do not fit {state['model_name']}: "
                              f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]})")
    model.class_names = state.get("class_names")
    model.label_to_category_id = state.get("label_to_category_id")
    return model.to(device).eval()
