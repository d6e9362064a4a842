"""MindRecord reading without MindSpore: the NAS-FPN port's fixture sets against their COCO JSON."""
import json
import pickle
import shutil
import subprocess

import numpy as np
import pytest
import torch

from scaledet.data.images import load_image
from scaledet.data.input_spec import InputSpec
from scaledet.data.mindrecord import MindRecordError, MindRecordReader, read_shard_header, uncompress_ints
from scaledet.data.mindrecord_dataset import MindRecordDetection, PORT_COCO_CLASSES

FIXTURE = "nasfpn_mindspore_ref"
SETS = {"retinanet_eval.mindrecord": "val2017", "retinanet.mindrecord": "train2017"}


@pytest.fixture(scope="module")
def ref(shared_data):
    return shared_data / FIXTURE


def _port_rows(json_path):
    """The port's annotation rows per image id, from the COCO JSON by its create_data rule."""
    data = json.loads(json_path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    rows = {img["id"]: [] for img in data["images"]}
    for ann in data["annotations"]:
        x, y, w, h = ann["bbox"]
        rows[ann["image_id"]].append([round(y), round(x), round(y + h), round(x + w),
                                      PORT_COCO_CLASSES.index(names[ann["category_id"]])])
    files = {img["id"]: img["file_name"] for img in data["images"]}
    return rows, files, names


@pytest.mark.parametrize("prefix", sorted(SETS))
@pytest.mark.parametrize("index", ["db", "pages"])
def test_rows_equal_coco_json(ref, shared_data, prefix, index):
    split = SETS[prefix]
    rows, files, _ = _port_rows(ref / "mindrecord" / f"instances_{split}_subset.json")
    reader = MindRecordReader(ref / "mindrecord" / f"{prefix}0", index=index)
    assert len(reader.headers) == 8 and len(reader) == 2
    seen = {}
    for k in range(len(reader)):
        row = reader.read_row(k)
        image_id = int(row["img_id"][0])
        assert row["image"] == (shared_data / "coco_tiny" / split / files[image_id]).read_bytes()
        assert row["annotation"].dtype == np.int32 and row["annotation"].shape[1] == 5
        seen[image_id] = row["annotation"].tolist()
    assert seen == rows


@pytest.mark.parametrize("prefix", sorted(SETS))
def test_detection_items_equal_coco_json(ref, shared_data, prefix):
    split = SETS[prefix]
    json_path = ref / "mindrecord" / f"instances_{split}_subset.json"
    rows, files, names = _port_rows(json_path)
    dataset = MindRecordDetection(ref / "mindrecord" / f"{prefix}0", categories_json=json_path)
    assert dataset.num_classes == 80 and dataset.class_names == list(PORT_COCO_CLASSES[1:])
    assert sorted(names) == sorted(dataset.label_to_category_id)
    assert MindRecordDetection(ref / "mindrecord" / f"{prefix}0").label_to_category_id == \
        dataset.label_to_category_id  # built-in COCO 2017 table = the json's
    for k in range(len(dataset)):
        image, target = dataset.load_raw(k)
        image_id = target["image_id"]
        assert torch.equal(image, load_image(shared_data / "coco_tiny" / split / files[image_id]))
        expected = np.array(rows[image_id], np.float32)
        assert target["boxes"].tolist() == expected[:, [1, 0, 3, 2]].tolist()
        categories = [dataset.label_to_category_id[int(l)] for l in target["labels"]]
        assert [names[c] for c in categories] == [PORT_COCO_CLASSES[int(i)] for i in expected[:, 4]]
        assert target["orig_size"] == tuple(image.shape[-2:]) and not target["iscrowd"].any()
    # Rank/worker splitting is the sampler's: every row is addressable and the set pickles for workers.
    clone = pickle.loads(pickle.dumps(dataset))
    parts = [list(torch.utils.data.DistributedSampler(clone, num_replicas=2, rank=r, shuffle=False))
             for r in range(2)]
    assert sorted(parts[0] + parts[1]) == [0, 1]


def test_default_layout_tarball_reads_the_same_rows(ref, tmp_path):
    if shutil.which("tar") is None or b"GNU tar" not in subprocess.run(["tar", "--version"],
                                                                       capture_output=True).stdout:
        pytest.skip("GNU tar is needed for the sparse tarball")
    subprocess.run(["tar", "-xzf", str(ref / "mindrecord_default_layout.tar.gz"), "-C", str(tmp_path)], check=True)
    for prefix in SETS:
        small = MindRecordReader(ref / "mindrecord" / f"{prefix}0")
        expected = {int(r["img_id"][0]): r for r in map(small.read_row, range(len(small)))}
        for index in ("db", "pages"):
            big = MindRecordReader(tmp_path / "mr_default" / f"{prefix}0", index=index)
            assert big.headers[0].page_size == 32 << 20 and big.headers[0].header_size == 16 << 20
            got = {int(r["img_id"][0]): r for r in map(big.read_row, range(len(big)))}
            assert sorted(got) == sorted(expected)
            for image_id, row in got.items():
                assert row["image"] == expected[image_id]["image"]
                assert np.array_equal(row["annotation"], expected[image_id]["annotation"])


def _copy_set(ref, tmp_path, prefix="retinanet_eval.mindrecord"):
    for path in (ref / "mindrecord").glob(f"{prefix}*"):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return tmp_path / f"{prefix}0"


def _shard_with_rows(first):
    return next(h.path for h in MindRecordReader(first).headers if h.pages)


def _one_line(err, path):
    message = str(err.value)
    assert "\n" not in message and str(path) in message, message
    return message


def test_missing_index_says_how_to_read_without_it(ref, tmp_path):
    first = _copy_set(ref, tmp_path)
    shard = _shard_with_rows(first)
    shard.with_name(shard.name + ".db").unlink()
    with pytest.raises(MindRecordError) as err:
        MindRecordDetection(first)
    message = _one_line(err, shard)
    assert ".db is missing" in message and "index='pages'" in message
    assert len(MindRecordDetection(first, index="pages")) == 2


def test_truncated_and_corrupt_shards(ref, tmp_path):
    first = _copy_set(ref, tmp_path)
    shard = _shard_with_rows(first)
    data = shard.read_bytes()
    base = read_shard_header(first).header_size
    shard.write_bytes(data[: base + 1000])  # cut inside the first row of page 0
    for index in ("db", "pages"):
        with pytest.raises(MindRecordError) as err:
            MindRecordReader(first, index=index)
        assert "truncated MindRecord file" in _one_line(err, shard)
    # Corrupt pages: the first row's first (big-endian) field length, then its own length, too large.
    for where, message in ((base + 8, "corrupt row: field"), (base, "corrupt row: its length field")):
        broken = bytearray(data)
        broken[where:where + 8] = (10 ** 9).to_bytes(8, "big")
        shard.write_bytes(bytes(broken))
        dataset = MindRecordDetection(first)
        with pytest.raises(MindRecordError) as err:
            for k in range(len(dataset)):
                dataset.load_raw(k)
        assert message in _one_line(err, shard)
    with pytest.raises(MindRecordError) as err:
        MindRecordReader(first, index="pages")
    assert "corrupt blob page 0" in _one_line(err, shard)


def test_not_a_mindrecord_and_cut_header(ref, tmp_path):
    fake = tmp_path / "fake.mindrecord0"
    fake.write_bytes((ref / "nasfpn_narrow.ckpt").read_bytes()[:4096])
    with pytest.raises(MindRecordError) as err:
        MindRecordReader(fake)
    assert "not a MindRecord file" in _one_line(err, fake)
    first = _copy_set(ref, tmp_path)
    first.write_bytes(first.read_bytes()[:100])
    with pytest.raises(MindRecordError) as err:
        MindRecordReader(first)
    assert "truncated MindRecord file: the header needs" in _one_line(err, first)


def test_uncompress_ints_all_widths_and_signs():
    values = [0, -1, 127, -128, 300, -40000, 2 ** 31 - 1, -(2 ** 40)]
    widths = [1, 1, 1, 1, 2, 4, 4, 8]
    code_of = {1: 0, 2: 1, 4: 2, 8: 3}
    codes = [code_of[w] for w in widths]
    packed = bytes(sum(c << (6 - 2 * j) for j, c in enumerate(codes[i:i + 4])) for i in range(0, len(codes), 4))
    body = b"".join(v.to_bytes(w, "little", signed=True) for v, w in zip(values, widths))
    encoded = len(values).to_bytes(4, "big") + packed + body
    assert uncompress_ints(encoded, np.dtype("int64"), "test").tolist() == values
    with pytest.raises(MindRecordError, match="size codes need"):
        uncompress_ints(encoded[:-1], np.dtype("int64"), "test")
    # The fixture's example: img_id 333956 as one 4-byte value.
    assert uncompress_ints(bytes.fromhex("000000018084180500"), np.dtype("int32"), "x").tolist() == [333956]


def test_factory_builds_mindrecord_sets_with_the_port_augmentation(ref):
    from scaledet.config import DataConfig
    from scaledet.data.factory import build_datasets
    from scaledet.data.port_transforms import PortIoUCropTransform

    folder = ref / "mindrecord"
    cfg = DataConfig(format="mindrecord", train_pattern=str(folder / "retinanet.mindrecord0"),
                     val_pattern=str(folder / "retinanet_eval.mindrecord0"),
                     val_annotations=str(folder / "instances_val2017_subset.json"), augment="port_iou_crop")
    bundle = build_datasets(cfg)
    assert len(bundle.train) == len(bundle.val) == 2 and len(bundle.class_names) == 80
    assert bundle.val_annotations == folder / "instances_val2017_subset.json"

    class Model:  # what set_transforms reads from a detector
        input_spec = InputSpec(64, (0.5,) * 3, (0.25,) * 3, resize_mode="square")

    bundle.set_transforms(cfg, Model())
    assert isinstance(bundle.train.transforms, PortIoUCropTransform)
    image, target = bundle.train[0]
    assert image.shape == (3, 64, 64) and len(target["boxes"]) == len(target["labels"])
    image, target = bundle.val[0]
    assert image.shape == (3, 64, 64) and target["image_id"] in (223747, 333956)
