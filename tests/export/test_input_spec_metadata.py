"""The input spec travels through the ONNX metadata into OnnxPredictor unchanged, and both
predictors pre-process alike."""
from __future__ import annotations

import numpy as np
import torch

from scaledet.export.onnx import compare_detections, export_onnx
from scaledet.export.onnx_predictor import OnnxPredictor


def test_onnx_predictor_reads_the_models_spec(family_model, tmp_path):
    model = family_model("blitznet")  # the square resize: the default would be long_side
    path = export_onnx(model, tmp_path / "b.onnx", image_size=160, verify=False)
    predictor = OnnxPredictor(path)
    assert predictor.input_spec == model.input_spec.with_image_size(160)
    assert predictor.input_spec.resize_mode == "square" and predictor.has_mask
    assert predictor.model_name == model.model_name and predictor.class_names == model.class_names
    # pixels within a few levels of BlitzNet's mean: network inputs of unit scale, as the model was
    # calibrated for (full-range noise saturates every score at 1 and ties decide the top 200)
    mean = torch.tensor(model.pixel_mean)[:, None, None] * 255
    noise = torch.randint(-2, 3, (3, 120, 200), generator=torch.Generator().manual_seed(0))
    image = (mean.round() + noise).to(torch.uint8)
    onnx_out = predictor.predict([image], score_threshold=0.3)[0]
    torch_out = model.predict([image], score_threshold=0.3, image_size=160)[0]
    assert len(torch_out["boxes"]) > 0 and onnx_out["masks"].shape == torch_out["masks"].shape == (120, 200)
    assert (onnx_out["masks"] == torch_out["masks"]).float().mean() > 0.999
    # the same detections, matched one to one (equal scores may come out in either order)
    batched = [{"boxes": out["boxes"][None].numpy(), "scores": out["scores"][None].numpy(),
                "labels": out["labels"][None].numpy(), "num_detections": np.array([len(out["boxes"])])}
               for out in (torch_out, onnx_out)]
    assert compare_detections(*batched, box_atol=1e-2) is None
