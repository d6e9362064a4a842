"""The synthetic shapes set: deterministic, valid COCO, varied, and reused when unchanged."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from scaledet.data.coco import CocoDetection
from scaledet.data.synthetic import SHAPE_NAMES, SyntheticSpec, make_synthetic_coco


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_coco(tmp_path_factory.mktemp("syn"), num_train=40, num_val=8, seed=0)


def test_deterministic_for_a_seed(tmp_path, synthetic):
    again = make_synthetic_coco(tmp_path / "again", num_train=40, num_val=8, seed=0)
    assert again.train_json.read_text() == synthetic.train_json.read_text()
    assert again.val_json.read_text() == synthetic.val_json.read_text()
    for name in ("000000.jpg", "000017.jpg", "000039.jpg"):
        assert (again.train_images / name).read_bytes() == (synthetic.train_images / name).read_bytes()
    other = make_synthetic_coco(tmp_path / "other", num_train=4, num_val=1, seed=1)
    assert (other.train_images / "000000.jpg").read_bytes() != \
        (synthetic.train_images / "000000.jpg").read_bytes()
    # An image depends on (seed, split, index) only, not on how many were asked for.
    assert json.loads(other.train_json.read_text())["images"][0]["file_name"] == "000000.jpg"
    fewer = make_synthetic_coco(tmp_path / "fewer", num_train=3, num_val=1, seed=0)
    assert (fewer.train_images / "000002.jpg").read_bytes() == \
        (synthetic.train_images / "000002.jpg").read_bytes()


def test_loads_in_coco_detection(synthetic):
    ds = CocoDetection(synthetic.train_images, synthetic.train_json)
    assert len(ds) == 40 and ds.class_names == list(SHAPE_NAMES)
    assert ds.num_clipped_boxes == 0 and ds.num_dropped_boxes == 0
    image, target = ds[3]
    assert image.shape == (3, 256, 256)
    assert len(target["boxes"]) >= 1 and not target["iscrowd"].any()


def test_ground_truth_scores_perfectly_in_faster_coco_eval(synthetic):
    from faster_coco_eval import COCO, COCOeval_faster

    gt = COCO(str(synthetic.val_json))
    assert len(gt.getImgIds()) == 8 and len(gt.getCatIds()) == len(SHAPE_NAMES)
    detections = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                   "score": 1.0} for a in gt.dataset["annotations"]]
    evaluator = COCOeval_faster(gt, gt.loadRes(detections), "bbox", print_function=lambda *a: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    assert evaluator.stats[0] == pytest.approx(1.0)


def test_objects_vary_in_size_class_and_count(synthetic):
    data = json.loads(synthetic.train_json.read_text())
    anns = data["annotations"]
    sides = np.array([max(a["bbox"][2], a["bbox"][3]) for a in anns])
    assert sides.min() < 24 and sides.min() >= 10      # small, but not tiny
    assert sides.max() > 100                           # up to about half the image
    per_image = np.bincount([a["image_id"] for a in anns], minlength=41)[1:]
    assert per_image.min() >= 1 and per_image.mean() >= 2.5
    assert set(a["category_id"] for a in anns) == set(range(1, len(SHAPE_NAMES) + 1))
    for a in anns:
        x, y, w, h = a["bbox"]
        assert x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
        assert 0 < a["area"] <= w * h and a["iscrowd"] == 0


def test_polygons_in_order_reproduce_visible_areas(synthetic):
    data = json.loads(synthetic.train_json.read_text())
    for image_id in (1, 2, 3, 4):
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        owner = _owner_map(anns)
        for k, a in enumerate(anns):
            visible = owner == k
            # Polygon vertices were rounded to 0.01 px, so edges may move by a pixel here and there.
            assert abs(int(visible.sum()) - a["area"]) <= 0.05 * a["area"] + 4
            ys, xs = np.nonzero(visible)
            x, y, w, h = a["bbox"]
            assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
            assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1


def _owner_map(anns: list[dict], size: int = 256) -> np.ndarray:
    canvas = Image.new("I", (size, size), -1)
    draw = ImageDraw.Draw(canvas)
    for k, a in enumerate(anns):
        flat = a["segmentation"][0]
        draw.polygon(list(zip(flat[0::2], flat[1::2])), fill=k)
    return np.asarray(canvas)


def test_shapes_stand_out_from_a_textured_background(synthetic):
    """Each shape's colour differs clearly from the background right around it."""
    data = json.loads(synthetic.train_json.read_text())
    distances = []
    for image_id in range(1, 11):
        image = np.asarray(Image.open(synthetic.train_images / f"{image_id - 1:06d}.jpg"), np.float32)
        assert image.std() > 20  # textured, not flat
        anns = [a for a in data["annotations"] if a["image_id"] == image_id]
        owner = _owner_map(anns)
        for k, a in enumerate(anns):
            x, y, w, h = (int(v) for v in a["bbox"])
            y0, y1, x0, x1 = max(y - 4, 0), min(y + h + 4, 256), max(x - 4, 0), min(x + w + 4, 256)
            around = owner[y0:y1, x0:x1] == -1
            if around.sum() < 20:
                continue
            inside = np.median(image[owner == k], axis=0)
            background = np.median(image[y0:y1, x0:x1][around], axis=0)
            distances.append(np.linalg.norm(inside - background))
    distances = np.array(distances)
    assert len(distances) >= 20
    assert np.mean(distances > 40) >= 0.9


def test_existing_folder_is_reused_and_spec_is_validated(tmp_path):
    paths = make_synthetic_coco(tmp_path, num_train=2, num_val=1, image_size=64, seed=3)
    stamp = paths.train_json.stat().st_mtime_ns
    make_synthetic_coco(tmp_path, num_train=2, num_val=1, image_size=64, seed=3)
    assert paths.train_json.stat().st_mtime_ns == stamp
    changed = make_synthetic_coco(tmp_path, num_train=3, num_val=1, image_size=64, seed=3)
    assert len(json.loads(changed.train_json.read_text())["images"]) == 3
    png = make_synthetic_coco(tmp_path / "png", num_train=1, num_val=1, image_size=64,
                              spec=SyntheticSpec(image_format="png", class_names=("circle", "star")))
    assert (png.train_images / "000000.png").is_file() and png.class_names == ("circle", "star")
    with pytest.raises(ValueError, match="unknown shapes"):
        SyntheticSpec(class_names=("circle", "hexagon"))
