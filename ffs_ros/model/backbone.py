"""Feature stage: a light CNN encoder, a top-down decoder and a 1/2-resolution stem.

The encoder runs on left and right batched; the decoder gives features at 1/4, 1/8, 1/16 and 1/32;
the stem is of the left image (for convex upsampling): a separate 2-conv stem, or (shared_stem)
the encoder's own 1/2-resolution stem of the left image, which costs nothing extra.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import ResBlock2d, conv2d, up2_nearest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Normalize(nn.Module):
    """RGB 0..255 -> ImageNet-normalised (inside the graph, as in the upstream feature runner)."""

    def __init__(self):
        super().__init__()
        self.register_buffer(
            'mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0, persistent=False
        )
        self.register_buffer(
            'std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0, persistent=False
        )

    def forward(self, x):
        return (x - self.mean) / self.std


class Encoder(nn.Module):
    """Bottom-up CNN: 1/2 -> 1/4 -> 1/8 -> 1/16 -> 1/32, channels enc[0..4].

    depth: residual blocks at 1/4, 1/8 and 1/16 (the first one strided); stem_convs: convs of the
    1/2-resolution stem (the first strided). Returns the 1/2 stem too.
    """

    def __init__(self, enc, depth=2, stem_convs=2):
        super().__init__()
        c0, c1, c2, c3, c4 = enc

        def stage(cin, cout):
            return nn.Sequential(
                ResBlock2d(cin, cout, 2), *(ResBlock2d(cout, cout) for _ in range(depth - 1))
            )

        self.stem = nn.Sequential(
            conv2d(3, c0, 3, 2), *(conv2d(c0, c0, 3) for _ in range(stem_convs - 1))
        )
        self.s4 = stage(c0, c1)
        self.s8 = stage(c1, c2)
        self.s16 = stage(c2, c3)
        self.s32 = nn.Sequential(ResBlock2d(c3, c4, 2))

    def forward(self, x):
        x2 = self.stem(x)
        x4 = self.s4(x2)
        x8 = self.s8(x4)
        x16 = self.s16(x8)
        x32 = self.s32(x16)
        return x2, x4, x8, x16, x32


class Decoder(nn.Module):
    """Top-down path: upsample the coarser output, concatenate the skip, fuse with a 3x3 conv."""

    def __init__(self, enc, out, light=False):
        super().__init__()
        _, c1, c2, c3, c4 = enc
        o4, o8, o16, o32 = out
        k = 1 if light else 3  # light: fuse skip and upsampled path by a 1x1 conv, then one 3x3
        self.p32 = conv2d(c4, o32, 3)
        self.p16 = nn.Sequential(conv2d(c3 + o32, o16, k), conv2d(o16, o16, 3))
        self.p8 = nn.Sequential(conv2d(c2 + o16, o8, k), conv2d(o8, o8, 3))
        self.p4 = nn.Sequential(conv2d(c1 + o8, o4, k), conv2d(o4, o4, 3, act=False, bn=False))

    @staticmethod
    def _up(x):
        return up2_nearest(x)

    def forward(self, x4, x8, x16, x32):
        f32 = self.p32(x32)
        f16 = self.p16(torch.cat([x16, self._up(f32)], 1))
        f8 = self.p8(torch.cat([x8, self._up(f16)], 1))
        f4 = self.p4(torch.cat([x4, self._up(f8)], 1))
        return f4, f8, f16, f32


class FeatureNet(nn.Module):
    """left, right [B,3,H,W] RGB 0..255 -> the upstream-named feature dict."""

    def __init__(
        self, enc, out, stem_ch, depth=2, shared_stem=False, light_decoder=False, stem_convs=2
    ):
        super().__init__()
        self.norm = Normalize()
        self.encoder = Encoder(enc, depth, stem_convs)
        self.decoder = Decoder(enc, out, light_decoder)
        self.stem2 = (
            None
            if shared_stem
            else nn.Sequential(conv2d(3, stem_ch, 3, 2), conv2d(stem_ch, stem_ch, 3))
        )

    def forward(self, left, right):
        b = left.shape[0]
        ln = self.norm(left)
        x = torch.cat([ln, self.norm(right)], 0)
        x2, *skips = self.encoder(x)
        f4, f8, f16, f32 = self.decoder(*skips)
        return {
            'features_left_04': f4[:b],
            'features_left_08': f8[:b],
            'features_left_16': f16[:b],
            'features_left_32': f32[:b],
            'features_right_04': f4[b:],
            'stem_2x': x2[:b] if self.stem2 is None else self.stem2(ln),
        }
