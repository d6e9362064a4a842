"""Compare a converted RetinaNet with the outputs its TensorFlow code computed (the fixtures of
``spinenet_tpu_ref`` and ``tests/fixtures/tf2_model_garden``), raw outputs per level and detections.

Used by the conversion tests and by ``tools/measure_tf_conversion.py``, which prints the figures
docs/CONVERT.md quotes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from scaledet.convert.tf_mapping import TF_BOX_ORDER_TO_OURS, predictor_permutation
from scaledet.models.detectors.retinanet import RetinaNet

__all__ = ["PARITY_FIXTURES", "DetectionMatch", "ParityFixture", "ParityReport", "match_detections", "measure", "model_detections", "raw_outputs", "raw_output_differences",
           "tf_detections"]


@torch.no_grad()
def raw_outputs(model: RetinaNet, inputs_nhwc: np.ndarray) -> dict[str, torch.Tensor]:
    """The model's raw head outputs on TF's preprocessed NHWC inputs, in the model's dtype."""
    model.eval()
    dtype = next(model.parameters()).dtype
    images = torch.from_numpy(np.ascontiguousarray(inputs_nhwc)).permute(0, 3, 1, 2).to(dtype)
    return model(images)


def raw_output_differences(model: RetinaNet, outputs: dict[str, torch.Tensor], reference,
                           tf_aspect_ratios: Sequence[float]) -> dict[str, float]:
    """max |ours - TF| of every level's class and box outputs (``cls_l3``, ``box_l3``, ...).

    ``reference``: TF's NHWC outputs (``cls_l<level>``, ``box_l<level>``); their channels are
    taken in the model's order (anchor ratios, box coordinates, the classes it kept, which its
    ``label_to_category_id`` names as TF class channels)."""
    tf_classes = reference["cls_l3"].shape[-1] // model.head.num_anchors
    ratios = model.anchor_generator.aspect_ratios
    num_scales = model.head.num_anchors // len(ratios)
    channels = model.label_to_category_id or list(range(model.num_classes))
    cls_index = predictor_permutation(num_scales, ratios, tf_aspect_ratios, tf_classes, channels)
    box_index = predictor_permutation(num_scales, ratios, tf_aspect_ratios, 4, TF_BOX_ORDER_TO_OURS)
    differences = {}
    levels = [s.bit_length() - 1 for s in model.anchor_generator.strides]
    for key, ours_list, index in (("cls", outputs["cls_logits"], cls_index), ("box", outputs["box_deltas"], box_index)):
        for level, ours in zip(levels, ours_list):
            theirs = np.asarray(reference[f"{key}_l{level}"], dtype=np.float64)
            if index is not None:
                theirs = theirs[..., list(index)]
            ours_nhwc = ours.permute(0, 2, 3, 1).double().numpy()
            differences[f"{key}_l{level}"] = float(np.abs(ours_nhwc - theirs).max())
    return differences


@dataclass(frozen=True)
class Detections:
    """One image's detections: scores [N], category ids [N], boxes [N, 4] xyxy in input pixels."""

    scores: np.ndarray
    categories: np.ndarray
    boxes: np.ndarray


@torch.no_grad()
def model_detections(model: RetinaNet, outputs: dict[str, torch.Tensor],
                     image_sizes: Sequence[tuple[int, int]]) -> list[Detections]:
    """The model's post-processed detections in network-input pixels, with category ids."""
    result = model.postprocess(outputs, list(image_sizes))
    categories = np.asarray(model.label_to_category_id or list(range(model.num_classes)))
    out = []
    for i, count in enumerate(result["num_detections"].tolist()):
        labels = result["labels"][i, :count].numpy()
        out.append(Detections(result["scores"][i, :count].double().numpy(), categories[labels],
                              result["boxes"][i, :count].double().numpy()))
    return out


def tf_detections(reference) -> list[Detections]:
    """A TF detection output (``detection_boxes`` as ymin, xmin, ymax, xmax)."""
    out = []
    for i, count in enumerate(np.asarray(reference["num_detections"]).tolist()):
        boxes = np.asarray(reference["detection_boxes"][i, :count], dtype=np.float64)[:, [1, 0, 3, 2]]
        out.append(Detections(np.asarray(reference["detection_scores"][i, :count], dtype=np.float64),
                              np.asarray(reference["detection_classes"][i, :count]), boxes))
    return out


@dataclass(frozen=True)
class DetectionMatch:
    """How two detection sets of one image compare: pairs with the same category, score within
    ``score_tolerance`` and the closest box; ``unmatched_*`` what found no partner."""

    pairs: int
    max_score_difference: float
    max_box_difference: float
    unmatched_ours: list[tuple[float, int]]
    unmatched_theirs: list[tuple[float, int]]

    def equal_as_sets(self, tie: float) -> bool:
        """Equal, except that where the last kept scores tie within ``tie`` either side may keep
        another of the tied detections."""
        left_out = self.unmatched_ours + self.unmatched_theirs
        if not left_out:
            return True
        if len(self.unmatched_ours) != len(self.unmatched_theirs):
            return False
        scores = [s for s, _ in left_out]
        return max(scores) - min(scores) <= tie


def match_detections(ours: Detections, theirs: Detections, score_tolerance: float) -> DetectionMatch:
    """Pair each TF detection (best first) with an unused one of ours: same category, score
    within ``score_tolerance``, the nearest box (max |coordinate difference|)."""
    used = np.zeros(len(ours.scores), dtype=bool)
    worst_score = worst_box = 0.0
    unmatched_theirs = []
    for k in np.argsort(-theirs.scores, kind="stable"):
        candidates = np.flatnonzero(~used & (ours.categories == theirs.categories[k])
                                    & (np.abs(ours.scores - theirs.scores[k]) <= score_tolerance))
        if not len(candidates):
            unmatched_theirs.append((float(theirs.scores[k]), int(theirs.categories[k])))
            continue
        distance = np.abs(ours.boxes[candidates] - theirs.boxes[k]).max(axis=1)
        best = candidates[int(np.argmin(distance))]
        used[best] = True
        worst_box = max(worst_box, float(distance.min()))
        worst_score = max(worst_score, float(abs(ours.scores[best] - theirs.scores[k])))
    unmatched_ours = [(float(ours.scores[j]), int(ours.categories[j])) for j in np.flatnonzero(~used)]
    return DetectionMatch(int(used.sum()), worst_score, worst_box, unmatched_ours, unmatched_theirs)


@dataclass(frozen=True)
class ParityFixture:
    """One TF fixture: what to convert, and what TF computed from it. Paths hold ``{shared}``
    (the shared data folder) or ``{repo}`` (the repository root)."""

    name: str
    checkpoint: str
    model: str
    layout: str
    model_args: dict
    inputs: str
    outputs: dict  # "float32" / "float64" -> TF's raw outputs computed at that precision
    detections: str
    image_size: int  # TF clips boxes to this (image_info's desired size)
    tolerance: float  # max |ours - TF| allowed per level (float64 outputs when the fixture has them)

    def path(self, template: str, *, shared, repo) -> str:
        return template.format(shared=shared, repo=repo)


_GARDEN = "{repo}/tests/fixtures/tf2_model_garden"
PARITY_FIXTURES = (
    # spinenet_tpu_ref/SOURCE.md: the reference's own float32 noise reaches 6e-4
    ParityFixture("tpu_spinenet49s_narrow", "{shared}/spinenet_tpu_ref/ckpt/model.ckpt", "retinanet_spinenet49s",
                  "tpu", {"filter_size_scale": 0.12, "image_size": 256}, "{shared}/spinenet_tpu_ref/inputs.npy",
                  {"float32": "{shared}/spinenet_tpu_ref/outputs.npz"}, "{shared}/spinenet_tpu_ref/detections.npz",
                  256, 1e-3),
    ParityFixture("tf2_spinenet49s_narrow", f"{_GARDEN}/spinenet/ckpt", "retinanet_spinenet49s", "tf2",
                  {"filter_size_scale": 0.08, "image_size": 128}, f"{_GARDEN}/inputs.npy",
                  {"float32": f"{_GARDEN}/spinenet/outputs.npz", "float64": f"{_GARDEN}/spinenet/outputs_float64.npz"},
                  f"{_GARDEN}/spinenet/detections.npz", 128, 1e-4),
    ParityFixture("tf2_nasfpn_r50_narrow", f"{_GARDEN}/nasfpn/ckpt", "retinanet_nasfpn_r50", "tf2",
                  {"backbone_width_multiplier": 0.0625, "num_stacks": 1, "image_size": 128}, f"{_GARDEN}/inputs.npy",
                  {"float32": f"{_GARDEN}/nasfpn/outputs.npz", "float64": f"{_GARDEN}/nasfpn/outputs_float64.npz"},
                  f"{_GARDEN}/nasfpn/detections.npz", 128, 1e-4),
)


@dataclass(frozen=True)
class ParityReport:
    """What :func:`measure` found for one fixture."""

    name: str
    differences: dict  # precision -> {output: max |ours - TF|}
    matches: list  # per image: DetectionMatch (float32 model against TF's detections)
    tolerance: float

    @property
    def checked(self) -> dict:
        """The differences the tolerance applies to: float64 where TF ran it, else float32."""
        return self.differences.get("float64", self.differences["float32"])


def measure(fixture: ParityFixture, converted, *, shared, repo, score_tolerance: float = 2e-4) -> ParityReport:
    """Run the converted checkpoint file ``converted`` on the fixture's inputs (float32, and
    float64 where TF's float64 outputs exist) and compare with TF's outputs and detections."""
    from scaledet.engine.inference import model_from_checkpoint

    inputs = np.load(fixture.path(fixture.inputs, shared=shared, repo=repo))
    differences, detections = {}, None
    for precision, template in fixture.outputs.items():
        model = model_from_checkpoint(converted)
        if precision == "float64":
            model = model.double()
        outputs = raw_outputs(model, inputs.astype(np.float64 if precision == "float64" else np.float32))
        reference = np.load(fixture.path(template, shared=shared, repo=repo))
        differences[precision] = raw_output_differences(model, outputs, reference, _tf_ratios(fixture.layout))
        if precision == "float32":
            # every candidate reaches NMS, as TF's per-class top-5000 lets them at these sizes
            model.postprocessor.pre_nms_topk = 10 ** 6
            size = (fixture.image_size, fixture.image_size)
            detections = model_detections(model, outputs, [size] * inputs.shape[0])
    theirs = tf_detections(np.load(fixture.path(fixture.detections, shared=shared, repo=repo)))
    matches = [match_detections(o, t, score_tolerance) for o, t in zip(detections, theirs)]
    return ParityReport(fixture.name, differences, matches, fixture.tolerance)


def _tf_ratios(layout: str) -> tuple[float, ...]:
    from scaledet.convert.tf_retinanet import LAYOUTS

    return LAYOUTS[layout].tf_aspect_ratios
