"""The demo's closing lines list its plots, and the plots are there (a 2-step demo; the full one
is tests/cli/test_demo.py, marked slow)."""
import pytest

from scaledet.cli.main import main
from scaledet.eval.plots import CURVES_SIZE, PR_SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_demo_lists_curves_and_pr_curves(tmp_path, capsys, assert_png):
    small = ["data.synthetic_train=8", "data.synthetic_val=4", "data.synthetic_image_size=128", "data.num_workers=0",
             "model.image_size=128", "model.args={head_width: 32, endpoints_num_filters: 32}", "train.batch_size=4",
             "train.total_steps=2", "train.checkpoint_every=2", "eval.batch_size=4"]
    args = ["demo", "--output", str(tmp_path), "--num-predictions", "2", "--device", "cpu"]
    assert main(args + [item for pair in (("--set", s) for s in small) for item in pair]) == 0
    closing = capsys.readouterr().out.split("Done in")[-1]
    run = tmp_path / "run"
    assert str(run / "curves.png") in closing and str(run / "pr_curves.png") in closing
    assert_png(run / "curves.png", CURVES_SIZE)
    assert_png(run / "pr_curves.png", PR_SIZE)
