"""Our ``retinanet_resnet50_fpn`` with converted weights equals torchvision's, end to end.

Same architecture (parameter counts), same detections after NMS on real COCO images, and the
same training losses for the same targets (which proves anchors, matching, box coding, focal and
L1 losses and their normalisation agree).
"""
import json
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms.functional import to_tensor

from scaledet.models.convert import torchvision_retinanet_checkpoint
from scaledet.registry import create_model
from scaledet.utils.flops import count_params

HEIGHT, WIDTH = 384, 512  # multiples of 128, so neither side pads differently
BIAS_SHIFT = 3.0  # random heads score ~0.01 everywhere; lift all logits equally to get detections
SCORE_THRESHOLD = 0.33


def _torchvision_retinanet(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, **kwargs)


@pytest.fixture(scope="module")
def coco_pair(shared_data: Path):
    """Two real COCO images resized to HEIGHT x WIDTH in [0,1], with their non-crowd targets."""
    root = shared_data / "coco_tiny"
    split = next((s for s in ("val2017", "train2017") if (root / s).is_dir()), None)
    if split is None:
        pytest.skip(f"no COCO images under {root}")
    annotations = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in annotations["annotations"]:
        if not ann["iscrowd"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
    images, targets = [], []
    for info in sorted(annotations["images"], key=lambda i: i["id"]):
        if len(images) == 2:
            break
        if info["id"] not in by_image or not (root / split / info["file_name"]).is_file():
            continue
        pil = Image.open(root / split / info["file_name"]).convert("RGB")
        sx, sy = WIDTH / pil.width, HEIGHT / pil.height
        images.append(to_tensor(pil.resize((WIDTH, HEIGHT), Image.BILINEAR)))
        boxes = torch.tensor([a["bbox"] for a in by_image[info["id"]]], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        boxes *= torch.tensor([sx, sy, sx, sy])
        labels = torch.tensor([a["category_id"] for a in by_image[info["id"]]], dtype=torch.int64)
        targets.append({"boxes": boxes, "labels": labels})
    if len(images) < 2:
        pytest.skip(f"fewer than 2 annotated images in {root / split}")
    return images, targets


@pytest.fixture(scope="module")
def model_pair():
    """torchvision's model (fixed seed, equal class-bias shift) and ours with its converted weights."""
    tv = _torchvision_retinanet(min_size=HEIGHT, max_size=WIDTH, score_thresh=SCORE_THRESHOLD)
    with torch.no_grad():
        tv.head.classification_head.cls_logits.bias += BIAS_SHIFT
    checkpoint = torchvision_retinanet_checkpoint(tv.state_dict())
    ours = create_model(checkpoint["model_name"], **checkpoint["model_args"], score_threshold=SCORE_THRESHOLD)
    ours.load_state_dict(checkpoint["model"])
    return tv, ours


def _normalise(images: list[torch.Tensor], model) -> torch.Tensor:
    mean = torch.tensor(model.pixel_mean)[:, None, None]
    std = torch.tensor(model.pixel_std)[:, None, None]
    return torch.stack([(image - mean) / std for image in images])


def test_parameter_counts_equal_torchvision():
    tv = _torchvision_retinanet()
    from_scratch = create_model("retinanet_resnet50_fpn", frozen_bn=False, trainable_layers=5)
    assert count_params(from_scratch) == count_params(tv)
    assert count_params(from_scratch, trainable_only=True) == count_params(tv, trainable_only=True)
    tv_state = tv.state_dict()
    ours_state = from_scratch.state_dict()
    assert len(ours_state) == len(tv_state)
    assert sum(v.numel() for v in ours_state.values()) == sum(v.numel() for v in tv_state.values())
    # Default (fine-tuning) configuration: frozen BN keeps the same tensors as buffers.
    frozen = create_model("retinanet_resnet50_fpn")
    frozen_numel = sum(v.numel() for k, v in frozen.state_dict().items())
    tv_numel = sum(v.numel() for k, v in tv_state.items() if not k.endswith("num_batches_tracked"))
    assert frozen_numel == tv_numel


def test_detections_equal_torchvision(coco_pair, model_pair):
    images, _ = coco_pair
    tv, ours = model_pair
    tv.eval()
    ours.eval()
    with torch.inference_mode():
        expected = tv(images)
        raw = ours(_normalise(images, ours))
        got = ours.postprocess(raw, [(HEIGHT, WIDTH)] * len(images))
    counts = [len(e["scores"]) for e in expected]
    assert all(c > 0 for c in counts), "the bias shift should give detections"
    assert min(counts) < ours.postprocessor.max_detections, "the score threshold path should be exercised"
    for i, exp in enumerate(expected):
        n = int(got["num_detections"][i])
        assert n == len(exp["scores"])
        torch.testing.assert_close(got["scores"][i, :n], exp["scores"], atol=1e-4, rtol=0)
        torch.testing.assert_close(got["boxes"][i, :n], exp["boxes"], atol=1e-3, rtol=0)
        assert torch.equal(got["labels"][i, :n], exp["labels"])
        assert (got["labels"][i, n:] == -1).all()


def test_training_losses_equal_torchvision(coco_pair, model_pair):
    images, targets = coco_pair
    tv, ours = model_pair
    # Same normalisation on both sides: torchvision's BatchNorm2d on running statistics, like our
    # frozen BN; the detector itself in training mode so it returns losses.
    tv.train()
    for module in tv.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eval()
    ours.train()
    with torch.no_grad():
        expected = tv(images, [dict(t) for t in targets])
        losses = ours.loss(ours(_normalise(images, ours)), targets, [(HEIGHT, WIDTH)] * len(images))
    assert losses["num_positives"] > 0
    torch.testing.assert_close(losses["cls_loss"], expected["classification"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(losses["box_loss"], expected["bbox_regression"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(losses["loss"], expected["classification"] + expected["bbox_regression"],
                               atol=2e-4, rtol=1e-5)
