import numpy as np
import pytest
import torch

from scaledet.models.backbones.resnet import ResNetBackbone
from scaledet.models.common import FeatureInfo, NormSettings
from scaledet.models.detectors.retinanet import build_retinanet
from scaledet.models.necks.nasfpn import (NASFPN, NASFPN_CELLS, MergingCell, global_attention, plan_cells,
                                          resample)
from scaledet.registry import create_model
from scaledet.utils.flops import count_macs, count_params

LEVELS = [3, 4, 5, 6, 7]
RESNET50_OUT = [FeatureInfo(512, 8), FeatureInfo(1024, 16), FeatureInfo(2048, 32)]


def _pyramid(channels: int, h: int = 40, w: int = 24) -> list[torch.Tensor]:
    return [torch.randn(2, channels, -(-h // 2 ** k), -(-w // 2 ** k)) for k in range(3)]


def test_published_cell_table_drives_the_graph():
    nodes, outputs = plan_cells(NASFPN_CELLS, LEVELS)
    # "unused" rule: node 9 (P5 out) adds the never-consumed P5, node 10 (P7 out) the unused P7
    assert {5 + k: node.extra for k, node in enumerate(nodes) if node.extra} == {9: (2,), 10: (4,)}
    assert outputs == {3: 7, 4: 8, 5: 9, 7: 10, 6: 11}
    assert nodes[0].input_levels == (4, 6) and nodes[0].op == "attention"
    # a table where node 9 reads P5 itself leaves nothing unused at level 5
    cells = list(NASFPN_CELLS)
    cells[4] = MergingCell(5, "attention", (7, 2), True)
    nodes, _ = plan_cells(cells, LEVELS)
    assert nodes[4].extra == () and nodes[5].extra == (4,)
    with pytest.raises(ValueError, match="node 12"):
        plan_cells([MergingCell(3, "sum", (0, 12), True)], LEVELS)
    with pytest.raises(ValueError, match="level"):
        plan_cells(NASFPN_CELLS[:3], LEVELS)
    with pytest.raises(ValueError, match="outside the pyramid"):
        plan_cells([MergingCell(8, "sum", (0, 1), True)], LEVELS)


def test_stacks_do_not_share_weights_and_grow_linearly():
    per_stack = 7 * (3 * 3 * 256 * 256 + 256 + 2 * 256)  # conv + bias + BN affine: ≈4.13M
    with torch.device("meta"):
        counts = [count_params(NASFPN(RESNET50_OUT, 256, n)) for n in (1, 2, 3)]
        two = NASFPN(RESNET50_OUT, 256, 2)
    assert per_stack == 4_134_144
    assert counts[1] - counts[0] == counts[2] - counts[1] == per_stack
    assert counts[0] - per_stack == sum(c * 256 + 256 + 2 * 256 for c in (512, 1024, 2048))  # projections
    assert two.stacks[0].ops[0][1].weight is not two.stacks[1].ops[0][1].weight


def test_attention_variants():
    coarse = torch.tensor([[[[1.0, -3.0]]]])
    fine = torch.tensor([[[[2.0, 4.0]]]])
    # tensorflow/tpu: coarse + fine * sigmoid(max over coarse)
    torch.testing.assert_close(global_attention(coarse, 6, fine, 4, "max_coarse"),
                               coarse + fine * torch.sigmoid(torch.tensor(1.0)))
    # mmdetection/MindSpore: fine + coarse * sigmoid(mean over fine), whichever argument order
    torch.testing.assert_close(global_attention(fine, 4, coarse, 6, "avg_fine"),
                               fine + coarse * torch.sigmoid(torch.tensor(3.0)))


@pytest.mark.parametrize("attention", ["max_coarse", "avg_fine"])
@pytest.mark.parametrize("extra_levels", ["pool", "conv_pool"])
def test_forward_shapes_on_non_divisible_sizes(attention, extra_levels):
    torch.manual_seed(0)
    infos = [FeatureInfo(8, 8), FeatureInfo(16, 16), FeatureInfo(32, 32)]
    neck = NASFPN(infos, 16, 2, attention=attention, extra_levels=extra_levels,
                  norm=NormSettings(momentum=0.01, eps=1e-3))
    assert neck.feature_info == [FeatureInfo(16, 2 ** lvl) for lvl in LEVELS]
    features = [torch.randn(2, c, *s) for c, s in zip((8, 16, 32), [(13, 7), (7, 4), (4, 2)])]
    outputs = neck(features)
    assert [tuple(o.shape[-2:]) for o in outputs] == [(13, 7), (7, 4), (4, 2), (2, 1), (1, 1)]
    assert all(o.shape[:2] == (2, 16) and torch.isfinite(o).all() for o in outputs)


def test_attention_choice_changes_the_output():
    torch.manual_seed(0)
    infos = [FeatureInfo(16, 8), FeatureInfo(16, 16), FeatureInfo(16, 32)]
    a = NASFPN(infos, 16, 1, attention="max_coarse").eval()
    b = NASFPN(infos, 16, 1, attention="avg_fine").eval()
    b.load_state_dict(a.state_dict())
    features = _pyramid(16)
    with torch.no_grad():
        assert not torch.allclose(a(features)[0], b(features)[0])
    # same width in and out: no input projection
    assert all(isinstance(p, torch.nn.Identity) for p in a.projections)


def test_resample_keeps_partial_windows_and_hits_target_size():
    x = torch.arange(25.0).reshape(1, 1, 5, 5)
    down = resample(x, 3, 4, (3, 3))
    assert down.shape[-2:] == (3, 3) and down[0, 0, 2, 2] == 24.0
    assert resample(x, 3, 5, (2, 2))[0, 0].tolist() == [[18.0, 19.0], [23.0, 24.0]]
    up = resample(torch.ones(1, 1, 3, 2), 5, 3, (11, 7))
    assert up.shape[-2:] == (11, 7)


def test_retinanet_nasfpn_r50_matches_published_figures():
    with torch.device("meta"):
        model = create_model("retinanet_nasfpn_r50")
    params = count_params(model)
    macs = count_macs(model, 640)
    assert abs(params - 60.3e6) / 60.3e6 < 0.01, params
    assert abs(macs - 140.6e9) / 140.6e9 < 0.01, macs
    assert model.anchor_generator.num_anchors(640, 640) == 76_725
    assert model.num_classes == 91 and model.default_image_size == 640


def test_retinanet_nasfpn_r50_384_is_the_7at384_layout():
    with torch.device("meta"):
        model = create_model("retinanet_nasfpn_r50_384")
    assert model.neck.feature_info[0].channels == 384 and len(model.neck.stacks) == 7
    assert model.head.cls_tower.convs[0].out_channels == 384
    # paper ≈103.9M; straightforward count 103.6M (docs/reference/NASFPN.md §2.5)
    assert abs(count_params(model) - 103.6e6) / 103.6e6 < 0.01


def _synthetic_batch(num_images: int, size: int):
    """Images with a few filled shapes on textured backgrounds (the library's synthetic renderer)."""
    from scaledet.data.synthetic import SyntheticSpec, render_image

    spec = SyntheticSpec(min_objects=1, max_objects=3, min_size_frac=0.2, max_size_frac=0.5)
    rng = np.random.default_rng(0)
    images, targets = [], []
    for _ in range(num_images):
        image, objects = render_image(rng, size, spec)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
        boxes = torch.tensor([o["bbox"] for o in objects], dtype=torch.float32)
        boxes[:, 2:] += boxes[:, :2]
        targets.append({"boxes": boxes, "labels": torch.tensor([o["label"] for o in objects])})
    images = torch.stack(images)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    return (images - mean[:, None, None]) / std[:, None, None], targets


def test_tiny_resnet_nasfpn_learns_and_takes_any_input_size():
    torch.manual_seed(0)
    backbone = ResNetBackbone("basic", (1, 1, 1, 1), frozen_bn=False)
    neck = NASFPN(backbone.feature_info, 64, 1)
    model = build_retinanet(backbone, neck, num_classes=5, image_size=128, head_width=64, head_convs=2)
    images, targets = _synthetic_batch(2, 128)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    losses = []
    for _ in range(20):
        loss = model.loss(model(images), targets, [(128, 128)] * 2)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * np.mean(losses[:3]), losses

    # any input size: the detector pads to 128, the neck resamples whatever it gets
    model.eval()
    odd = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        outputs = model(odd)
        detections = model.postprocess(outputs, [(100, 150)])
    assert [tuple(t.shape[-2:]) for t in outputs["cls_logits"]] == [(16, 32), (8, 16), (4, 8), (2, 4), (1, 2)]
    assert detections["boxes"].shape == (1, model.postprocessor.max_detections, 4)
    kept = detections["boxes"][0, : int(detections["num_detections"][0])]
    assert (kept[:, 2] <= 150).all() and (kept[:, 3] <= 100).all()


def test_mindspore_recipe_config_builds_its_model():
    from scaledet.config import load_config

    config = load_config("retinanet_nasfpn_r50_coco")  # the packaged recipe
    with torch.device("meta"):
        model = create_model(config.model.name, num_classes=config.model.num_classes,
                             image_size=config.model.image_size, **config.model.args)
    assert model.anchor_generator.num_anchors(640, 640) == 76_725
    assert model.criterion.focal_alpha == 0.75 and model.criterion.focal_gamma == 2.0
    assert (model.postprocessor.nms_iou, model.postprocessor.score_threshold,
            model.postprocessor.max_detections) == (0.6, 0.1, 100)
    assert len(model.neck.stacks) == 7 and model.neck.stacks[0].attention == "avg_fine"
    assert (config.optim.momentum, config.optim.weight_decay, config.train.batch_size) == (0.9, 1.5e-4, 16)
