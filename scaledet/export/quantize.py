"""Static int8 quantisation of an exported detector with ONNX Runtime (QDQ format), with a
measured per-layer fall-back to fp32.

1. The fp32 export (:func:`scaledet.export.onnx.export_onnx`: BatchNorm folded, NMS in the
   graph, checked against PyTorch) is prepared with ONNX Runtime's ``quant_pre_process`` (graph
   optimisation; its symbolic shape inference cannot follow the data-dependent NMS, so it is
   skipped).
2. Calibration images (a folder, or the training split a config names) go through exactly the
   fp32 path's pre-processing (``OnnxPredictor``: decode, evaluation resize, normalise, pad).
   ``quantize_static`` collects the activation ranges once (cached), then writes QDQ models:
   per-channel int8 weights, uint8 activations (the u8s8 pair ONNX Runtime recommends on x86).
   Only the network is quantised (nodes under the model's backbone/neck/head scopes);
   decoding, score threshold and NMS stay fp32.
3. Sensitivity: the network's outputs (the convolutions whose results reach no other
   convolution: the class and box predictors) are compared with fp32 on probe images. Each
   group of nodes (a backbone block, a neck, a head tower, a predictor) is quantised *alone*
   and its error measured; groups are then returned to fp32 in order of measured error until
   the fully quantised model's error is within ``tolerance`` (or ``max_fallback`` groups are
   out). The groups kept in fp32, every measured error and the calibration facts go into the
   file's ``scaledet.int8`` metadata.

The error of a set of outputs is their quantisation noise relative to the signal: the mean
over output tensors of ``mean((int8 - fp32)^2) / var(fp32)`` (its inverse in dB is the SQNR).
"""
from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import onnx
import torch

from scaledet.errors import ExportError
from scaledet.export.onnx import META_PREFIX, export_onnx, ort_session
from scaledet.utils.atomic import atomic_path

DEFAULT_OP_TYPES = ("Conv", "Relu", "Add", "MaxPool", "Resize", "Sigmoid", "Mul")
DEFAULT_TOLERANCE = 0.01  # relative noise of the network outputs, i.e. SQNR >= 20 dB
DEFAULT_CALIBRATION_IMAGES = 32
DEFAULT_PROBE_IMAGES = 8
DEFAULT_MAX_FALLBACK = 6
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class QuantizationError(ExportError):
    """The int8 model cannot be produced as asked."""


@dataclass
class Int8Report:
    """What was done, kept in the ONNX metadata (``scaledet.int8``) and returned to the caller."""
    calibration_source: str
    calibration_images: int
    probe_images: int
    calibrate_method: str
    op_types: list[str]
    activation_type: str = "uint8"
    weight_type: str = "int8, per channel"
    quantized_nodes: int = 0
    groups: int = 0
    group_error: dict[str, float] = field(default_factory=dict)  # each group quantised alone
    fallback_trials: list[dict] = field(default_factory=list)  # groups kept fp32 -> error
    fp32_groups: list[str] = field(default_factory=list)
    fp32_nodes: list[str] = field(default_factory=list)
    output_error: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    within_tolerance: bool | None = None
    seconds: float = 0.0


# ---------------------------------------------------------------------------------------- calibration

def check_calibration_source(source: str | Path) -> Path:
    """``source`` as a folder or a config file (a YAML path or a packaged config name)."""
    from scaledet.configs import resolve_config

    path = Path(source)
    if path.is_dir():
        return path
    if not (path.is_file() and path.suffix.lower() not in (".yaml", ".yml")):
        try:
            return resolve_config(source)
        except FileNotFoundError:
            pass
    raise QuantizationError(f"{source}: --calibration needs a folder of images or a config "
                            f"(a YAML file or a packaged config name)")


def calibration_items(source: str | Path, limit: int) -> list:
    """Up to ``limit`` images (paths or uint8 tensors), evenly spread over ``source``: a folder of
    images, or a config whose training split is read (without augmentation)."""
    source = check_calibration_source(source)
    if source.is_dir():
        found = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise QuantizationError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) for calibration")
        return [found[i] for i in _spread(len(found), limit)]
    from scaledet.config import load_config
    from scaledet.data.factory import build_datasets

    dataset = build_datasets(load_config(source).data, train=True, val=False).train
    if len(dataset) == 0:
        raise QuantizationError(f"{source}: the training split is empty")
    return [dataset[i][0] for i in _spread(len(dataset), limit)]


def _spread(n: int, limit: int) -> list[int]:
    return sorted({int(i) for i in np.linspace(0, n - 1, num=min(n, limit))})


def graph_feeds(predictor, items: Sequence) -> list[dict[str, np.ndarray]]:
    """The graph inputs for each image, made as ``OnnxPredictor.predict`` makes them."""
    from scaledet.data.collate import collate
    from scaledet.data.images import to_rgb_tensor
    from scaledet.data.input_spec import eval_transform

    transform = eval_transform(predictor.input_spec)
    step = predictor.fixed_batch or 1
    feeds = []
    for start in range(0, len(items), step):
        collated = collate([transform(to_rgb_tensor(item)) for item in items[start:start + step]],
                           predictor.size_divisor)
        images, sizes = predictor._padded_batch(collated["images"], collated["image_sizes"])  # as predict pads
        feed = {"images": images.numpy(), "image_sizes": sizes.numpy()}
        feeds.append({name: feed[name] for name in predictor.input_names})
    return feeds


class _Feeds:
    """``onnxruntime.quantization.CalibrationDataReader`` over prepared feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]):
        self.feeds = feeds
        self.position = 0

    def get_next(self):
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0


# ---------------------------------------------------------------------------------------- the graph

def network_nodes(proto: onnx.ModelProto, scopes: Iterable[str]) -> list[onnx.NodeProto]:
    """Nodes exported from the network modules (``/model/<scope>/...``), in graph order."""
    prefixes = tuple(f"/model/{s}/" for s in scopes)
    return [n for n in proto.graph.node if n.name.startswith(prefixes)]


def output_convolutions(proto: onnx.ModelProto, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Network convolutions whose result reaches no other convolution: the predictors."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in proto.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def reaches_conv(tensor: str, seen: set[str]) -> bool:
        for node in consumers.get(tensor, []):
            if node.op_type == "Conv":
                return True
            for out in node.output:
                if out not in seen:
                    seen.add(out)
                    if reaches_conv(out, seen):
                        return True
        return False

    return [n for n in nodes if n.op_type == "Conv" and not reaches_conv(n.output[0], set())]


def group_of(node_name: str, terminal: bool) -> str:
    """A backbone block / neck part / head tower (``backbone/blocks.3``); output convolutions
    form groups of their own, levels merged (``head/cls_tower/predictor``)."""
    parts = node_name.strip("/").split("/")[1:-1]
    if terminal:
        return "/".join(re.sub(r"_\d+$", "", p) for p in parts)
    return "/".join(parts[:2])


def network_scopes(model: torch.nn.Module) -> list[str]:
    """The model's child modules that hold weights (its network, not criterion or post-processor)."""
    return [name for name, child in model.named_children() if any(True for _ in child.parameters())]


def _probe_names(proto: onnx.ModelProto, tensors: list[str]) -> list[str]:
    """For each tensor, what its consumers see: the dequantised copy when it was quantised."""
    quantizers = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "QuantizeLinear"}
    dequantizers = {n.input[0]: n.output[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    return [dequantizers.get(quantizers.get(t, ""), t) for t in tensors]


def _with_outputs(path: Path, tensors: list[str], out: Path) -> Path:
    proto = onnx.load(str(path))
    known = {o.name for o in proto.graph.output}
    for name in tensors:
        if name not in known:
            proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    onnx.save(proto, str(out))
    return out


# ---------------------------------------------------------------------------------------- measuring

class _Probe:
    """Runs candidate models on the probe images and measures their output error against fp32."""

    def __init__(self, fp32_path: Path, terminals: list[str], feeds: list[dict], workdir: Path, threads: int | None):
        self.terminals, self.feeds, self.workdir, self.threads = terminals, feeds, workdir, threads
        probe = _with_outputs(fp32_path, terminals, workdir / "fp32_probe.onnx")
        self.reference = self._run(probe, terminals)

    def _run(self, path: Path, names: list[str]) -> list[list[np.ndarray]]:
        session = ort_session(path, threads=self.threads)
        return [session.run(names, feed) for feed in self.feeds]

    def error(self, model_path: Path) -> float:
        names = _probe_names(onnx.load(str(model_path), load_external_data=False), self.terminals)
        probe = _with_outputs(model_path, names, self.workdir / "candidate_probe.onnx")
        actual = self._run(probe, names)
        ratios = [float(np.mean((a - f) ** 2) / max(float(np.var(f)), 1e-12))
                  for per_image_a, per_image_f in zip(actual, self.reference)
                  for a, f in zip(per_image_a, per_image_f)]
        return float(np.mean(ratios))


def sqnr_db(error: float) -> float:
    return float("inf") if error <= 0 else -10.0 * float(np.log10(error))


# ---------------------------------------------------------------------------------------- the whole

def quantize_onnx(fp32_path: str | Path, output: str | Path, *, calibration: str | Path, scopes: Sequence[str],
                  num_calibration: int = DEFAULT_CALIBRATION_IMAGES, num_probe: int = DEFAULT_PROBE_IMAGES,
                  tolerance: float = DEFAULT_TOLERANCE, max_fallback: int = DEFAULT_MAX_FALLBACK,
                  op_types: Sequence[str] = DEFAULT_OP_TYPES, calibrate_method: str = "MinMax",
                  threads: int | None = None, log=print) -> Int8Report:
    """Write the int8 QDQ version of the scaledet fp32 ONNX file ``fp32_path`` to ``output``.

    ``scopes``: the network modules' names (see :func:`network_scopes`). ``max_fallback=0`` skips
    the sensitivity pass and quantises every network node."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from scaledet.export.onnx_predictor import OnnxPredictor

    started = time.perf_counter()
    fp32_path, output = Path(fp32_path), Path(output)
    method = getattr(CalibrationMethod, calibrate_method, None)
    if method is None:
        raise QuantizationError(f"unknown calibration method {calibrate_method!r}; allowed: MinMax, Entropy, "
                                f"Percentile, Distribution")
    predictor = OnnxPredictor(fp32_path, threads=threads)
    items = calibration_items(calibration, num_calibration)
    feeds = graph_feeds(predictor, items)
    report = Int8Report(calibration_source=str(calibration), calibration_images=len(items),
                        probe_images=min(num_probe, len(feeds)), calibrate_method=calibrate_method,
                        op_types=list(op_types), tolerance=tolerance)
    with tempfile.TemporaryDirectory(prefix="scaledet-int8-") as tmp:
        work = Path(tmp)
        prepared = work / "fp32_prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        proto = onnx.load(str(prepared))
        nodes = network_nodes(proto, scopes)
        if not nodes:
            raise QuantizationError(f"{fp32_path}: no nodes under /model/{{{','.join(scopes)}}}/ to quantise")
        terminals = output_convolutions(proto, nodes)
        terminal_names = {n.name for n in terminals}
        groups: dict[str, list[str]] = {}
        for n in nodes:
            groups.setdefault(group_of(n.name, n.name in terminal_names), []).append(n.name)
        report.groups = len(groups)
        cache = work / "calibration.json"
        reader = _Feeds(feeds)

        def quantize(keep_fp32: Sequence[str], to: Path, only: Sequence[str] | None = None) -> Path:
            excluded = {name for g in keep_fp32 for name in groups[g]}
            chosen = [n.name for n in nodes if n.name not in excluded and (only is None or n.name in only)]
            if not chosen:  # an empty list would mean "every node" to quantize_static
                shutil.copy(prepared, to)
                return to
            reader.rewind()
            quantize_static(str(prepared), str(to), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=list(op_types), nodes_to_quantize=chosen,
                            calibrate_method=method, calibration_cache_path=str(cache))
            return to

        log(f"int8: {len(nodes)} network nodes in {len(groups)} groups; calibrating on {len(feeds)} images")
        candidate = quantize([], work / "all_int8.onnx")
        probe = _Probe(prepared, [t.output[0] for t in terminals], feeds[:report.probe_images], work, threads)
        error = probe.error(candidate)
        report.fallback_trials.append({"fp32_groups": [], "error": error})
        log(f"int8: every group quantised: output SQNR {sqnr_db(error):.1f} dB (tolerance {sqnr_db(tolerance):.1f})")
        best = (error, [], candidate)
        if error > tolerance and max_fallback > 0:
            for name, members in groups.items():
                report.group_error[name] = probe.error(quantize([], work / "one_group.onnx", only=members))
            ranked = sorted(groups, key=lambda g: -report.group_error[g])
            log("int8: most sensitive groups: " + ", ".join(f"{g} {sqnr_db(report.group_error[g]):.1f} dB"
                                                             for g in ranked[:max_fallback]))
            for k in range(1, min(max_fallback, len(ranked)) + 1):
                keep = ranked[:k]
                path = quantize(keep, work / f"fallback_{k}.onnx")
                error = probe.error(path)
                report.fallback_trials.append({"fp32_groups": keep, "error": error})
                log(f"int8: {k} group(s) kept fp32 -> output SQNR {sqnr_db(error):.1f} dB")
                if error < best[0]:
                    best = (error, keep, path)
                if error <= tolerance:
                    break
        report.output_error, report.fp32_groups = best[0], list(best[1])
        report.fp32_nodes = [name for g in best[1] for name in groups[g]]
        report.quantized_nodes = len(nodes) - len(report.fp32_nodes)
        report.within_tolerance = best[0] <= tolerance
        report.seconds = round(time.perf_counter() - started, 1)
        _finish(best[2], fp32_path, output, report)
    return report


def _finish(quantized: Path, fp32_path: Path, output: Path, report: Int8Report) -> None:
    """The fp32 export's scaledet metadata plus ``scaledet.int8``, written to ``output``."""
    proto = onnx.load(str(quantized))
    meta = {p.key: p.value for p in onnx.load(str(fp32_path), load_external_data=False).metadata_props}
    meta[META_PREFIX + "int8"] = json.dumps(asdict(report))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, meta)
    with atomic_path(output) as tmp:
        onnx.save(proto, str(tmp))


def export_int8(model: torch.nn.Module, path: str | Path, *, image_size: int, calibration: str | Path,
                batch_size: int = 1, opset: int | None = None, verify: bool = True, fp32_path: str | Path | None = None,
                **options) -> tuple[Path, Int8Report]:
    """Export ``model`` to fp32 ONNX (kept at ``fp32_path`` if given), then to int8 at ``path``;
    ``options`` go to :func:`quantize_onnx`."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="scaledet-fp32-") as tmp:
        fp32 = Path(fp32_path) if fp32_path else Path(tmp) / "fp32.onnx"
        export_onnx(model, fp32, image_size=image_size, batch_size=batch_size, opset=opset, verify=verify)
        report = quantize_onnx(fp32, path, calibration=calibration, scopes=network_scopes(model), **options)
    return path, report
