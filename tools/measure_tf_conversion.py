"""Convert every TF parity fixture with ``scaledet convert tf-retinanet`` and print, per fixture,
the max |scaledet - TF| of each output level and how the detections compare (docs/CONVERT.md).

    python tools/measure_tf_conversion.py [--shared ../shared/data]

Needs no TensorFlow: the fixtures hold the checkpoints and what TF computed from them. The tpu
fixture lives in the shared data folder (``$SCALEDET_SHARED_DATA`` or ``../shared/data``); it is
skipped when absent.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    from scaledet.convert.tf_parity import PARITY_FIXTURES, measure
    from scaledet.convert.tf_retinanet import convert_tf_retinanet

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path,
                        default=Path(os.environ.get("SCALEDET_SHARED_DATA", REPO.parent / "shared" / "data")))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        for fixture in PARITY_FIXTURES:
            checkpoint = Path(fixture.path(fixture.checkpoint, shared=args.shared, repo=REPO))
            if not checkpoint.parent.exists():
                print(f"## {fixture.name}: skipped ({checkpoint.parent} not found)\n")
                continue
            converted = Path(folder) / f"{fixture.name}.pt"
            convert_tf_retinanet(checkpoint, converted, fixture.model, fixture.layout,
                                 model_args=fixture.model_args, classes="all")
            report = measure(fixture, converted, shared=args.shared, repo=REPO)
            precisions = list(report.differences)
            print(f"## {fixture.name} ({fixture.layout} layout, tolerance {fixture.tolerance:g})\n")
            print("| output | " + " | ".join(f"max abs diff ({p})" for p in precisions) + " |")
            print("|---|" + "---|" * len(precisions))
            for key in report.differences["float32"]:
                print(f"| {key} | " + " | ".join(f"{report.differences[p][key]:.2e}" for p in precisions) + " |")
            for i, match in enumerate(report.matches):
                print(f"\nimage {i}: {match.pairs} detections paired, max score diff {match.max_score_difference:.1e}, "
                      f"max box diff {match.max_box_difference:.1e} px, unpaired ours {match.unmatched_ours}, "
                      f"unpaired TF {match.unmatched_theirs}")
            print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
