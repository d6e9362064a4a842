"""VOC detection mAP and segmentation mIoU of a BlitzNet-style model on a VOC data set.

mIoU is computed at the original image resolution, as the reference protocol (docs/reference/BLITZNET.md §5);
the predicted label map is resized from the network input with nearest neighbour.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from scaledet.data.collate import collate
from scaledet.engine.inference import unpack_detections
from scaledet.eval.miou import ConfusionMatrix
from scaledet.eval.voc import VocClassDetections, VocImageAnnotation, evaluate_voc


def _voc_base(dataset):
    indices = None
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices] if indices is not None else list(dataset.indices)
        dataset = dataset.dataset
    return dataset, indices


@torch.inference_mode()
def evaluate_voc_dataset(model, dataset, *, batch_size: int, device: torch.device, metric: str = "area",
                         class_names: Sequence[str], progress: bool = False, amp_dtype=None) -> dict:
    base, indices = _voc_base(dataset)
    order = indices if indices is not None else list(range(len(base)))
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: collate(b, model.size_divisor))
    annotations: dict[str, VocImageAnnotation] = {}
    found: dict[str, list] = {name: [] for name in class_names}
    confusion = ConfusionMatrix(len(class_names) + 1)
    position = 0
    for batch in tqdm(loader, desc="eval", disable=not progress, leave=False, dynamic_ncols=True):
        images = batch["images"].to(device)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            outputs = model(images)
        post = model.postprocess(outputs, batch["image_sizes"])
        for det in unpack_detections(post, batch["targets"], batch["image_sizes"]):
            index = order[position]
            position += 1
            record = base.records[index]
            annotations[record.image_id] = VocImageAnnotation(
                boxes=record.boxes.astype(np.float64), names=[class_names[int(l)] for l in record.labels],
                difficult=record.difficult.astype(bool))
            for box, score, label in zip(det["boxes"].numpy(), det["scores"].numpy(), det["labels"].numpy()):
                found[class_names[int(label)]].append((record.image_id, float(score), box))
            if "masks" in det and base.mask_paths[index] is not None:
                h, w = det["masks"].shape
                confusion.update(det["masks"], base._load_mask(index, h, w))
    detections = {
        name: VocClassDetections(image_ids=[d[0] for d in items], scores=np.array([d[1] for d in items]),
                                 boxes=np.array([d[2] for d in items]).reshape(-1, 4))
        for name, items in found.items()
    }
    result = evaluate_voc(annotations, detections, classes=class_names, metric=metric)
    seg = confusion.compute()
    return {"mAP": result["mAP"], "mIoU": seg["miou"], "pixel_acc": seg["pixel_acc"], "metric": metric,
            "per_class_AP": result["per_class"]}
