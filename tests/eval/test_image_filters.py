"""The port's evaluation subset: images with an annotation and without a crowd annotation."""
import json

import pytest
from faster_coco_eval import COCO

from scaledet.eval.image_filters import annotated_non_crowd_image_ids, filtered_image_ids


def test_coco_tiny_val_subset(shared_data):
    path = shared_data / "coco_tiny" / "annotations" / "instances_val2017.json"
    kept = annotated_non_crowd_image_ids(path)
    coco = COCO(str(path))  # the same rule through the COCO API, as the port's create_data asks it
    expected = [i for i in coco.getImgIds()
                if coco.getAnnIds(imgIds=[i], iscrowd=None)
                and not any(a["iscrowd"] for a in coco.loadAnns(coco.getAnnIds(imgIds=[i], iscrowd=None)))]
    assert kept == expected
    crowd_images = {a["image_id"] for a in json.loads(path.read_text())["annotations"] if a["iscrowd"]}
    assert len(crowd_images) > 0 and not crowd_images & set(kept)
    assert len(kept) == 80 - len(crowd_images)  # every coco_tiny image has annotations
    assert filtered_image_ids("annotated_non_crowd", path) == kept
    assert filtered_image_ids("all", path) is None


def test_matches_the_port_eval_mindrecord(shared_data):
    """The port's eval MindRecord of the fixture holds exactly the images the rule keeps."""
    from scaledet.data.mindrecord import MindRecordReader

    folder = shared_data / "nasfpn_mindspore_ref" / "mindrecord"
    reader = MindRecordReader(folder / "retinanet_eval.mindrecord0")
    in_file = sorted(int(reader.read_row(k)["img_id"][0]) for k in range(len(reader)))
    assert sorted(annotated_non_crowd_image_ids(folder / "instances_val2017_subset.json")) == in_file
    # Its training subset has a crowd image (204805), which the eval rule drops.
    assert annotated_non_crowd_image_ids(folder / "instances_train2017_subset.json") == [483330]


def test_class_names_and_unknown_filter():
    data = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
            "categories": [{"id": 5, "name": "cat"}, {"id": 6, "name": "dog"}],
            "annotations": [{"image_id": 1, "category_id": 5, "iscrowd": 0},
                            {"image_id": 2, "category_id": 6, "iscrowd": 0},
                            {"image_id": 3, "category_id": 5, "iscrowd": 0},
                            {"image_id": 3, "category_id": 6, "iscrowd": 1}]}
    assert annotated_non_crowd_image_ids(data) == [1, 2]
    assert annotated_non_crowd_image_ids(data, class_names=["cat"]) == [1]
    with pytest.raises(ValueError, match="unknown image filter 'crowdless'"):
        filtered_image_ids("crowdless", data)


def test_eval_image_filter_narrows_the_set_and_the_scoring(coco_tiny):
    """eval.image_filter through the evaluation set-up: the COCO set loses the crowd images and
    COCO scoring counts only the kept ones (perfect detections on them score AP 1)."""
    from scaledet.config import load_config
    from scaledet.data.factory import build_datasets
    from scaledet.engine.evaluate import select_validation_images
    from scaledet.eval.coco import CocoEvaluator, evaluate_coco

    annotations = coco_tiny / "annotations" / "instances_val2017.json"
    cfg = load_config(None, ["data.format=coco", f"data.val_images={coco_tiny / 'val2017'}",
                             f"data.val_annotations={annotations}", "eval.image_filter=annotated_non_crowd"])
    bundle = build_datasets(cfg.data, train=False, val=True)
    select_validation_images(cfg.eval, bundle)
    kept = annotated_non_crowd_image_ids(annotations)
    assert bundle.val_image_ids == kept and len(bundle.val) == len(kept) < 80
    assert [bundle.val.dataset.image_ids[k] for k in bundle.val.indices] == kept
    data = json.loads(annotations.read_text())
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in data["annotations"] if a["image_id"] in set(kept)]
    assert evaluate_coco(annotations, perfect, image_ids=kept)["AP"] == pytest.approx(1.0)
    assert evaluate_coco(annotations, perfect)["AP"] < 0.99  # the crowd images' objects count as missed
    evaluator = CocoEvaluator(annotations, bundle.label_to_category_id, image_ids=bundle.val_image_ids)
    assert evaluator.summarize([perfect]).metrics["AP"] == pytest.approx(1.0)
