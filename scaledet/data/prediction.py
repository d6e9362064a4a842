"""Everything around a detector's network for prediction, shared by ``Detector.predict``, the
ONNX Runtime predictor and the evaluation loops: any image input in, the model's evaluation
transform and batching, fixed-size detections back to per-image results in original pixels.

A leaf below models, engine and export: it knows the :class:`InputSpec` and the fixed-size
post-processor output (docs/CONTRACTS.md), nothing of the network that runs in between.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from scaledet.data.collate import collate
from scaledet.data.images import to_rgb_tensor
from scaledet.data.input_spec import InputSpec, eval_transform
from scaledet.data.resize import upsampled_labels
from scaledet.errors import UsageError

# How a segmentation label map at the original image size is made (see unpack_detections).
MASK_METHODS = ("reference", "fast")

# (normalised, padded images [B,3,H,W], valid (h, w) per image) -> fixed-size detections
RunBatch = Callable[[torch.Tensor, list[tuple[int, int]]], dict[str, torch.Tensor]]


def as_image_list(images: Any) -> list:
    """One image or several (a list, a ``[B,3,H,W]`` tensor) as a list of single images."""
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, torch.Tensor) and images.ndim == 4:
        return list(images)
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def unpack_detections(post: dict[str, torch.Tensor], targets: Sequence[dict], image_sizes: Sequence[tuple[int, int]],
                      score_threshold: float | None = None, *, mask_method: str = "reference",
                      mask_resize: str = "bilinear") -> list[dict[str, torch.Tensor]]:
    """Fixed-size post-processor output -> per-image dicts in original pixels.

    Label maps at the original size (``masks``), by ``mask_method``:
    * ``reference`` (default; the BlitzNet authors' test protocol, docs/reference/BLITZNET.md §1.7): the
      segmentation logits (``mask_logits``) resized bilinearly (``mask_resize``: "bilinear" or
      "tf_legacy") to the original size, then argmax. Outputs without logits (an ONNX graph) fall
      back to the fast method; :func:`mask_method_used` says which one applies.
    * ``fast``: the network-size label map ``mask`` resized with nearest neighbour.
    """
    if mask_method not in MASK_METHODS:
        raise UsageError(f"unknown mask method {mask_method!r}; allowed: {', '.join(MASK_METHODS)}")
    method = mask_method_used(post, mask_method)
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
        h, w = image_sizes[i]
        if method == "reference":
            logits = post["mask_logits"][i]
            # the logits cover the padded input; keep the part over this image
            padded_h, padded_w = post["mask"].shape[-2:]
            lh, lw = round(h * logits.shape[-2] / padded_h), round(w * logits.shape[-1] / padded_w)
            out["masks"] = upsampled_labels(logits[:, :lh, :lw], (oh, ow), mask_resize).to(torch.int64).cpu()
        elif method == "fast":
            label_map = post["mask"][i, :h, :w]
            out["masks"] = F.interpolate(label_map[None, None].float(), size=(oh, ow),
                                         mode="nearest")[0, 0].to(torch.int64).cpu()
        results.append(out)
    return results


def mask_method_used(post: dict[str, torch.Tensor], mask_method: str) -> str | None:
    """The label-map method :func:`unpack_detections` applies to ``post`` (None: no masks)."""
    if "mask" not in post:
        return None
    return "reference" if mask_method == "reference" and "mask_logits" in post else "fast"


def predict_batches(run: RunBatch, spec: InputSpec, images: Any, *, batch_size: int,
                    score_threshold: float | None = None) -> list[dict[str, torch.Tensor]]:
    """Decode, transform per ``spec``, batch by ``batch_size``, ``run`` each batch and unpack:
    one dict of ``boxes``, ``scores``, ``labels`` (and ``masks``) per image."""
    items = as_image_list(images)
    transform = eval_transform(spec)
    results: list[dict[str, torch.Tensor]] = []
    for start in range(0, len(items), batch_size):
        batch = [transform(to_rgb_tensor(item)) for item in items[start:start + batch_size]]
        collated = collate(batch, spec.size_divisor)
        post = run(collated["images"], collated["image_sizes"])
        results.extend(unpack_detections(post, collated["targets"], collated["image_sizes"], score_threshold,
                                         mask_resize=spec.resize_method))
    return results
