"""Tiny stand-ins for Fast-FoundationStereo exports, generated inside the tests.

And their own contract checks.

They use exactly the upstream tensor names, layouts and dtypes: feature graph left/right float32
[1,3,H,W] 0..255 (ImageNet normalisation inside) -> features_left_04/08/16/32, features_right_04,
stem_2x; post graph takes those plus gwc_volume float16 [1,G,D,H/4,W/4] and outputs disp [1,1,H,W];
single graph left_image/right_image (pre-normalised) -> disparity.

``matching`` modules compute a real disparity: 1/4 features are the 4x4 pixel-unshuffled normalised
image, so a textured pair shifted by a multiple of 4 px correlates perfectly at the true disparity
and the post graph's sharp soft-argmin over the cosine volume returns it. ``random`` modules add
random convolutions (for parity tests).
"""

from __future__ import annotations

from pathlib import Path
import warnings

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ffs_ros.contract.gwc import gwc_volume_torch

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
FEATURE_OUTPUTS = [
    'features_left_04',
    'features_left_08',
    'features_left_16',
    'features_left_32',
    'features_right_04',
    'stem_2x',
]
POST_INPUTS = FEATURE_OUTPUTS + ['gwc_volume']


class TinyFeature(nn.Module):
    """left/right 0..255 -> the six upstream feature tensors (48 channels at 1/4)."""

    def __init__(self, random: bool = False, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.random = random
        self.mix = nn.Conv2d(48, 48, 1)
        self.c08 = nn.Conv2d(48, 16, 3, padding=1)
        self.c16 = nn.Conv2d(16, 24, 3, padding=1)
        self.c32 = nn.Conv2d(24, 8, 3, padding=1)
        self.stem = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.2

    def forward(self, left, right):
        x = torch.cat([left, right], 0) / 255.0
        x = (x - MEAN) / STD
        f4 = F.pixel_unshuffle(x, 4)
        if self.random:
            f4 = f4 + 0.5 * torch.tanh(self.mix(f4))
        f8 = torch.relu(self.c08(F.avg_pool2d(f4, 2)))
        f16 = torch.relu(self.c16(F.avg_pool2d(f8, 2)))
        f32 = torch.relu(self.c32(F.avg_pool2d(f16, 2)))
        stem = torch.relu(self.stem(x[0:1]))
        return f4[0:1], f8[0:1], f16[0:1], f32[0:1], f4[1:2], stem


class TinyPost(nn.Module):
    """Features + gwc_volume (fp16) -> disp [1,1,H,W].

    `use_16=False` leaves features_left_16 unused (dropped).
    """

    def __init__(
        self,
        num_disp: int,
        beta: float = 200.0,
        use_16: bool = True,
        random: bool = False,
        seed: int = 1,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.beta, self.use_16, self.random = beta, use_16, random
        self.register_buffer('d', torch.arange(num_disp, dtype=torch.float32).view(1, -1, 1, 1))
        self.w08 = nn.Conv2d(16, 1, 1)
        self.w16 = nn.Conv2d(24, 1, 1)
        self.w32 = nn.Conv2d(8, 1, 1)
        self.w2 = nn.Conv2d(16, 1, 1)
        self.agg = nn.Conv3d(8, 1, 3, padding=1)
        for p in self.parameters():
            if p is not self.d:
                p.data = torch.randn(p.shape, generator=g) * 0.1

    def forward(
        self,
        features_left_04,
        features_left_08,
        features_left_16,
        features_left_32,
        features_right_04,
        stem_2x,
        gwc_volume,
    ):
        v = gwc_volume.float()
        cost = v.mean(1)
        if self.random:
            cost = cost + self.agg(v)[:, 0]
        h4, w4 = cost.shape[2:]
        bias = (
            F.interpolate(self.w08(features_left_08), size=(h4, w4))
            + F.interpolate(self.w32(features_left_32), size=(h4, w4))
            + features_left_04.mean(1, keepdim=True) * 0
            + features_right_04.mean(1, keepdim=True) * 0
        )
        if self.use_16:
            bias = bias + F.interpolate(self.w16(features_left_16), size=(h4, w4))
        prob = torch.softmax(cost * self.beta, dim=1)
        disp4 = (prob * self.d).sum(1, keepdim=True)
        scale = 1e-3 if not self.random else 0.5
        disp4 = disp4 + scale * torch.tanh(bias)
        disp = F.interpolate(disp4 * 4.0, scale_factor=4, mode='bilinear', align_corners=False)
        return disp + scale * torch.tanh(
            F.interpolate(self.w2(stem_2x), scale_factor=2, mode='nearest')
        )


class TinySingle(nn.Module):
    """Isaac-style single graph.

    Pre-normalised left_image/right_image -> disparity (GWC inside the graph).
    """

    def __init__(self, num_disp: int, groups: int = 8) -> None:
        super().__init__()
        self.num_disp, self.groups = num_disp, groups
        self.register_buffer('d', torch.arange(num_disp, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, left_image, right_image):
        fl = F.pixel_unshuffle(left_image / 255.0, 4)
        fr = F.pixel_unshuffle(right_image / 255.0, 4)
        v = gwc_volume_torch(fl, fr, self.groups, self.num_disp, True)
        prob = torch.softmax(v.mean(1) * 200.0, dim=1)
        disp4 = (prob * self.d).sum(1, keepdim=True)
        return F.interpolate(disp4 * 4.0, scale_factor=4, mode='bilinear', align_corners=False)


def _export(module, args, path, inputs, outputs, dynamic=False):
    axes = None
    if dynamic:
        axes = {}
        for n, a in zip(inputs, args):
            if a.dim() == 4:
                axes[n] = {
                    2: 'h' if n in ('left', 'right', 'left_image', 'right_image') else f'h_{n}',
                    3: 'w' if n in ('left', 'right', 'left_image', 'right_image') else f'w_{n}',
                }
            else:
                axes[n] = {3: 'h4', 4: 'w4'}
        for n in outputs:
            axes[n] = {2: f'oh_{n}', 3: f'ow_{n}'}
    with warnings.catch_warnings():
        warnings.simplefilter(
            'ignore'
        )  # TorchScript-exporter deprecation and tracer warnings (no onnxscript here)
        torch.onnx.export(
            module,
            tuple(args),
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            opset_version=17,
            dynamo=False,
            dynamic_axes=axes,
        )


def make_two_stage(
    out_dir,
    height=128,
    width=256,
    max_disp=64,
    normalize=True,
    random=False,
    use_16=True,
    dynamic=False,
    gwc_dtype=torch.float16,
    yaml_extra=None,
    seed=0,
):
    """Export a tiny two-stage model to out_dir; return (feature_module, post_module, out_dir)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    feat = TinyFeature(random=random, seed=seed).eval()
    post = TinyPost(max_disp // 4, use_16=use_16, random=random, seed=seed + 1).eval()
    left = torch.rand(1, 3, height, width) * 255
    right = torch.rand(1, 3, height, width) * 255
    with torch.no_grad():
        feats = feat(left, right)
        vol = gwc_volume_torch(feats[0], feats[4], 8, max_disp // 4, normalize).to(gwc_dtype)
        _export(
            feat,
            (left, right),
            out_dir / 'feature_runner.onnx',
            ['left', 'right'],
            FEATURE_OUTPUTS,
            dynamic,
        )
        _export(post, (*feats, vol), out_dir / 'post_runner.onnx', POST_INPUTS, ['disp'], dynamic)
    lines = [f'max_disp: {max_disp}', 'valid_iters: 4', f'image_size: [{height}, {width}]']
    if normalize is not None:
        lines.append(f'normalize: {str(bool(normalize)).lower()}')
    lines += list(yaml_extra or [])
    (out_dir / 'onnx.yaml').write_text('\n'.join(lines) + '\n')
    return feat, post, out_dir


def make_single(path, height=128, width=256, max_disp=64, dynamic=False):
    module = TinySingle(max_disp // 4).eval()
    x = torch.rand(1, 3, height, width)
    with torch.no_grad():
        _export(module, (x, x), path, ['left_image', 'right_image'], ['disparity'], dynamic)
    return module, Path(path)


def torch_two_stage(feat, post, left_u8, right_u8, max_disp, normalize, gwc_dtype=torch.float16):
    """Compute the reference: the same modules in torch.

    On HxWx3 uint8 images already at the network size -> HxW disparity.
    """
    with torch.no_grad():
        lft = torch.from_numpy(left_u8).permute(2, 0, 1)[None].float()
        r = torch.from_numpy(right_u8).permute(2, 0, 1)[None].float()
        feats = feat(lft, r)
        vol = gwc_volume_torch(feats[0], feats[4], 8, max_disp // 4, normalize).to(gwc_dtype)
        return post(*feats, vol)[0, 0].numpy()


# -- the generated files really are shaped like upstream exports ----------------------------------


def test_generated_two_stage_matches_upstream_names_and_dtypes(tmp_path):
    import onnx

    make_two_stage(tmp_path, use_16=False)
    post = onnx.load(str(tmp_path / 'post_runner.onnx'))
    names = [i.name for i in post.graph.input]
    assert 'features_left_16' not in names, (
        'the unused input must be dropped as in upstream 20-30-48'
    )
    gwc = next(i for i in post.graph.input if i.name == 'gwc_volume')
    assert gwc.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert [d.dim_value for d in gwc.type.tensor_type.shape.dim] == [1, 8, 16, 32, 64]
    feat = onnx.load(str(tmp_path / 'feature_runner.onnx'))
    assert [o.name for o in feat.graph.output] == FEATURE_OUTPUTS
    assert [d.dim_value for d in feat.graph.output[0].type.tensor_type.shape.dim] == [
        1,
        48,
        32,
        64,
    ]


def shifted_pair(height, width, disparity, seed=0):
    """Random smooth texture with left(x) = right(x - d) for an integer d.

    Exact, constant disparity d.
    """
    rng = np.random.default_rng(seed)
    base = rng.random((height // 2 + 1, (width + disparity) // 2 + 1, 3)).astype(np.float32)
    import cv2

    tex = cv2.resize(
        base,
        ((width + disparity) // 2 * 2 + 2, height // 2 * 2 + 2),
        interpolation=cv2.INTER_CUBIC,
    )
    tex = np.clip(tex * 255, 0, 255).astype(np.uint8)[:height]
    left = np.ascontiguousarray(tex[:,:width])
    right = np.ascontiguousarray(tex[:, disparity: disparity + width])
    return left, right
