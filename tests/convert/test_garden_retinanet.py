"""TF2 Model Garden RetinaNet checkpoints: the structure-driven name mapping, and the converted parts
against the outputs Model Garden itself computed (tests/fixtures/tf2_model_garden, see its README)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scaledet import create_model
from scaledet.convert.retinanet_tf import (GARDEN_ASPECT_RATIOS, GARDEN_NASFPN_OPTIONS, garden_ignored,
                                           garden_retinanet_mapping)
from scaledet.convert.tf_checkpoint import TFCheckpoint
from scaledet.convert.tf_mapping import MappingError, check_mapping, load_mapped
from scaledet.models.common import FeatureInfo
from scaledet.models.necks.nasfpn import NASFPN

from _parts import (GARDEN, garden_nasfpn_parts, garden_spinenet_parts, max_abs_differences, parse_shape,
                    read_listing, tf_outputs_in_our_order)

# float32: the narrow random networks amplify float32 rounding. scaledet in float32 differs from
# scaledet in float64 by up to 6.3e-4 (spinenet backbone) and Model Garden's float32 from its
# float64 by up to 4.1e-4, so 1e-4 is below the fixtures' own float32 noise (README.md).
FLOAT32_TOLERANCE = 5e-4
# float64 against Model Garden's float64 run of the same weights: no rounding noise left.
TOLERANCE = 1e-4
NUM_CLASSES = 11
BUILDERS = {"spinenet": garden_spinenet_parts, "nasfpn": garden_nasfpn_parts}


def _converted(name: str, **overrides):
    parts = BUILDERS[name](**overrides)
    checkpoint = TFCheckpoint(GARDEN / name / "ckpt")
    mapping = garden_retinanet_mapping(parts.backbone, parts.neck, parts.head, checkpoint.variable_names(),
                                       source=str(checkpoint.prefix))
    load_mapped(parts, mapping, checkpoint, ignored=garden_ignored(checkpoint))
    return parts


@pytest.mark.parametrize("name, expected_outputs", [("spinenet", 15), ("nasfpn", 18)])
def test_converted_parts_compute_the_model_garden_outputs(name, expected_outputs):
    parts = _converted(name)
    inputs = np.load(GARDEN / "inputs.npy")
    for suffix, dtype, tolerance in (("", np.float32, FLOAT32_TOLERANCE), ("_float64", np.float64, TOLERANCE)):
        theirs = tf_outputs_in_our_order(np.load(GARDEN / name / f"outputs{suffix}.npz"), NUM_CLASSES,
                                         GARDEN_ASPECT_RATIOS)
        ours = parts.to(torch.float64 if dtype == np.float64 else torch.float32).run(inputs.astype(dtype))
        differences = max_abs_differences(ours, theirs)
        # features (and the NAS-FPN levels), class and box outputs of every level
        assert len(differences) == expected_outputs
        assert max(differences.values()) <= tolerance, (suffix, differences)


def _spinenet_256_features(**overrides) -> tuple[dict, dict]:
    """The float64 backbone on the fixture images upsampled 2x (as the fixture script does)."""
    inputs = np.load(GARDEN / "inputs.npy").astype(np.float64)
    larger = np.repeat(np.repeat(inputs, 2, axis=1), 2, axis=2)
    ours = _converted("spinenet", **overrides).double().run(larger)
    return {k: v for k, v in ours.items() if k.startswith("backbone")}, np.load(
        GARDEN / "spinenet" / "outputs_float64_256.npz")


def test_two_pool_down_path_at_256_pixels():
    ours, theirs = _spinenet_256_features()
    differences = max_abs_differences(ours, {k: theirs[k] for k in theirs.files})
    assert len(differences) == 5 and max(differences.values()) <= TOLERANCE, differences


@pytest.mark.parametrize("option, value", [("conv_padding", "symmetric"), ("pool_padding", "symmetric"),
                                           ("downsample_pools", "one")])
def test_tpu_conventions_miss_model_garden_by_far(option, value):
    """The check can fail: the same weights with one other convention give other features."""
    ours, theirs = _spinenet_256_features(**{option: value})
    assert max(np.abs(ours[k] - theirs[k]).max() for k in theirs.files) > 1000 * TOLERANCE


def _varlist(name: str) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    rows = read_listing(GARDEN / "varlists" / f"{name}.tsv.gz")
    return {r[0]: parse_shape(r[1]) for r in rows}, {r[0]: r[3] for r in rows}


FULL_SIZE = [
    ("spinenet49S", "retinanet_spinenet49s", {"endpoints_num_filters": 128}),  # Model Garden's 49S endpoints
    ("spinenet49", "retinanet_spinenet49", {}),
    ("spinenet96", "retinanet_spinenet96", {}),
    ("spinenet143", "retinanet_spinenet143", {}),
    ("spinenet190", "retinanet_spinenet190", {}),
    ("nasfpn_r50_7x256", "retinanet_nasfpn_r50", {}),
]


@pytest.mark.parametrize("listing, model_name, kwargs", FULL_SIZE)
def test_every_full_size_variable_maps(listing, model_name, kwargs):
    shapes, names = _varlist(listing)
    with torch.device("meta"):
        model = create_model(model_name, **kwargs)
    mapping = garden_retinanet_mapping(model.backbone, model.neck, model.head, names, source=listing)
    state_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_mapping(mapping, shapes, state_shapes, source=listing, ignored=garden_ignored(shapes))
    assert set(mapping) == {k for k in shapes if k.startswith("model/")}
    assert {a.key for a in mapping.values()} == {k for k in state_shapes if not k.endswith("num_batches_tracked")}


def test_cell_input_width_is_a_no_op_at_256():
    features = [FeatureInfo(c, s) for c, s in ((512, 8), (1024, 16), (2048, 32))]
    with torch.device("meta"):
        plain = NASFPN(features, 256, 1)
        garden = NASFPN(features, 256, 1, **GARDEN_NASFPN_OPTIONS)
        narrow = NASFPN(features, 64, 1, **GARDEN_NASFPN_OPTIONS)
    assert garden.stacks[0].input_projections is None
    assert {k: v.shape for k, v in garden.state_dict().items()} == {k: v.shape for k, v in plain.state_dict().items()}
    # Narrower than 256: one 1x1 conv + BN per cell input, and the cell convs take 256 channels.
    assert narrow.stacks[0].ops[0][1].in_channels == 256
    assert [len(p) for p in narrow.stacks[0].input_projections] == [2, 2, 2, 2, 3, 3, 2]


def test_missing_layers_and_variable_names_are_reported():
    shapes, names = _varlist("spinenet49")
    with torch.device("meta"):
        model = create_model("retinanet_spinenet49")
    dropped = {k: v for k, v in names.items() if "layer_with_weights-7/" not in k}
    with pytest.raises(MappingError, match=r"spinenet49: _backbone does not match the model: \d+ \w+ layers "
                                           r"where the model needs \d+"):
        garden_retinanet_mapping(model.backbone, None, model.head, dropped, source="spinenet49")
    renamed = {k: ("other_conv_3/kernel" if k.startswith("model/_backbone/layer_with_weights-0/") else v)
               for k, v in names.items()}
    with pytest.raises(MappingError, match=r"_backbone has conv layers named conv2d, other_conv; their creation "
                                           r"order cannot be recovered"):
        garden_retinanet_mapping(model.backbone, None, model.head, renamed, source="spinenet49")
    unnamed = {k: "" for k in names}
    with pytest.raises(MappingError, match=r"has no variable name in the checkpoint's object graph"):
        garden_retinanet_mapping(model.backbone, None, model.head, unnamed, source="spinenet49")
    with pytest.raises(MappingError, match=r"aspect ratios differ"):
        garden_retinanet_mapping(model.backbone, None, model.head, names, aspect_ratios=(1.0, 2.0, 3.0))
