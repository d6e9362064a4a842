"""The TensorFlow checkpoint reader against checkpoints TensorFlow wrote, and broken copies of them."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from scaledet.convert import tf_checkpoint
from scaledet.convert.tf_checkpoint import TFCheckpoint, TFCheckpointError, resolve_prefix

from _parts import GARDEN, parse_shape, read_listing

def _listing(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    return {r[0]: (parse_shape(r[1]), r[2]) for r in read_listing(path)}


@pytest.mark.parametrize("prefix, listing", [
    ("spinenet_tpu_ref/ckpt/model.ckpt", "spinenet_tpu_ref/ckpt_variables.tsv"),
    ("blitznet_tf_ref/ckpt/blitznet300_x4_r50_w8", "blitznet_tf_ref/ckpt/variables.tsv"),
])
def test_reads_tf1_checkpoints_exactly_as_listed(shared_data, prefix, listing):
    checkpoint = TFCheckpoint(shared_data / prefix)
    expected = _listing(shared_data / listing)
    assert {n: (i.shape, i.dtype) for n, i in checkpoint.variables.items()} == expected
    arrays = checkpoint.read_all()  # every tensor's crc32c is checked on read
    assert all(arrays[n].shape == shape and arrays[n].dtype == np.dtype(dtype)
               for n, (shape, dtype) in expected.items())
    assert checkpoint.variable_names() == {}  # name-based TF1 checkpoints have no object graph


def test_values_are_the_trained_arrays_not_garbage(shared_data):
    arrays = TFCheckpoint(shared_data / "spinenet_tpu_ref/ckpt").read_all()
    # SOURCE.md: every BN gamma was drawn from U(0.5, 1.5) and variances are positive.
    gammas = np.concatenate([v for n, v in arrays.items() if n.endswith("/gamma")])
    assert 0.5 <= gammas.min() and gammas.max() <= 1.5 and gammas.std() > 0.2
    assert min(v.min() for n, v in arrays.items() if n.endswith("moving_variance")) > 0
    assert sum(v.size for v in arrays.values()) == 656_922


def test_tf2_object_checkpoint_from_a_directory_with_state_file():
    checkpoint = TFCheckpoint(GARDEN / "spinenet" / "ckpt")
    assert checkpoint.prefix.name == "ckpt-1"
    names = checkpoint.variable_names()  # parsed from the string tensor _CHECKPOINTABLE_OBJECT_GRAPH
    assert names["model/_backbone/layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"] == "conv2d/kernel"
    assert set(names) == set(checkpoint) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert checkpoint.read("save_counter/.ATTRIBUTES/VARIABLE_VALUE") == 1


@pytest.mark.parametrize("name", ["spinenet", "nasfpn"])
def test_tf2_listing_equals_tensorflows_own(name):
    listing = GARDEN / name / "ckpt_variables.tsv.gz"
    checkpoint = TFCheckpoint(GARDEN / name / "ckpt")
    assert {n: (i.shape, i.dtype) for n, i in checkpoint.variables.items()
            if n != "_CHECKPOINTABLE_OBJECT_GRAPH"} == _listing(listing)
    assert checkpoint.variable_names() == {r[0]: r[3] for r in read_listing(listing)}


def _copy(src_prefix: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for path in src_prefix.parent.glob(src_prefix.name + ".*"):
        shutil.copy(path, dst / path.name)
    return dst / src_prefix.name


def test_prefix_file_and_directory_forms_agree(shared_data, tmp_path):
    prefix = _copy(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt", tmp_path / "one")
    for form in (prefix, Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001"), prefix.parent):
        assert resolve_prefix(form) == prefix
    _copy(shared_data / "blitznet_tf_ref/ckpt/blitznet300_x4_r50_w8", tmp_path / "one")
    with pytest.raises(TFCheckpointError, match="expected one TF checkpoint.*blitznet300.*model.ckpt"):
        resolve_prefix(tmp_path / "one")
    (tmp_path / "one" / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n')
    assert resolve_prefix(tmp_path / "one") == prefix
    with pytest.raises(TFCheckpointError, match="no TF checkpoint here"):
        resolve_prefix(tmp_path / "nothing")


def test_truncated_data_shard_is_named(shared_data, tmp_path):
    prefix = _copy(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt", tmp_path)
    data = Path(f"{prefix}.data-00000-of-00001")
    data.write_bytes(data.read_bytes()[:100_000])
    with pytest.raises(TFCheckpointError, match=r"data-00000-of-00001: truncated .*variable '.+' ends at byte"):
        TFCheckpoint(prefix)


def test_truncated_or_corrupt_index_is_named(shared_data, tmp_path):
    prefix = _copy(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt", tmp_path)
    index = Path(f"{prefix}.index")
    original = index.read_bytes()
    index.write_bytes(original[:-100])
    with pytest.raises(TFCheckpointError, match=r"model.ckpt.index: not a TF checkpoint index"):
        TFCheckpoint(prefix)
    corrupt = bytearray(original)
    corrupt[200] ^= 0xFF
    index.write_bytes(bytes(corrupt))
    with pytest.raises(TFCheckpointError, match=r"model.ckpt.index: checksum mismatch"):
        TFCheckpoint(prefix)


def test_corrupt_tensor_bytes_fail_their_checksum(shared_data, tmp_path):
    prefix = _copy(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt", tmp_path)
    checkpoint = TFCheckpoint(prefix)
    info = checkpoint.info("spinenet/conv2d/kernel")
    data = Path(f"{prefix}.data-00000-of-00001")
    raw = bytearray(data.read_bytes())
    raw[info.offset + 10] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(TFCheckpointError, match=r"checksum mismatch for variable 'spinenet/conv2d/kernel'"):
        TFCheckpoint(prefix).read("spinenet/conv2d/kernel")


def test_missing_shard_and_unknown_dtype(shared_data, tmp_path, monkeypatch):
    prefix = _copy(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt", tmp_path)
    Path(f"{prefix}.data-00000-of-00001").unlink()
    with pytest.raises(TFCheckpointError, match=r"model.ckpt.data-00000-of-00001: data shard missing"):
        TFCheckpoint(prefix)
    monkeypatch.delitem(tf_checkpoint.DTYPES, 1)  # pretend float32 were unknown
    with pytest.raises(TFCheckpointError, match=r"model.ckpt.index: variable '.+' has unsupported TF dtype enum 1"):
        TFCheckpoint(shared_data / "spinenet_tpu_ref/ckpt/model.ckpt")
