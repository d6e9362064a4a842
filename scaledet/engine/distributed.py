"""torchrun / DistributedDataParallel plumbing: process group set-up, rank helpers, gathering,
synchronised BatchNorm on any device."""
from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn

from scaledet.errors import UsageError

# Bounds every collective; overridable because a slow rank-0 step (COCO evaluation of a large
# validation set, saving a big checkpoint) must fit inside it while the other ranks wait.
DEFAULT_TIMEOUT_S = 300.0
TIMEOUT_ENV = "SCALEDET_DIST_TIMEOUT"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_distributed(device: torch.device, timeout_s: float | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment; a no-op otherwise.

    The timeout (``timeout_s``, else $SCALEDET_DIST_TIMEOUT, else 300 s) bounds every collective,
    so a peer that hangs turns into an error instead of a hang.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if timeout_s is None:
        raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
        try:
            timeout_s = float(raw)
        except ValueError:
            raise UsageError(f"${TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = datetime.timedelta(seconds=timeout_s)
        store = _restart_safe_store(timeout)
        if store is None:
            dist.init_process_group(backend=backend, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, timeout=timeout, store=store, world_size=world,
                                    rank=int(os.environ["RANK"]))
    return DistInfo(rank=dist.get_rank(), world=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def _restart_safe_store(timeout: datetime.timedelta):
    """A store namespace of its own for each single-node torchrun restart, or None for the default.

    torchrun shares its rendezvous TCPStore with the workers, and the keys the previous attempt's
    process group wrote there survive a restart: the new workers would read the dead workers'
    addresses and fail to connect (pytorch/pytorch#135712). On one node the restart count is the
    same for every worker, so it can name the namespace. Across nodes it is not (an agent whose
    workers were healthy does not count the restart); there, launch with
    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 so that each rendezvous round gets a fresh store.
    """
    shared = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    single_node = os.environ.get("GROUP_WORLD_SIZE", "1") == "1"
    if not (shared and single_node and restart_count() > 0):
        return None
    client = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                           timeout=timeout)
    return dist.PrefixStore(f"scaledet/attempt-{restart_count()}", client)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a device that exists here. Plain ``cuda`` under
    torchrun is the process's ``LOCAL_RANK`` GPU; ``cuda:N`` is that GPU whatever the rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    kind, sep, index = name.partition(":")
    if kind != "cuda" or (sep and not index.isdigit()):
        raise UsageError(f"--device {name}: unknown device; allowed: auto, cpu, cuda, cuda:N (N a GPU index)")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but no CUDA device is available")
    count = torch.cuda.device_count()
    if sep and int(index) >= count:
        raise UsageError(f"--device {name}: no such GPU; this machine has {count} "
                         f"(cuda:0{f' to cuda:{count - 1}' if count > 1 else ''})")
    if not sep and "LOCAL_RANK" in os.environ:
        name = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    torch.cuda.set_device(torch.device(name))
    return torch.device(name)


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)
    return value


def restart_count() -> int:
    """How many times torchrun (torchelastic) has restarted this job's workers; 0 on the first try."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def gather_objects(obj, info: DistInfo) -> list:
    """Every rank's ``obj`` on every rank (evaluation results are small, compact lists)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class _DifferentiableAllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum over processes is again a sum over processes.

    Hand-written because ``torch.distributed.nn.functional.all_reduce`` is deprecated and the
    functional-collectives replacement has no autograd support for all_reduce.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


class ProcessGroupBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span the whole process group, for CPU (gloo) runs.

    ``nn.SyncBatchNorm`` refuses CPU tensors (and DDP refuses it on CPU modules), so this is written
    by hand: mean and variance come from one all-reduce of per-channel sums (in float64) over all
    processes' samples, the statistics of one batch holding every process's samples, and gradients
    flow through them. Same parameters and buffers as BatchNorm2d, so checkpoints load into plain
    models. Evaluation and single-process runs use the ordinary BatchNorm2d path.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as BatchNorm2d does
                factor = 1.0 / float(self.num_batches_tracked)
        x32 = x.float()
        dims = (0, 2, 3)
        # One all-reduce of [sum, sum of squares, count]; float64 keeps E[x^2] - E[x]^2 exact enough.
        x64 = x32.double()
        local = torch.cat([x64.sum(dims), x64.square().sum(dims), x64.new_full((1,), x64.numel() / x64.shape[1])])
        total = _DifferentiableAllReduceSum.apply(local, dist.group.WORLD)
        channels = x.shape[1]
        count = total[-1].detach()
        mean64 = total[:channels] / count
        var = (total[channels:2 * channels] / count - mean64.square()).clamp(min=0).float()
        mean = mean64.float()
        centred = x32 - mean[None, :, None, None]
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), factor)
                unbiased = var.detach() * count / max(float(count) - 1.0, 1.0)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)
        return out.to(x.dtype)


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Batch statistics over all processes: ``nn.SyncBatchNorm`` on accelerators, else
    :class:`ProcessGroupBatchNorm2d`."""
    if device.type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for module in model.modules():
        if type(module) is nn.BatchNorm2d:
            # Same state, different forward: re-classing keeps parameters, buffers and hooks.
            module.__class__ = ProcessGroupBatchNorm2d
    return model
