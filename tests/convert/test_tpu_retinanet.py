"""tensorflow/tpu SpineNet RetinaNet checkpoints: the structure-driven name mapping, and the converted
parts against the outputs the tpu code itself computed (spinenet_tpu_ref, see its SOURCE.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from scaledet import create_model
from scaledet.convert.retinanet_tf import TPU_ASPECT_RATIOS, tpu_ignored, tpu_retinanet_mapping
from scaledet.convert.tf_checkpoint import TFCheckpoint
from scaledet.convert.tf_mapping import MappingError, check_mapping, load_mapped

from _parts import max_abs_differences, parse_shape, read_listing, tf_outputs_in_our_order, tpu_spinenet_parts

# SOURCE.md: the reference's own float32 noise reaches 6e-4; one wrong convention misses by 0.6 to 24.
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def tpu_ref(shared_data):
    return shared_data / "spinenet_tpu_ref"


def _converted_parts(tpu_ref, **overrides):
    parts = tpu_spinenet_parts(**overrides)
    checkpoint = TFCheckpoint(tpu_ref / "ckpt" / "model.ckpt")
    load_mapped(parts, tpu_retinanet_mapping(parts.backbone, parts.head), checkpoint,
                ignored=tpu_ignored(checkpoint))
    return parts


def test_converted_parts_compute_the_tpu_outputs(tpu_ref):
    ours = _converted_parts(tpu_ref).run(np.load(tpu_ref / "inputs.npy"))
    theirs = tf_outputs_in_our_order(np.load(tpu_ref / "outputs.npz"), 91, TPU_ASPECT_RATIOS)
    differences = max_abs_differences(ours, theirs)
    assert len(differences) == 15  # backbone, class and box outputs of levels 3..7
    assert max(differences.values()) <= TOLERANCE, differences


def test_pytorch_padding_misses_by_far(tpu_ref):
    """The check can fail: symmetric max-pool padding (scaledet's default) is not the tpu code."""
    ours = _converted_parts(tpu_ref, pool_padding="symmetric").run(np.load(tpu_ref / "inputs.npy"))
    theirs = np.load(tpu_ref / "outputs.npz")
    assert np.abs(ours["backbone_l3"] - theirs["backbone_l3"]).max() > 100 * TOLERANCE


def _tsv_shapes(path) -> dict[str, tuple[int, ...]]:
    return {r[0]: parse_shape(r[1]) for r in read_listing(path)}


@pytest.mark.parametrize("variant, model_name, kwargs", [
    ("49S", "retinanet_spinenet49s", {"endpoints_num_filters": 128}),  # the tpu code's 49S endpoints
    ("49", "retinanet_spinenet49", {}),
    ("96", "retinanet_spinenet96", {}),
    ("143", "retinanet_spinenet143", {}),
    ("190", "retinanet_spinenet190", {}),
])
def test_every_full_size_variable_maps(tpu_ref, variant, model_name, kwargs):
    tf_shapes = _tsv_shapes(tpu_ref / "varlists" / f"spinenet{variant}_retinanet.tsv")
    with torch.device("meta"):
        model = create_model(model_name, **kwargs)
    mapping = tpu_retinanet_mapping(model.backbone, model.head)
    state_shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_mapping(mapping, tf_shapes, state_shapes, source=variant)
    assert set(mapping) == set(tf_shapes)
    assert {a.key for a in mapping.values()} == {k for k in state_shapes if not k.endswith("num_batches_tracked")}


def test_other_model_or_missing_variables_are_listed(tpu_ref):
    tf_shapes = _tsv_shapes(tpu_ref / "ckpt_variables.tsv")
    parts = tpu_spinenet_parts(filter_size_scale=0.25)
    state_shapes = {k: tuple(v.shape) for k, v in parts.state_dict().items()}
    # At scale 0.25 the stem's first block needs no projection shortcut: one conv + BN fewer.
    with pytest.raises(MappingError, match=r"model.ckpt: does not match the model: 5 checkpoint variables "
                                           r"nothing maps: .*spinenet/conv2d_12/kernel; \d+ shape mismatches: "
                                           r"spinenet/batch_normalization_1/beta \[28\] -> backbone\."):
        check_mapping(tpu_retinanet_mapping(parts.backbone, parts.head), tf_shapes, state_shapes,
                      source="model.ckpt")
    parts = tpu_spinenet_parts()
    state_shapes = {k: tuple(v.shape) for k, v in parts.state_dict().items()}
    del tf_shapes["retinanet/box_net/box-predict/bias"]
    tf_shapes["global_step"] = ()
    tf_shapes["extra/variable"] = (3,)
    with pytest.raises(MappingError) as error:
        check_mapping(tpu_retinanet_mapping(parts.backbone, parts.head), tf_shapes, state_shapes,
                      source="model.ckpt", ignored=tpu_ignored(tf_shapes))
    message = str(error.value)
    assert "1 checkpoint variables nothing maps: extra/variable;" in message
    assert "1 expected variables missing from the checkpoint: retinanet/box_net/box-predict/bias" in message
    assert "global_step" not in message
    assert "\n" not in message
