"""BlitzNet down-scale and up-scale (ResSkip) streams (docs/reference/BLITZNET.md §1.3-1.5).

Takes the trunk's stage outputs (strides 4, 8, 16, 32) and returns the detection sources,
finest first: [rev1 (x4 only)], rev2, rev3, ..., the first ResSkip output, then "pool6" (1x1).

Where the paper and the reference code disagree we follow the code:
- the down-scale stream is 2048 channels wide (bottleneck 512), not 512 (paper);
- the up-scale stream has no learned deconvolution: the coarser map is bilinearly resized to
  the skip map's exact size (ratios like 3->5 or 10->19 are not 2x);
- ResSkip concatenates first, then applies 1x1-3x3-1x1 (Fig. 3 seems to convolve before).
"""
from __future__ import annotations

import torch
import torch.nn as nn

from scaledet.errors import UsageError
from scaledet.models.backbones.blitz_resnet import BLITZ_NORM, init_trunk_weights, make_stage
from scaledet.models.common import FeatureInfo, NormSettings
from scaledet.data.resize import RESIZE_MODES, resize_bilinear


def halve_ceil(size: int, times: int) -> int:
    """Map size after ``times`` stride-2 steps of the trunk (each gives ceil(n/2))."""
    for _ in range(times):
        size = -(-size // 2)
    return size


class ResSkip(nn.Module):
    """Resize ``x`` to ``skip``'s size, shortcut (1x1 conv + BN if channels differ, else
    identity), residual 1x1-3x3-1x1 on concat([x, skip]); returns (output, shortcut).

    ``upsample``: "bilinear" (PyTorch, half-pixel centres) or "tf_legacy" (the reference's TF1
    resize, needed to compute what converted TF weights computed; scaledet/data/resize.py)."""

    def __init__(self, x_channels: int, skip_channels: int, out_channels: int, *, norm: NormSettings = BLITZ_NORM,
                 upsample: str = "bilinear"):
        super().__init__()
        self.upsample = upsample
        width = out_channels // 4
        self.projection = (nn.Sequential(nn.Conv2d(x_channels, out_channels, 1, bias=False), norm.make(out_channels))
                           if x_channels != out_channels else None)
        self.residual = nn.Sequential(
            nn.Conv2d(x_channels + skip_channels, width, 1, bias=False), norm.make(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=1, bias=False), norm.make(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, out_channels, 1, bias=False), norm.make(out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = resize_bilinear(x, skip.shape[-2:], self.upsample)
        shortcut = self.projection(x) if self.projection is not None else x
        out = torch.relu(shortcut + self.residual(torch.cat([x, skip], dim=1)))
        return out, shortcut


class BlitzStreams(nn.Module):
    """Down-scale stream (``num_down_blocks`` blocks of ``units_per_block`` bottlenecks, first
    stride 2) and ResSkip up-scale stream; ``x4`` adds the stride-4 rev1 from trunk stage 1."""

    def __init__(self, in_features: list[FeatureInfo], *, num_down_blocks: int = 3, x4: bool = True,
                 top_fm: int = 512, down_channels: int = 2048, down_bottleneck: int = 512,
                 units_per_block: int = 2, norm: NormSettings = BLITZ_NORM, upsample: str = "bilinear"):
        super().__init__()
        if upsample not in RESIZE_MODES:
            raise UsageError(f"upsample must be one of {', '.join(RESIZE_MODES)}, got {upsample!r}")
        if [f.stride for f in in_features] != [4, 8, 16, 32]:
            raise UsageError(f"BlitzStreams expects trunk strides [4, 8, 16, 32], "
                             f"got {[f.stride for f in in_features]}")
        if num_down_blocks < 2:
            raise UsageError(f"num_down_blocks must be >= 2, got {num_down_blocks}")
        self.x4 = x4
        cin = in_features[-1].channels
        self.down = nn.ModuleList()
        for _ in range(num_down_blocks):
            self.down.append(make_stage(cin, down_channels, down_bottleneck, units_per_block, 2, norm))
            cin = down_channels
        # Skips, coarsest first: every down block but the last, then trunk stages 4, 3, 2 (and 1).
        down_info = [FeatureInfo(down_channels, 64 * 2 ** i) for i in range(num_down_blocks)]
        trunk_skips = in_features[::-1] if x4 else in_features[:0:-1]
        self.skip_info = down_info[-2::-1] + list(trunk_skips)
        self.up = nn.ModuleList()
        x_channels = down_channels
        for skip in self.skip_info:
            self.up.append(ResSkip(x_channels, skip.channels, top_fm, norm=norm, upsample=upsample))
            x_channels = top_fm
        strides = [s.stride for s in self.skip_info][::-1]
        # pool6 is a 1x1 map; its stride is nominal (twice the coarsest ResSkip's).
        self.feature_info = [FeatureInfo(top_fm, s) for s in strides] + [FeatureInfo(top_fm, strides[-1] * 2)]
        init_trunk_weights(self)

    def source_sizes(self, height: int, width: int) -> list[tuple[int, int]]:
        """(h, w) of every returned map for a network input of ``height`` x ``width``."""
        sizes = []
        for info in self.feature_info[:-1]:
            steps = info.stride.bit_length() - 1
            sizes.append((halve_ceil(height, steps), halve_ceil(width, steps)))
        return sizes + [(1, 1)]

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        down = []
        x = features[-1]
        for block in self.down:
            x = block(x)
            down.append(x)
        skips = down[-2::-1] + (features[::-1] if self.x4 else features[:0:-1])
        outs = []
        pool6 = None
        for block, skip in zip(self.up, skips):
            x, shortcut = block(x, skip)
            if pool6 is None:
                pool6 = shortcut.mean(dim=(2, 3), keepdim=True)
            outs.append(x)
        return outs[::-1] + [pool6]

