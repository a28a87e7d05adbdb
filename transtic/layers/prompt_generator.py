"""The instance-specific prompt generator of TransTIC: a shallow U-Net on the image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _conv_bn_relu(channels: list[int]) -> nn.Sequential:
    """3x3 conv -> BN -> ReLU per consecutive channel pair (the checkpoints' index layout)."""
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:], strict=True):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


# Output tile of the generator's Winograd convs: F(4x4, 3x3) needs 36 products per 16
# outputs (F(2x2): 16 per 4), at ~10x the rounding error of a direct conv (~1e-6 relative).
WINOGRAD_TILE = 4


class WinogradConv3x3(nn.Module):
    """An inference-only 3x3 conv (stride 1, padding 1) + bias, optionally + ReLU, run by
    the native Winograd kernel on channels-last float32 CPU input without autograd,
    and by ``F.conv2d`` on anything else (same results up to float rounding)."""

    transformed: Tensor  # (16, Cin, Cout), a buffer: follows the module's moves

    def __init__(self, conv: nn.Conv2d, *, relu: bool, tile: int = WINOGRAD_TILE) -> None:
        super().__init__()
        from ..kernels import winograd

        self.weight = nn.Parameter(conv.weight.detach().clone(), requires_grad=False)
        bias = conv.bias.detach().clone() if conv.bias is not None else None
        self.bias = nn.Parameter(bias, requires_grad=False) if bias is not None else None
        self.relu = relu
        self.tile = tile
        self.register_buffer("transformed", winograd.transform_weights(self.weight, tile))

    @staticmethod
    def applies_to(conv: nn.Module) -> bool:
        """A plain 3x3 stride-1 padding-1 conv whose channels the kernel takes."""
        from ..kernels import winograd

        if not isinstance(conv, nn.Conv2d) or conv.kernel_size != (3, 3):
            return False
        if conv.stride != (1, 1) or conv.padding != (1, 1) or conv.dilation != (1, 1):
            return False
        multiple = winograd.channel_multiple()
        channels_fit = multiple > 0 and not (
            conv.in_channels % multiple or conv.out_channels % multiple
        )
        return conv.groups == 1 and conv.padding_mode == "zeros" and channels_fit

    def _native(self, x: Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32 == self.transformed.dtype
            and self.transformed.device.type == "cpu"
            and not torch.is_grad_enabled()
            and x.is_contiguous(memory_format=torch.channels_last)
        )

    def forward(self, x: Tensor, concatenated: Tensor | None = None) -> Tensor:
        """The conv of x, or of ``torch.cat([x, concatenated], 1)`` (made only where the
        native kernel does not run)."""
        from ..kernels import winograd

        pair = concatenated is not None and self._native(concatenated)
        if self._native(x) and (concatenated is None or pair):
            bias = self.bias.detach() if self.bias is not None else None
            return winograd.conv3x3(
                x, self.transformed, bias, relu=self.relu, concatenated=concatenated
            )
        if concatenated is not None:
            x = torch.cat([x, concatenated], dim=1)
        out = F.conv2d(x, self.weight, self.bias, padding=1)
        return F.relu(out) if self.relu else out


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

    def use_winograd_convs(self, tile: int = WINOGRAD_TILE) -> int:
        """Run the BN-folded 3x3 convs (each with its ReLU) by the native Winograd kernel,
        where their channel counts suit it; inference only. Returns how many were changed.

        F(4x4, 3x3) needs 36 products per 4x4 outputs and channel pair instead of 144
        (F(2x2, 3x3): 16 instead of 36); these convs were a third of a float32 encode and
        ran at the FMA peak already.
        The slots of the ReLU and of the folded BN become identities, so indices stay.
        """
        changed = 0
        for seq in self.modules():
            if not isinstance(seq, nn.Sequential):
                continue
            for i in range(len(seq) - 2):
                conv, folded, relu = seq[i], seq[i + 1], seq[i + 2]
                if (
                    WinogradConv3x3.applies_to(conv)
                    and isinstance(folded, nn.Identity)
                    and isinstance(relu, nn.ReLU)
                ):
                    seq[i] = WinogradConv3x3(conv, relu=True, tile=tile)  # type: ignore[arg-type]
                    seq[i + 2] = nn.Identity()
                    changed += 1
        return changed

    def forward(self, image: Tensor) -> Tensor:
        d1 = self.down1(image)
        d2 = self.down2(self.down1_pool(d1))
        d3 = self.down3(self.down2_pool(d2))
        u2 = _conv_of_concatenation(self.up2, d2, self.upsample2(d3))
        u1 = _conv_of_concatenation(self.up1, d1, self.upsample1(u2))
        return self.classifier(u1)


def _conv_of_concatenation(layers: nn.Sequential, skip: Tensor, upsampled: Tensor) -> Tensor:
    """``layers(torch.cat([skip, upsampled], 1))``; a Winograd first layer reads both
    inputs where they are, saving the concatenated copy (a full-resolution pass)."""
    head = layers[0]
    if isinstance(head, WinogradConv3x3):
        return layers[1:](head(skip, upsampled))
    return layers(torch.cat([skip, upsampled], dim=1))
