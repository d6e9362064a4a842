"""The two mIoU methods on real VOC predictions (the converted BlitzNet TF fixture model on
voc2012_first100): they differ, and the default (reference) equals an independent numpy
computation of the authors' protocol: logits resized bilinearly to the original size, then argmax."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from torch.utils.data import Subset

from scaledet.config import load_config
from scaledet.data.collate import collate
from scaledet.data.factory import build_datasets
from scaledet.engine.checkpoint import save_atomic
from scaledet.engine.evaluate import TorchPredictor, build_evaluator
from scaledet.engine.inference import model_from_checkpoint, unpack_detections
from scaledet.eval.voc import MIOU_METHODS

NUM_IMAGES = 6


@pytest.fixture(scope="module")
def setup(shared_data, tmp_path_factory):
    from scaledet.convert.blitznet_tf import convert_blitznet_tf

    ckpt = shared_data / "blitznet_tf_ref" / "ckpt"
    voc = shared_data / "voc2012_first100"
    if not ckpt.is_dir() or not voc.is_dir():
        pytest.skip("blitznet_tf_ref or voc2012_first100 absent")
    path = save_atomic(convert_blitznet_tf(ckpt), tmp_path_factory.mktemp("miou") / "bz.pt")
    return path, voc


def _config(voc, method):
    return load_config(None, [
        "model.name=blitznet300_r50", "data.format=voc", f"data.root={voc}", "data.val_split=Segmentation/val",
        "data.num_workers=0", "eval.metric=voc", "eval.batch_size=3", f"eval.max_images={NUM_IMAGES}",
        "train.keep_best=mAP", f"eval.miou_method={method}"])


def _legacy_resize(logits: np.ndarray, height: int, width: int) -> np.ndarray:
    """TF1 resize_bilinear (align_corners=False, half_pixel_centers=False) of ``[C, h, w]`` in numpy."""
    def axis(size_in, size_out):
        src = np.arange(size_out, dtype=np.float32) * np.float32(size_in / size_out)
        low = np.minimum(np.floor(src).astype(np.int64), size_in - 1)
        return low, np.minimum(low + 1, size_in - 1), (src - low).astype(np.float32)

    top, bottom, fy = axis(logits.shape[1], height)
    left, right, fx = axis(logits.shape[2], width)
    rows_top, rows_bottom = logits[:, top], logits[:, bottom]
    upper = rows_top[:, :, left] + (rows_top[:, :, right] - rows_top[:, :, left]) * fx
    lower = rows_bottom[:, :, left] + (rows_bottom[:, :, right] - rows_bottom[:, :, left]) * fx
    return upper + (lower - upper) * fy[:, None]


def test_reference_and_fast_differ_and_reference_equals_numpy(setup):
    path, voc = setup
    model = model_from_checkpoint(path)
    cfg = _config(voc, "reference")
    bundle = build_datasets(cfg.data, train=False, val=True)
    bundle.val = Subset(bundle.val, range(NUM_IMAGES))
    bundle.set_transforms(cfg.data, model)
    evaluators = {method: build_evaluator(_config(voc, method).eval, bundle) for method in MIOU_METHODS}
    predictor = TorchPredictor(model, torch.device("cpu"))
    maps = {method: [] for method in MIOU_METHODS}
    logits = []
    for start in range(0, NUM_IMAGES, 3):
        batch = collate([bundle.val[i] for i in range(start, min(start + 3, NUM_IMAGES))], 1)
        with torch.inference_mode():
            post = predictor(batch["images"], batch["image_sizes"])
        logits.extend(post["mask_logits"].numpy())
        for method, evaluator in evaluators.items():
            detections = unpack_detections(post, batch["targets"], batch["image_sizes"], mask_method=method,
                                           mask_resize=model.input_spec.resize_method)
            evaluator.process(batch["targets"], detections)
            maps[method].extend(d["masks"].numpy() for d in detections)
    results = {method: evaluator.evaluate() for method, evaluator in evaluators.items()}
    reference, fast = results["reference"], results["fast"]
    assert reference.details["miou_method"] == "reference" and "method: reference" in reference.table
    assert fast.details["miou_method"] == "fast" and "method: fast" in fast.table
    changed = np.mean([np.mean(a != b) for a, b in zip(maps["reference"], maps["fast"])])
    print(f"mIoU reference {reference.metrics['mIoU']:.6f}, fast {fast.metrics['mIoU']:.6f}; "
          f"label maps differ on {changed:.2%} of pixels")
    assert changed > 0.01 and reference.metrics["mIoU"] != fast.metrics["mIoU"]
    assert reference.metrics["mAP"] == fast.metrics["mAP"]

    # independent: numpy resize of the model's logits + argmax, per-class set IoU over non-void pixels
    names = (voc / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[:NUM_IMAGES]
    intersections, unions = np.zeros(21), np.zeros(21)
    for name, image_logits in zip(names, logits):
        truth = np.array(Image.open(voc / "SegmentationClass" / f"{name}.png"))
        pred = _legacy_resize(image_logits, *truth.shape).argmax(axis=0)
        valid = truth != 255
        for c in range(21):
            in_pred, in_truth = (pred == c) & valid, (truth == c) & valid
            intersections[c] += (in_pred & in_truth).sum()
            unions[c] += (in_pred | in_truth).sum()
    present = unions > 0
    expected = float((intersections[present] / unions[present]).mean())
    assert reference.metrics["mIoU"] == pytest.approx(expected, rel=1e-12)
