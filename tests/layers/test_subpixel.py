"""Sub-pixel rewrite of narrow transposed convolutions against the original layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from transtic.layers import deconv
from transtic.layers.subpixel import SubPixelConv, rewrite_narrow_deconvs


@pytest.mark.parametrize(("cin", "cout", "size"), [(16, 3, (6, 5)), (8, 8, (4, 7))])
def test_equals_the_transposed_convolution(cin, cout, size):
    torch.manual_seed(cin + cout)
    layer = deconv(cin, cout, kernel_size=5, stride=2).eval()
    x = torch.randn(2, cin, *size)
    with torch.no_grad():
        torch.testing.assert_close(SubPixelConv(layer)(x), layer(x), rtol=1e-5, atol=1e-5)


def test_only_narrow_stride2_5x5_layers_are_rewritten():
    model = nn.Module()
    model.last = deconv(16, 3, kernel_size=5)
    model.wide = deconv(16, 16, kernel_size=5)
    model.small_kernel = deconv(16, 3, kernel_size=3)
    assert rewrite_narrow_deconvs(model) == 1
    assert isinstance(model.last, SubPixelConv)
    assert type(model.wide) is nn.ConvTranspose2d
    assert type(model.small_kernel) is nn.ConvTranspose2d
    with pytest.raises(ValueError, match="stride-2 5x5"):
        SubPixelConv(model.small_kernel)
