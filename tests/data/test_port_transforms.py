"""The MindSpore NAS-FPN port's augmentation (augment: port_iou_crop) on real coco_tiny images."""
import pytest
import torch
from torchvision.ops import box_iou

from scaledet.data.coco import CocoDetection
from scaledet.data.port_transforms import PortIoUCropTransform, sample_port_crop
from scaledet.data.ssd_transforms import SSDEvalTransform

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
SIZE = 128


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def coco_train(coco_tiny):
    root = coco_tiny
    return CocoDetection(root / "train2017", root / "annotations" / "instances_train2017.json")


@pytest.fixture(scope="module")
def crowd_item(coco_train):
    index = coco_train.image_ids.index(204805)  # 15 boxes, one of them a crowd region
    return coco_train.load_raw(index)


def test_output_size_and_consistent_boxes(coco_train):
    transform = PortIoUCropTransform(SIZE, MEAN, STD)
    torch.manual_seed(0)
    for index in range(0, 40, 4):
        image, target = coco_train.load_raw(index)
        out, result = transform(image, target)
        assert out.shape == (3, SIZE, SIZE) and out.dtype == torch.float32
        boxes = result["boxes"]
        assert boxes.shape[1] == 4 and len(boxes) == len(result["labels"]) == len(result["iscrowd"])
        assert (boxes >= 0).all() and (boxes <= SIZE).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 0).all()
        assert set(result["labels"].tolist()) <= set(target["labels"].tolist())


def test_crop_boxes_follow_the_window(coco_train):
    """Same seed: the window the sampler picks is the one the transform applies, and the boxes are
    those with their centre strictly inside, clipped, shifted and scaled to SIZE."""
    transform = PortIoUCropTransform(SIZE, MEAN, STD, hflip_prob=0.0, brightness=0, contrast=0, saturation=0,
                                     crowd_as_objects=False)
    cropped = 0
    for seed in range(12):
        image, target = coco_train.load_raw(seed)
        boxes = target["boxes"]
        torch.manual_seed(seed)
        window = sample_port_crop(boxes, *image.shape[-2:])
        torch.manual_seed(seed)
        _, result = transform(image, target)
        if window is None:
            assert result["scale"] == (SIZE / image.shape[-2], SIZE / image.shape[-1])
            continue
        cropped += 1
        top, left, h, w = window
        cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
        inside = (cx > left) & (cx < left + w) & (cy > top) & (cy < top + h)
        expected = boxes[inside] - torch.tensor([left, top, left, top], dtype=torch.float32)
        expected[:, 0::2] = expected[:, 0::2].clamp(0, w) * (SIZE / w)
        expected[:, 1::2] = expected[:, 1::2].clamp(0, h) * (SIZE / h)
        assert torch.allclose(result["boxes"], expected, atol=1e-3)
        assert torch.equal(result["labels"], target["labels"][inside])
        assert result["scale"] == (SIZE / h, SIZE / w)
    assert cropped >= 4  # the seeds exercise the crop, not only the no-crop option


def test_accepted_windows_obey_the_port_rule(coco_train):
    image, target = coco_train.load_raw(3)
    height, width = image.shape[-2:]
    boxes = target["boxes"].double()
    torch.manual_seed(1)
    accepted = 0
    for _ in range(60):
        window = sample_port_crop(target["boxes"], height, width, min_ious=(0.5,))
        if window is None:
            continue
        accepted += 1
        top, left, h, w = window
        assert 0.3 * width - 1 <= w <= width and 0.3 * height - 1 <= h <= height
        assert 0.5 * w - 2 <= h <= 2 * w + 2
        iou = box_iou(boxes, torch.tensor([[left, top, left + w, top + h]], dtype=torch.float64))[:, 0]
        over = iou[iou > 0]
        assert over.numel() > 0 and not (over.min() < 0.5 and over.max() > 0.7)
    assert accepted > 30
    assert sample_port_crop(target["boxes"], height, width, min_ious=(None,)) is None
    assert sample_port_crop(torch.zeros(0, 4), height, width, min_ious=(0.1,)) is None


def test_no_crop_no_jitter_is_the_port_eval_stretch(crowd_item):
    """With the no-crop option, no flip and no jitter the output is exactly the eval stretch."""
    image, target = crowd_item
    plain = PortIoUCropTransform(SIZE, MEAN, STD, min_ious=(None,), hflip_prob=0.0, brightness=0, contrast=0,
                                 saturation=0)
    out, result = plain(image, target)
    ref_image, ref_target = SSDEvalTransform(SIZE, MEAN, STD)(image, target)
    assert torch.equal(out, ref_image) and torch.equal(result["boxes"], ref_target["boxes"])
    flipped, flip_target = PortIoUCropTransform(SIZE, MEAN, STD, min_ious=(None,), hflip_prob=1.0, brightness=0,
                                                contrast=0, saturation=0)(image, target)
    assert torch.equal(flipped, ref_image.flip(-1))
    mirrored = ref_target["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([SIZE, 0, SIZE, 0])
    assert torch.allclose(flip_target["boxes"], mirrored, atol=1e-4)
    torch.manual_seed(0)
    jittered, _ = PortIoUCropTransform(SIZE, MEAN, STD, min_ious=(None,), hflip_prob=0.0)(image, target)
    assert not torch.equal(jittered, ref_image)


def test_crowd_regions_become_ordinary_boxes_as_in_the_port(crowd_item):
    image, target = crowd_item
    assert target["iscrowd"].sum() == 1
    no_crop = dict(min_ious=(None,), hflip_prob=0.0)
    _, port = PortIoUCropTransform(SIZE, MEAN, STD, **no_crop)(image, target)
    assert len(port["boxes"]) == 15 and not port["iscrowd"].any()
    _, kept = PortIoUCropTransform(SIZE, MEAN, STD, crowd_as_objects=False, **no_crop)(image, target)
    assert torch.equal(kept["iscrowd"], target["iscrowd"])
