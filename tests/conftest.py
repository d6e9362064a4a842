import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SCALEDET_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared test data not found at {SHARED_DATA}")
    return SHARED_DATA


def _shared_folder(shared_data: Path, name: str, must_hold: str) -> Path:
    root = shared_data / name
    if not (root / must_hold).exists():
        pytest.skip(f"{root / must_hold} not available")
    return root


@pytest.fixture(scope="session")
def coco_tiny(shared_data: Path) -> Path:
    """The coco_tiny subset (see its SOURCE.md)."""
    return _shared_folder(shared_data, "coco_tiny", "annotations/instances_train2017.json")


@pytest.fixture(scope="session")
def voc100(shared_data: Path) -> Path:
    """voc2012_first100: the first 100 VOC2012 trainval images, XML and 93 class masks."""
    return _shared_folder(shared_data, "voc2012_first100", "Annotations")


@pytest.fixture(scope="session")
def coco_eval_vectors(shared_data: Path) -> Path:
    """cocoapi's published fake-result vectors and their ground truth."""
    return _shared_folder(shared_data, "coco_eval_vectors", "gt")


@pytest.fixture(scope="session")
def published_coco_stats() -> dict[str, tuple[float, ...]]:
    """iou_type -> the 12 statistics cocoapi publishes for coco_eval_vectors' fake results
    (cocoapi results/val2014_fake_eval_res.txt; full precision in faster_coco_eval's tests)."""
    return {
        "bbox": (0.5045806987249628, 0.6969727247299577, 0.5729816669904824, 0.5856257209410443,
                 0.5193996948036719, 0.5013978986347466, 0.38681277964578054, 0.5936795762842003,
                 0.595352982877607, 0.6398109626113442, 0.5664205978994309, 0.5642905982905982),
        "segm": (0.3195452758576433, 0.5622883972521636, 0.29892653412086784, 0.3873740315997838,
                 0.31018272403369485, 0.3269339071005138, 0.2682297225711534, 0.41544868114906375,
                 0.4168394992198818, 0.4694498622754236, 0.37675922666197265, 0.3814715099715099),
    }


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    per-image work runs on one thread in a DataLoader worker anyway, and on the shared 2-core
    machine two threads stall on each other (small ops up to 50x slower under load); ONNX Runtime
    sessions made by scaledet follow torch's thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def assert_png():
    """``assert_png(path, (width, height))``: a PNG of that size with something drawn on it."""
    import numpy as np
    from PIL import Image

    def check(path: Path, size: tuple[int, int]) -> None:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size, (path, image.size)
            pixels = np.asarray(image.convert("L"))
        assert pixels.std() > 5, path  # lines and text, not a blank canvas

    return check
