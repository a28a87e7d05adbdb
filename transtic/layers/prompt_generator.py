"""The instance-specific prompt generator of TransTIC: a shallow U-Net on the image."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _conv_bn_relu(channels: list[int]) -> nn.Sequential:
    """3x3 conv -> BN -> ReLU per consecutive channel pair (the checkpoints' index layout)."""
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class InstancePromptGenerator(nn.Module):
    """Image (B,3,H,W) -> prompt features (B, out_channels, H/2, W/2).

    Three encoder levels, two decoder levels with skip connections, and a strided
    3x3 head; layer names match ``g_a0_prompt.*`` in the released checkpoints.
    """

    def __init__(self, out_channels: int, mid_channels: int = 32) -> None:
        super().__init__()
        c = mid_channels
        self.down1 = _conv_bn_relu([3, c, c])
        self.down1_pool = nn.Sequential(nn.MaxPool2d(2, 2))
        self.down2 = _conv_bn_relu([c, 2 * c, 2 * c])
        self.down2_pool = nn.Sequential(nn.MaxPool2d(2, 2))
        self.down3 = _conv_bn_relu([2 * c, 4 * c, 4 * c])
        self.upsample2 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        )
        self.up2 = _conv_bn_relu([6 * c, 2 * c, 2 * c, 2 * c])
        self.upsample1 = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        )
        self.up1 = _conv_bn_relu([3 * c, c, c, c])
        self.classifier = nn.Sequential(nn.Conv2d(c, out_channels, 3, stride=2, padding=1))

    def fold_batch_norms(self) -> None:
        """Fold every eval-mode BatchNorm into the conv before it (inference only).

        Saves a full-resolution memory pass per layer; equal to the unfolded network up
        to float rounding (~1e-6 relative). The BN slots become identities, so indices
        and the remaining names stay as they were.
        """
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        for seq in self.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for i in range(len(seq) - 1):
                conv, norm = seq[i], seq[i + 1]
                if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d):
                    seq[i] = fuse_conv_bn_eval(conv, norm)
                    seq[i + 1] = nn.Identity()

    def forward(self, image: Tensor) -> Tensor:
        d1 = self.down1(image)
        d2 = self.down2(self.down1_pool(d1))
        d3 = self.down3(self.down2_pool(d2))
        u2 = self.up2(torch.cat([d2, self.upsample2(d3)], dim=1))
        u1 = self.up1(torch.cat([d1, self.upsample1(u2)], dim=1))
        return self.classifier(u1)
