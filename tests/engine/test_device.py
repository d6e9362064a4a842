"""--device parsing: auto, cpu, cuda, cuda:N, checked against the GPUs this machine has."""
import pytest
import torch

from scaledet.engine.distributed import resolve_device
from scaledet.errors import UsageError


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that reports two CUDA devices; selecting one is recorded instead of done."""
    selected = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", selected.append)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return selected


def test_cpu_and_auto_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(UsageError, match="--device cuda:0 was asked for but no CUDA device is available"):
        resolve_device("cuda:0")


def test_cuda_index_selects_that_gpu(two_gpus, monkeypatch):
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert two_gpus == [torch.device("cuda:1")]
    monkeypatch.setenv("LOCAL_RANK", "1")  # plain cuda under torchrun: the process's own GPU
    assert resolve_device("cuda") == torch.device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda:0")  # an explicit index wins


@pytest.mark.parametrize("name, message", [
    ("cuda:2", r"--device cuda:2: no such GPU; this machine has 2 \(cuda:0 to cuda:1\)"),
    ("cuda:x", r"--device cuda:x: unknown device; allowed: auto, cpu, cuda, cuda:N"),
    ("gpu", r"--device gpu: unknown device"),
])
def test_bad_devices_are_one_line_errors(two_gpus, name, message):
    with pytest.raises(UsageError, match=message):
        resolve_device(name)
    assert two_gpus == []


@pytest.mark.parametrize("command", [
    ["eval", "retinanet_spinenet49s_coco", "--checkpoint", "x.pt"],
    ["benchmark", "retinanet_spinenet49_tiny"],
])
def test_cli_reports_a_missing_gpu_index_as_one_line(two_gpus, capsys, command):
    from scaledet.cli.main import main

    code = main(command + ["--device", "cuda:5"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == f"scaledet {command[0]}: error: --device cuda:5: no such GPU; this machine has 2 (cuda:0 to cuda:1)"
