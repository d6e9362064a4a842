"""The app in process (uvicorn on a thread, loopback): BlitzNet's mask, the ONNX Runtime backend, and
batches whose images need different canvases."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
import httpx
from PIL import Image

from scaledet.data.images import load_image
from scaledet.registry import create_model
from scaledet.serve import ServedModel, create_app


def upload(url: str, path) -> dict:
    response = httpx.post(url + "/v1/predict", files={"image": (path.name, path.read_bytes())}, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def test_blitznet_mask_is_a_png_of_predict_mask(serve_app, coco_images, assert_same_detections):
    torch.manual_seed(0)
    model = create_model("blitznet_tiny", num_classes=3, class_names=["circle", "square", "triangle"]).eval()
    served = ServedModel(model, "torch")
    served.warm_up()
    assert served.has_mask
    with serve_app(create_app(served)) as url:
        assert httpx.get(url + "/v1/model").json()["has_mask"] is True
        for path in coco_images[:2]:
            body = upload(url, path)
            expected = model.predict(path)[0]
            assert_same_detections(body, expected)
            assert body["mask"]["format"] == "png" and body["mask"]["encoding"] == "base64"
            mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"]["data"]))))
            assert mask.shape == (body["image"]["height"], body["image"]["width"])
            assert np.array_equal(mask, expected["masks"].numpy())
            assert len(np.unique(mask)) > 1  # a real segmentation, not an empty canvas


def test_onnxruntime_backend_matches_onnx_predictor(serve_app, tmp_path, reference_model, coco_images,
                                                    assert_same_detections):
    from scaledet.export.onnx import export_onnx
    from scaledet.export.onnx_predictor import OnnxPredictor

    path = export_onnx(reference_model, tmp_path / "tiny.onnx", image_size=256, dynamic_batch=True, verify=False)
    served = ServedModel.load(onnx=str(path))
    served.warm_up()
    assert served.backend == "onnxruntime" and served.class_names == ["circle", "square", "triangle"]
    reference = OnnxPredictor(path)
    with serve_app(create_app(served)) as url:
        info = httpx.get(url + "/v1/model").json()
        assert info["backend"] == "onnxruntime" and info["name"] == "retinanet_spinenet49_tiny"
        for image in coco_images[:2]:
            assert_same_detections(upload(url, image), reference.predict(image)[0])
    # a gathered batch through the graph equals one image at a time
    images = [load_image(p) for p in coco_images[:3]]
    for got, image in zip(served.predict_batch(images), images):
        want = reference.predict(image)[0]
        assert torch.allclose(got["boxes"], want["boxes"], atol=1e-3) and torch.equal(got["labels"], want["labels"])


def test_mixed_canvases_each_get_their_own_result(reference_model):
    served = ServedModel(reference_model, "torch")
    rng = np.random.default_rng(0)
    shapes = [(480, 640), (150, 600), (600, 150), (300, 310), (100, 620)]
    images = [torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)) for h, w in shapes]
    canvases = {served.canvas(h, w) for h, w in shapes}
    assert canvases == {(256, 256), (128, 256), (256, 128)}
    batched = served.predict_batch(images)
    for image, got in zip(images, batched):
        want = reference_model.predict(image)[0]
        assert torch.allclose(got["boxes"], want["boxes"], atol=1e-4) and torch.equal(got["labels"], want["labels"])
        assert torch.allclose(got["scores"], want["scores"], atol=1e-5)


def test_load_refuses_mismatched_sources(tiny_checkpoint):
    with pytest.raises(ValueError, match="exactly one"):
        ServedModel.load()
    with pytest.raises(ValueError, match="give --onnx MODEL.onnx"):
        ServedModel.load(checkpoint=str(tiny_checkpoint), backend="onnxruntime")
    with pytest.raises(ValueError, match="unknown backend"):
        ServedModel(object(), "tensorrt")
