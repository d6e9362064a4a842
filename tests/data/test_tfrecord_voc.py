"""VOC <-> TFRecords in the BlitzNet authors' layout: `scaledet convert-data voc-to-tfrecord` and
data.format=tfrecord give back identical images, boxes, labels, difficult flags and masks."""
from __future__ import annotations

import numpy as np
import torch
from tfrecord import example_pb2

from scaledet.cli.main import main
from scaledet.data.tfrecord import TFRecordDetection, iter_records
from scaledet.data.voc import VOCDetection
from scaledet.data.voc_files import VOC_CLASSES


def test_voc_round_trip_through_blitznet_layout(shared_data, tmp_path, capsys):
    voc = shared_data / "voc2012_first100"
    # five images with masks (two of them with difficult objects) and two without a mask
    xmls = sorted((voc / "Annotations").glob("*.xml"))
    masked = [p for p in xmls if (voc / "SegmentationClass" / f"{p.stem}.png").exists()]
    difficult = [p.stem for p in masked if "<difficult>1</difficult>" in p.read_text()][:2]
    names = difficult + [p.stem for p in masked if p.stem not in difficult][:3]
    no_mask = [p.stem for p in xmls if p not in masked][:2]
    assert len(difficult) == 2 and len(no_mask) == 2
    split = tmp_path / "split.txt"
    split.write_text("\n".join(names + no_mask) + "\n")
    prefix = tmp_path / "records" / "voc12-train-segmentation"
    assert main(["convert-data", "voc-to-tfrecord", "--root", str(voc), "--split", str(split),
                 "--output", str(prefix), "--shards", "2"]) == 0
    assert "7 images (5 with masks) into 2 shards" in capsys.readouterr().out
    assert sorted(p.name for p in prefix.parent.iterdir()) == [
        "voc12-train-segmentation-00000-of-00002.tfrecord", "voc12-train-segmentation-00001-of-00002.tfrecord"]

    # the authors' keys, as their datasets.py reads them
    shard = prefix.parent / "voc12-train-segmentation-00000-of-00002.tfrecord"
    first = example_pb2.Example.FromString(next(iter_records(shard))[1]).features.feature
    assert {"image/segmentation/encoded", "image/object/difficulty", "image/object/class/label",
            "image/object/bbox/xmin", "image/encoded", "image/filename"} <= set(first.keys())
    assert "image/object/class/text" not in first and min(first["image/object/class/label"].int64_list.value) >= 1

    source = VOCDetection(voc, split=split)
    records = TFRecordDetection(f"{prefix}-*")
    assert records.layout == "blitznet" and len(records) == len(source) == 7
    assert records.class_names == list(VOC_CLASSES)
    by_name = {}
    for i in range(len(records)):
        image, target = records.load_raw(i)
        by_name[target["file_name"]] = (image, target)
    difficult_seen = False
    for i in range(len(source)):
        image, expected = source.load_raw(i)
        got_image, got = by_name[expected["file_name"]]
        assert torch.equal(got_image, image)
        np.testing.assert_allclose(got["boxes"].numpy(), expected["boxes"].numpy(), atol=1e-4)
        assert torch.equal(got["boxes"].round(), expected["boxes"].round())
        assert torch.equal(got["labels"], expected["labels"])
        assert torch.equal(got["difficult"], expected["difficult"])
        assert torch.equal(got["mask"], expected["mask"])
        assert got["image_id"] == expected["image_id"]
        difficult_seen |= bool(expected["difficult"].any())
    assert difficult_seen  # the flags were exercised, not only zeros
    assert all((by_name[f"{n}.jpg"][1]["mask"] == 255).all() for n in no_mask)


def test_factory_trains_from_blitznet_records(shared_data, tmp_path):
    """data.format=tfrecord on the written shards gives VOC classes and masks to the trainer."""
    from scaledet.config import load_config
    from scaledet.data.factory import build_datasets

    voc = shared_data / "voc2012_first100"
    prefix = tmp_path / "voc-train"
    assert main(["convert-data", "voc-to-tfrecord", "--root", str(voc), "--split", "Segmentation/train",
                 "--output", str(prefix)]) == 0
    cfg = load_config(None, ["data.format=tfrecord", f"data.train_pattern={prefix}-*", "data.val_pattern=null"])
    bundle = build_datasets(cfg.data, train=True, val=False)
    assert bundle.class_names[0] == "aeroplane" and len(bundle.class_names) == 20
    _, target = bundle.train.load_raw(0)
    assert 0 < int(target["mask"][target["mask"] != 255].max()) <= 20
