"""ONNX export of a whole detector: network + post-processing (decode, NMS, padding) in one graph.

Graph inputs: ``images float32 [B,3,H,W]`` (normalised and zero-padded at bottom/right, as
``collate`` makes them) and ``image_sizes int64 [B,2]`` (the valid ``(h, w)`` of each image).
Outputs: ``boxes [B,K,4]``, ``scores [B,K]``, ``labels [B,K]`` (-1 = empty slot),
``num_detections [B]`` and, for models that segment (``has_mask``), ``mask [B,H,W]`` and the
head's low-resolution ``mask_logits [B,C+1,h,w]``.
Everything the predictor needs (the model's input spec at the exported size, class names,
label map) is stored in the file's ``metadata_props`` under ``scaledet.*`` keys, one key per
input-spec field.

Only the batch dimension can be left free: H = W = ``image_size`` are fixed, and values read
from shapes while tracing (anchor grids, BlitzNet's padded input size) become constants.
Whether a free batch really works is checked by running the graph at two batch sizes.

Exporter: the TorchScript-based ``torch.onnx.export(..., dynamo=False)``. The default
torch.export-based exporter cannot take our post-processing: the number of score-threshold
survivors is data dependent and ``torchvision.ops.batched_nms`` branches on it (``numel() >
4000``), which torch.export refuses to guard on; the TorchScript exporter maps ``batched_nms``
onto ONNX ``NonMaxSuppression`` (torchvision registers that symbolic).
"""
from __future__ import annotations

import copy
import json
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn

import scaledet
from scaledet.errors import ExportError
from scaledet.export.fuse import fuse_conv_bn
from scaledet.models.detectors.base import Detector
from scaledet.utils.atomic import atomic_path

DETECTION_OUTPUTS = ("boxes", "scores", "labels", "num_detections")
INPUT_NAMES = ("images", "image_sizes")
MIN_OPSET = 11  # NonMaxSuppression
MAX_OPSET = int(getattr(getattr(torch.onnx, "_constants", None), "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", 20))
DEFAULT_OPSET = 17
META_PREFIX = "scaledet."
# parity bounds used by the post-export check (and the tests)
BOX_ATOL = 1e-3
# float32 rounding in a decoded box grows with its coordinates (and with exp of the size deltas):
# a box may also differ by this fraction of its largest coordinate (0.026 px at 256 px). An
# export bug moves boxes by pixels, far beyond either bound.
BOX_RTOL = 1e-4
SCORE_ATOL = 1e-4
MASK_AGREEMENT = 0.999

__all__ = ["ExportError", "DetectionGraph", "export_onnx", "export_metadata", "read_metadata", "check_export_options",
           "compare_detections", "example_inputs", "torch_reference", "run_onnx", "ort_session", "verify_export"]


class DetectionGraph(nn.Module):
    """``model.forward`` + ``model.postprocess`` with tensor inputs and a tuple of tensor outputs."""

    def __init__(self, model: Detector):
        super().__init__()
        self.model = model

    def output_names(self) -> tuple[str, ...]:
        # mask_logits (the head's low-resolution logits) let predictors make the reference label
        # map at the original image size (scaledet.data.prediction.unpack_detections)
        return DETECTION_OUTPUTS + (("mask", "mask_logits") if self.model.has_mask else ())

    def forward(self, images: torch.Tensor, image_sizes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        post = self.model.postprocess(self.model(images), image_sizes)
        return tuple(post[name] for name in self.output_names())


def check_export_options(model: Detector, image_size: int, batch_size: int, opset: int | None) -> int:
    """Refuse what the graph could not honour; returns the opset to use."""
    divisor = model.input_spec.size_divisor
    if not isinstance(image_size, int) or image_size <= 0:
        raise ExportError(f"image size must be a positive integer, got {image_size!r}")
    if image_size % divisor:
        below, above = (image_size // divisor) * divisor, math.ceil(image_size / divisor) * divisor
        raise ExportError(f"image size {image_size} is not a multiple of {model.model_name}'s size divisor "
                          f"{divisor}; use {below or above} or {above}")
    if batch_size < 1:
        raise ExportError(f"batch size must be at least 1, got {batch_size}")
    if opset is None:
        return DEFAULT_OPSET
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported: the graph needs NonMaxSuppression (opset >= {MIN_OPSET}) "
                          f"and this torch exports at most opset {MAX_OPSET}")
    return opset


def export_metadata(model: Detector, *, image_size: int, batch_size: int, dynamic_batch: bool, opset: int,
                    fused: bool) -> dict[str, str]:
    post = model.postprocessor
    values = {
        "model_name": model.model_name,
        "class_names": model.class_names,
        "num_classes": int(model.num_classes),
        **model.input_spec.with_image_size(image_size).to_dict(),
        "batch_size": None if dynamic_batch else batch_size,
        "has_mask": model.has_mask,
        "score_threshold": None if post is None else post.score_threshold,
        "max_detections": None if post is None else post.max_detections,
        "label_to_category_id": model.label_to_category_id,
        "fused_batch_norm": fused,
        "opset": opset,
        "exporter": "torchscript",
        "scaledet_version": scaledet.__version__,
    }
    return {META_PREFIX + key: json.dumps(value) for key, value in values.items()}


def read_metadata(model_proto_or_map) -> dict:
    """``scaledet.*`` metadata of an ONNX model (proto or ORT ``custom_metadata_map``), decoded."""
    if isinstance(model_proto_or_map, onnx.ModelProto):
        pairs = {p.key: p.value for p in model_proto_or_map.metadata_props}
    else:
        pairs = dict(model_proto_or_map)
    return {k[len(META_PREFIX):]: json.loads(v) for k, v in pairs.items() if k.startswith(META_PREFIX)}


def example_inputs(image_size: int, batch_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, image_size, image_size, generator=generator)
    sizes = torch.tensor([[image_size, image_size]] * batch_size, dtype=torch.int64)
    return images, sizes


def compare_detections(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], *,
                       box_atol: float = BOX_ATOL, score_atol: float = SCORE_ATOL,
                       mask_agreement: float = MASK_AGREEMENT) -> str | None:
    """None when both fixed-size outputs hold the same detections; else what differs."""
    for i in range(len(expected["num_detections"])):
        n, m = int(expected["num_detections"][i]), int(actual["num_detections"][i])
        if n != m:
            return f"image {i}: {n} detections in PyTorch, {m} in ONNX Runtime"
        problem = _match_detections(expected, actual, i, n, box_atol, score_atol)
        if problem:
            return f"image {i}: {problem}"
    if "mask" in expected:
        agreement = float((expected["mask"] == actual["mask"]).mean())
        if agreement < mask_agreement:
            return f"masks agree on {agreement:.4%} of pixels (need {mask_agreement:.1%})"
    return None


def _match_detections(expected: dict, actual: dict, i: int, n: int, box_atol: float, score_atol: float) -> str | None:
    """One-to-one match of detection k in ``expected`` to one in ``actual`` with the same label,
    score within ``score_atol`` and box within ``box_atol``. Slots are compared as a set, not in
    order: two scores equal to float precision may come out of either NMS in either order."""
    e_boxes, e_scores, e_labels = expected["boxes"][i, :n], expected["scores"][i, :n], expected["labels"][i, :n]
    a_boxes, a_scores, a_labels = actual["boxes"][i, :n], actual["scores"][i, :n], actual["labels"][i, :n]
    used = np.zeros(n, dtype=bool)
    magnitudes = np.abs(e_boxes).max(axis=1, initial=0.0)
    for k in range(n):
        box_tol = box_atol + BOX_RTOL * float(magnitudes[k])
        close = (~used & (a_labels == e_labels[k]) & (np.abs(a_scores - e_scores[k]) <= score_atol)
                 & (np.abs(a_boxes - e_boxes[k]).max(axis=1, initial=0.0) <= box_tol))
        if not close.any():
            return _no_counterpart(k, e_boxes[k], e_scores[k], e_labels[k], a_boxes, a_scores, a_labels, used,
                                   box_tol, score_atol)
        used[int(np.argmax(close))] = True
    return None


def _no_counterpart(k: int, box, score, label, a_boxes, a_scores, a_labels, used, box_atol: float,
                    score_atol: float) -> str:
    """Why PyTorch detection ``k`` matches no ONNX Runtime detection: the nearest one (by box,
    then score) and each test it fails, or that its match was already taken by another."""
    box_off = np.abs(a_boxes - box).max(axis=1, initial=0.0)
    score_off = np.abs(a_scores - score)
    nearest = int(np.lexsort((score_off, box_off))[0])
    fails = []
    if a_labels[nearest] != label:
        fails.append(f"label {int(a_labels[nearest])} instead of {int(label)}")
    if score_off[nearest] > score_atol:
        fails.append(f"score off by {float(score_off[nearest]):.2e} (allowed {score_atol:g})")
    if box_off[nearest] > box_atol:
        fails.append(f"box off by {float(box_off[nearest]):.2e} px (allowed {box_atol:.2e})")
    if not fails and used[nearest]:
        fails.append("it already matched another PyTorch detection (the two outputs hold a different number of "
                     "copies of this detection)")
    return (f"PyTorch detection {k} (label {int(label)}, score {float(score):.6f}) has no counterpart in ONNX "
            f"Runtime's output; the nearest ONNX detection {nearest}: {'; '.join(fails)}")


def torch_reference(model: Detector, images: torch.Tensor, sizes: torch.Tensor) -> dict[str, np.ndarray]:
    graph = DetectionGraph(model).eval()
    with torch.inference_mode():
        outputs = graph(images, sizes)
    return {name: out.cpu().numpy() for name, out in zip(graph.output_names(), outputs)}


def run_onnx(session, images: torch.Tensor, sizes: torch.Tensor) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    feed = {"images": images.numpy(), "image_sizes": sizes.numpy()}
    # a graph that never reads image_sizes has that input pruned by the exporter
    outputs = session.run(names, {i.name: feed[i.name] for i in session.get_inputs()})
    return dict(zip(names, outputs))


def ort_session(path: str | Path, providers=None, threads: int | None = None, spin: bool = True):
    """An ONNX Runtime session using as many intra-op threads as torch does (default).
    ``spin=False`` stops its idle threads spin-waiting after each run: needed when PyTorch runs
    in the same process between ONNX Runtime calls (benchmarks), which would otherwise share
    the cores with spinning threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=list(providers or ["CPUExecutionProvider"]))


def verify_export(path: Path, model: Detector, image_size: int, batch_sizes: list[int]) -> None:
    session = ort_session(path)
    for batch in batch_sizes:
        images, sizes = example_inputs(image_size, batch, seed=batch)
        try:
            actual = run_onnx(session, images, sizes)
        except Exception as err:  # noqa: BLE001 - ORT raises its own exception types
            raise ExportError(f"ONNX Runtime cannot run the exported graph at batch {batch}: "
                              f"{str(err).splitlines()[0]}") from err
        problem = compare_detections(torch_reference(model, images, sizes), actual)
        if problem:
            raise ExportError(f"exported graph disagrees with PyTorch at batch {batch}: {problem}")


def export_onnx(model: Detector, path: str | Path, *, image_size: int, batch_size: int = 1,
                dynamic_batch: bool = False, opset: int | None = None, fuse_bn: bool = True,
                verify: bool = True) -> Path:
    """Write ``model`` (forward + post-processing) to ``path`` as ONNX for ``image_size`` squares.

    ``batch_size`` is the traced batch; with ``dynamic_batch`` the batch dimension is left free
    (checked by running ONNX Runtime at two batch sizes). BatchNorm is folded into convolutions
    first unless ``fuse_bn=False``. With ``verify`` (default) ONNX Runtime's output is compared
    with the unmodified PyTorch model and a disagreement raises :class:`ExportError` instead of
    leaving a silently different model behind. The file is written and checked under a temporary
    name and only then renamed onto ``path``: a failed check or a full disk leaves whatever was
    at ``path`` before untouched (scaledet/utils/atomic.py).
    """
    opset = check_export_options(model, image_size, batch_size, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    reference = model.eval() if _on_cpu(model) else copy.deepcopy(model).to("cpu").eval()
    try:
        with atomic_path(path) as tmp:
            _export_and_check(reference, tmp, image_size=image_size, batch_size=batch_size,
                              dynamic_batch=dynamic_batch, opset=opset, fuse_bn=fuse_bn, verify=verify)
    finally:
        model.train(was_training)
    return path


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])


def _export_and_check(reference: Detector, path: Path, *, image_size: int, batch_size: int, dynamic_batch: bool,
                      opset: int, fuse_bn: bool, verify: bool) -> None:
    graph_model = fuse_conv_bn(reference) if fuse_bn else reference
    graph = DetectionGraph(graph_model).eval()
    names = graph.output_names()
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {name: {0: "batch"} for name in INPUT_NAMES + names}
    images, sizes = example_inputs(image_size, batch_size)
    with warnings.catch_warnings():
        # Tracing warns about every Python int taken from a shape; with fixed H, W those are
        # constants by design, and the dynamic-batch claim is checked by running the graph.
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(graph, (images, sizes), str(path), dynamo=False, opset_version=opset,
                              input_names=list(INPUT_NAMES), output_names=list(names),
                              dynamic_axes=dynamic_axes, do_constant_folding=True)
    proto = onnx.load(str(path))
    meta = export_metadata(reference, image_size=image_size, batch_size=batch_size, dynamic_batch=dynamic_batch,
                           opset=opset, fused=fuse_bn)
    onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **meta})
    onnx.save(proto, str(path))
    if verify:
        batches = [batch_size] + ([batch_size + 1] if dynamic_batch else [])
        try:
            verify_export(path, reference, image_size, batches)
        except ExportError as err:
            if dynamic_batch and "at batch" in str(err) and f"batch {batch_size}:" not in str(err):
                raise ExportError(f"{reference.model_name} cannot be exported with a dynamic batch: {err}") \
                    from err
            raise
