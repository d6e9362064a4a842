"""Model settings stored in a checkpoint are checked against its weights before anything is
built for real: a small file cannot make us allocate a huge model."""
import resource

import pytest
import torch

from scaledet.engine.checkpoint import save_atomic
from scaledet.engine.inference import model_from_checkpoint
from scaledet.errors import CheckpointError
from scaledet.registry import create_model

ARGS = dict(num_classes=3, head_width=16, endpoints_num_filters=16)


@pytest.fixture(scope="module")
def small_weights():
    return create_model("retinanet_spinenet49_tiny", **ARGS).state_dict()


def _checkpoint(tmp_path, weights, **args):
    path = tmp_path / "model.pt"
    save_atomic({"model": weights, "model_name": "retinanet_spinenet49_tiny", "model_args": args}, path)
    return path


def test_consistent_checkpoint_loads(tmp_path, small_weights):
    model = model_from_checkpoint(_checkpoint(tmp_path, small_weights, **ARGS))
    assert model.num_classes == 3


def test_settings_that_do_not_fit_the_weights_fail_before_allocating(tmp_path, small_weights):
    path = _checkpoint(tmp_path, small_weights, **{**ARGS, "head_width": 4096})  # ~2.4 GB of head weights
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(CheckpointError, match=r"model.pt: weights do not fit retinanet_spinenet49_tiny with the "
                                              r"stored settings .*of another shape \(e.g. \['head\."):
        model_from_checkpoint(path)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert grown_mb < 300, f"peak memory grew by {grown_mb:.0f} MB"


@pytest.mark.parametrize("bad, message", [
    ({"head_width": "wide"}, "model.args.head_width' must be an integer, got 'wide'"),
    ({"image_size": 100000}, "stored image_size 100000 is outside 1..4096"),
])
def test_invalid_stored_settings_are_a_checkpoint_error(tmp_path, small_weights, bad, message):
    path = _checkpoint(tmp_path, small_weights, **{**ARGS, **bad})
    with pytest.raises(CheckpointError, match="model.pt: ") as err:
        model_from_checkpoint(path)
    assert message in str(err.value)
