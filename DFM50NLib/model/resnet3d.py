"""The FCIB trunk in plain torch: MONAI's 3-D ResNet50 as fmcib 1.0.0 configures it, without MONAI.

fmcib builds `monai.networks.nets.resnet50(n_input_channels=1, widen_factor=2, conv1_t_stride=2,
feed_forward=False, bias_downsample=True)`. Importing MONAI costs ~1.7 s per process (more than half
the model-load budget) and is one more large package for Slicer's Python, for about 60 lines of network.
This module rebuilds that network layer for layer: same state-dict keys and shapes, same forward
arithmetic, same random initialisation for a given seed. Testing/Python/test_resnet3d.py checks all
three against MONAI itself, and test_fcib_equality.py checks the features against fmcib's own model.

Imported only when the encoder is built (it imports torch at module level).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_BLOCKS = (3, 4, 6, 3)  # ResNet50
STAGE_PLANES = (64, 128, 256, 512)  # MONAI's get_inplanes()
WIDEN_FACTOR = 2
EXPANSION = 4  # bottleneck: output channels = 4 x planes
STEM_KERNEL, STEM_STRIDE = 7, 2


class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (stride) -> 1x1x1 convolutions with batch norm, plus the (projected) input."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        # Registration order = MONAI's: it fixes the state-dict order and the initialisation's RNG draws.
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * EXPANSION, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * EXPANSION)
        self.act = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.act(self.bn1(self.conv1(x)))
        out = self.act(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += residual
        return self.act(out)


class FCIBTrunk(nn.Module):
    """Stem (7^3 conv, stride 2; max-pool) -> four bottleneck stages -> global average -> 4096 features."""

    def __init__(self, in_channels: int = 1):
        super().__init__()
        planes = [p * WIDEN_FACTOR for p in STAGE_PLANES]
        self.in_planes = planes[0]
        self.conv1 = nn.Conv3d(
            in_channels,
            self.in_planes,
            kernel_size=STEM_KERNEL,
            stride=STEM_STRIDE,
            padding=STEM_KERNEL // 2,
            bias=False,
        )
        self.bn1 = nn.BatchNorm3d(self.in_planes)
        self.act = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._stage(planes[0], STAGE_BLOCKS[0], stride=1)
        self.layer2 = self._stage(planes[1], STAGE_BLOCKS[1], stride=2)
        self.layer3 = self._stage(planes[2], STAGE_BLOCKS[2], stride=2)
        self.layer4 = self._stage(planes[3], STAGE_BLOCKS[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = None  # fmcib: feed_forward=False, the trunk ends at the pooled features
        for m in self.modules():  # MONAI's initialisation, in the same order
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * EXPANSION:  # shortcut "B": 1x1x1 conv (with bias) + norm
            downsample = nn.Sequential(
                nn.Conv3d(self.in_planes, planes * EXPANSION, kernel_size=1, stride=stride, bias=True),
                nn.BatchNorm3d(planes * EXPANSION),
            )
        layers = [Bottleneck(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * EXPANSION
        layers += [Bottleneck(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).view(x.size(0), -1)
