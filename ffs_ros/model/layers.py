"""Small building blocks shared by the model files (conv + batch norm + activation, 2D and 3D)."""

from __future__ import annotations

from torch import nn
import torch.nn.functional as F


def conv2d(cin, cout, k=3, stride=1, act=True, bn=True):
    """Conv2d (same padding) -> BatchNorm -> ReLU."""
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(cout))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def conv3d(cin, cout, k=(3, 3, 3), stride=1, act=True, bn=True):
    """Conv3d over (D, H, W) with same padding -> BatchNorm -> ReLU."""
    k = (k, k, k) if isinstance(k, int) else tuple(k)
    pad = tuple(x // 2 for x in k)
    layers = [nn.Conv3d(cin, cout, k, stride, pad, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm3d(cout))
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class ResBlock2d(nn.Module):
    """Two 3x3 convs with a residual connection (1x1 projection when the shape changes)."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.c1 = conv2d(cin, cout, 3, stride)
        self.c2 = conv2d(cout, cout, 3, act=False)
        self.skip = (
            None if (cin == cout and stride == 1) else conv2d(cin, cout, 1, stride, act=False)
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.c2(self.c1(x))
        return self.act(y + (x if self.skip is None else self.skip(x)))


class Axial3d(nn.Module):
    """Cheap 3D block: a (1,3,3) spatial conv then a (k,1,1) conv along disparity, residual."""

    def __init__(self, ch, kd=5):
        super().__init__()
        self.spatial = conv3d(ch, ch, (1, 3, 3))
        self.disp = conv3d(ch, ch, (kd, 1, 1), act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(x + self.disp(self.spatial(x)))


def up2_nearest(x):
    """Upsample every spatial axis (2D or 3D) x2, nearest-neighbour.

    4-D: F.interpolate (an ONNX Resize; ONNX Runtime runs a 4-D nearest Resize about 70x faster
    than the Expand below: 0.5 vs 32 ms for [2,64,60,80] on the 2-core dev CPU). 5-D: written as
    unsqueeze/expand/reshape, which ONNX Runtime runs much faster than a 5-D Resize. The values are
    the same either way.
    """
    if x.dim() == 4:
        return F.interpolate(x, scale_factor=2.0, mode='nearest')
    if x.dim() == 5:
        b, c, d, h, w = x.shape
        return (
            x[:,:,:, None,:, None,:, None]
            .expand(b, c, d, 2, h, 2, w, 2)
            .reshape(b, c, 2 * d, 2 * h, 2 * w)
        )
    raise ValueError(f'up2_nearest expects a 4-D or 5-D tensor, got {x.dim()}-D')
