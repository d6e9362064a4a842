import pytest
import torch
import torchvision

from scaledet.errors import CheckpointError
from scaledet.models.backbones.blitz_resnet import BlitzResNet, TFSameMaxPool2d, blitz_resnet50, load_pretrained
from scaledet.models.detectors.blitznet import BLITZNET_MEAN, BlitzNet
from scaledet.registry import create_model, list_models
from scaledet.utils.flops import count_params


pytestmark = pytest.mark.usefixtures("one_thread")


def test_builders_are_registered():
    assert {"blitznet300_r50", "blitznet512_r50", "blitznet_tiny"} <= set(list_models())


def test_full_blitznet300_forward_shapes_on_cpu():
    model = create_model("blitznet300_r50").eval()
    with torch.inference_mode():
        out = model(torch.zeros(1, 3, 300, 300))
    assert out["loc"].shape == (1, 45_390, 4)
    assert out["conf"].shape == (1, 45_390, 21)
    assert out["seg"].shape == (1, 21, 75, 75)
    assert model.anchors((300, 300)).shape == (45_390, 4)
    assert model.size_divisor == 1 and model.default_image_size == 300
    assert model.pixel_mean == pytest.approx(BLITZNET_MEAN) and model.pixel_std == pytest.approx((1 / 255,) * 3)
    print(f"blitznet300_r50 parameters: {count_params(model):,}")


def test_trunk_puts_the_stride_on_the_first_1x1_and_keeps_torchvision_names(tmp_path):
    unit = blitz_resnet50().layer2[0]
    assert unit.conv1.stride == (2, 2) and unit.conv2.stride == (1, 1)
    # one unit per stage keeps the round trip cheap; the key names are those of ResNet-50
    reference = torchvision.models.resnet.ResNet(torchvision.models.resnet.Bottleneck, [1, 1, 1, 1])
    path = tmp_path / "r50.pth"
    torch.save(reference.state_dict(), path)
    trunk = BlitzResNet((1, 1, 1, 1))
    # torchvision weights were trained on torchvision's normalisation: the loader says so
    assert load_pretrained(trunk, path) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert torch.equal(trunk.layer3[0].conv2.weight, reference.layer3[0].conv2.weight)
    assert torch.equal(trunk.layer4[0].downsample[1].running_var, reference.layer4[0].downsample[1].running_var)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="missing keys.*layer1.0.conv1.weight.*unexpected keys.*extra.weight"):
        load_pretrained(BlitzResNet((1, 1, 1, 1)), path)
    partial = BlitzResNet((1, 1, 1, 1))
    load_pretrained(partial, path, strict=False)  # what matches is loaded
    assert not partial.conv1.weight.any()
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        blitz_resnet50(pretrained=str(tmp_path / "missing.pth"))


def test_tf_same_max_pool_pads_bottom_right_for_even_inputs():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    y = TFSameMaxPool2d()(x)
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0].tolist() == [[14, 16, 17], [26, 28, 29], [32, 34, 35]]
    assert TFSameMaxPool2d()(torch.zeros(1, 1, 75, 75)).shape[-1] == 38


def test_down_stream_first_units_use_a_strided_identity_shortcut():
    model = create_model("blitznet_tiny")
    first = model.streams.down[0][0]
    assert first.downsample is None and first.conv1.stride == (2, 2)
    assert model.streams.up[0].projection is not None and all(b.projection is None for b in model.streams.up[1:])


def draw_scene(seed: int, size: int = 128):
    """Grey image with 2-3 coloured rectangles (colour = class) and the matching mask."""
    g = torch.Generator().manual_seed(seed)
    colours = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])
    image = torch.full((3, size, size), 0.5)
    mask = torch.zeros(size, size, dtype=torch.long)
    boxes, labels = [], []
    for _ in range(int(torch.randint(2, 4, (1,), generator=g))):
        w, h = (int(v) for v in torch.randint(24, 64, (2,), generator=g))
        x, y = int(torch.randint(0, size - w, (1,), generator=g)), int(torch.randint(0, size - h, (1,), generator=g))
        label = int(torch.randint(0, 3, (1,), generator=g))
        image[:, y:y + h, x:x + w] = colours[label][:, None, None]
        mask[y:y + h, x:x + w] = label + 1
        boxes.append([x, y, x + w, y + h])
        labels.append(label)
    normalised = (image - torch.tensor(BLITZNET_MEAN)[:, None, None]) * 255
    return normalised, {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "mask": mask}


def test_tiny_blitznet_learns_detection_and_segmentation_on_synthetic_scenes():
    torch.manual_seed(0)
    model = create_model("blitznet_tiny", num_classes=3)
    scenes = [draw_scene(s) for s in range(4)]
    images = torch.stack([s[0] for s in scenes])
    targets = [s[1] for s in scenes]
    sizes = [(128, 128)] * 4
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    model.train()
    for _ in range(30):
        losses = model.loss(model(images), targets, sizes)
        optimiser.zero_grad()
        losses["loss"].backward()
        optimiser.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    first = {k: sum(h[k] for h in history[:3]) / 3 for k in ("det_cls_loss", "det_loc_loss", "seg_loss")}
    last = {k: sum(h[k] for h in history[-3:]) / 3 for k in first}
    assert last["det_cls_loss"] + last["det_loc_loss"] < 0.6 * (first["det_cls_loss"] + first["det_loc_loss"])
    assert last["seg_loss"] < 0.5 * first["seg_loss"]
    model.eval()
    with torch.inference_mode():
        outputs = model(images[:1])
        result = model.postprocess(outputs, sizes[:1])
    assert result["mask"].shape == (1, 128, 128)
    foreground = targets[0]["mask"] > 0
    assert (result["mask"][0][foreground] == targets[0]["mask"][foreground]).float().mean() > 0.6
    best_box, best_label = result["boxes"][0, :1], int(result["labels"][0, 0])
    iou = torchvision.ops.box_iou(best_box, targets[0]["boxes"])[0]
    assert ((iou > 0.5) & (targets[0]["labels"] == best_label)).any()


def test_batch_without_masks_or_boxes_gives_every_parameter_a_gradient():
    torch.manual_seed(0)
    model = create_model("blitznet_tiny", num_classes=3).train()
    images = torch.randn(2, 3, 128, 128)
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    losses = model.loss(model(images), [empty, dict(empty)], [(128, 128)] * 2)
    assert torch.isfinite(losses["loss"]) and losses["det_loc_loss"] == 0 and losses["seg_loss"] == 0
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_postprocess_output_contract_on_tiny_model():
    model = create_model("blitznet_tiny", num_classes=5, max_detections=7).eval()
    assert isinstance(model, BlitzNet)
    with torch.inference_mode():
        out = model.postprocess(model(torch.randn(2, 3, 128, 128)), [(128, 128), (120, 100)])
    assert out["boxes"].shape == (2, 7, 4) and out["labels"].shape == (2, 7) and out["mask"].shape == (2, 128, 128)
    valid = out["labels"] >= 0
    assert (out["labels"][valid] < 5).all()
    assert (out["boxes"][1, :, 2] <= 100).all() and (out["boxes"][1, :, 3] <= 120).all()
    assert (out["num_detections"] == valid.sum(dim=1)).all()
    with pytest.raises(ValueError, match="default boxes"):
        model.postprocess(model(torch.randn(1, 3, 96, 96)), [(128, 128)])
