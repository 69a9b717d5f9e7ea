"""FFSSmall: our own small member of the Fast-FoundationStereo family, split in two stages.

    features(left, right) -> {features_left_04, features_left_08, features_left_16,
    features_left_32,
                              features_right_04, stem_2x}                       (stage 1,
                              feature_runner)
    gwc = gwc_volume(features_left_04, features_right_04)                       (between the
    stages)
    post(features_left_04, ..., stem_2x, gwc_volume) -> disparity [B,1,H,W]    (stage 2,
    post_runner; with_confidence=True also returns the confidence [B,1,H,W] in 0..1)
    forward(left, right) = post(**features(left, right), gwc_volume=gwc(...))

Inputs are float32 [B,3,H,W] RGB in 0..255 (ImageNet normalisation happens inside `features`), H
and W multiples of 32. Disparity is left-referenced, in pixels of the input.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
import torch.nn.functional as F

from .aggregate2d import Aggregation2d
from .backbone import FeatureNet
from .filtering import CostFilter
from .refine import ContextNet, GeometryLookup, UpdateBlock
from .refine_local import LocalRefine
from .upsample import ConvexUpsampler
from .upsample4 import Convex4Upsampler
from .volume import ConcatVolume, build_gwc
from .widths import shrink

FEATURE_NAMES = (
    'features_left_04',
    'features_left_08',
    'features_left_16',
    'features_left_32',
    'features_right_04',
    'stem_2x',
)

DEFAULT_CONFIG = {
    'max_disp': 128,  # full-resolution pixels; volume depth D = max_disp // 4
    'cv_group': 8,
    'normalize': True,
    'valid_iters': 4,  # refinement iterations at inference
    'train_iters': 4,
    'enc': [24, 32, 48, 64, 96],  # encoder channels at 1/2, 1/4, 1/8, 1/16, 1/32
    'feat': [64, 64, 96, 96],  # decoder output channels at 1/4, 1/8, 1/16, 1/32
    'stem_ch': 24,
    'concat_ch': 8,
    'vol': [16, 24, 32, 48],  # hourglass channels at volume scales 1, 1/2, 1/4, 1/8
    'geo_ch': 4,
    'hidden': 48,
    'ctx': 48,
    'guide_ch': 8,  # joint-bilateral term of the upsampler (0: plain convex upsampling)
    # ---- block choices (the defaults are ffs_small's; docs/fast_tier.md: the faster ones) ----
    'enc_depth': 2,  # residual blocks per encoder stage at 1/4, 1/8, 1/16
    'enc_stem': 2,  # convs of the encoder's 1/2-resolution stem
    'shared_stem': False,  # stem_2x: the encoder's own left stem (enc[0] ch), not a separate one
    'light_decoder': False,  # feature decoder joins by 1x1 conv (then one 3x3), not 3x3
    'aggregation': 'axial3d',  # 'axial3d' (filtering.py) or '2d' (aggregate2d.py)
    'agg2d': [48, 64, 96],  # '2d' aggregation channels at 1/4, 1/8, 1/16
    'corr_skip': False,  # '2d': logits + a 1x1 conv of the volume (starts as winner-take-all)
    'context': 'net',  # 'net': ContextNet; 'agg': the '2d' aggregation's 1/4 features (no GRU)
    'ctx_mid': 64,  # ContextNet's inner width
    'upsampler': 'guided',  # 'guided' (upsample.py, head at 1/2) or 'convex4' (upsample4.py)
    'up_mid': 48,  # 'convex4' head width
    'local_refine': 0,  # width of the 1/4 disparity correction (refine_local.py); 0 = none
    # structured pruning: {first conv path: width} of inner widths shrunk (model/widths.py)
    'pruned': {},
}

# the keys above added with the block choices (older checkpoints: the defaults, ffs_small's blocks)
BLOCK_CHOICES = (
    'enc_depth',
    'enc_stem',
    'shared_stem',
    'light_decoder',
    'aggregation',
    'agg2d',
    'corr_skip',
    'context',
    'ctx_mid',
    'upsampler',
    'up_mid',
    'local_refine',
    'pruned',
)
AGGREGATIONS = ('axial3d', '2d')
UPSAMPLERS = ('guided', 'convex4')


# Confidence: the probability mass of the filtered cost volume within CONFIDENCE_RADIUS bins (1/4
# resolution; 1 bin = 4 px) of the final disparity, upsampled with the disparity's convex weights.
CONFIDENCE_RADIUS = 2.0


def volume_confidence(prob, disp4, radius: float = CONFIDENCE_RADIUS):
    """Return the mass of `prob` [B,D,h,w] within +-radius bins of `disp4` [B,1,h,w], in 0..1.

    The window is flat to radius - 0.5 and falls linearly to 0 at radius + 0.5, so the mass does
    not jump as the estimate moves between bins.
    """
    dvals = torch.arange(prob.shape[1], dtype=prob.dtype, device=prob.device).view(1, -1, 1, 1)
    window = (radius + 0.5 - (dvals - disp4).abs()).clamp(0.0, 1.0)
    return (prob * window).sum(1, keepdim=True)


def make_config(overrides=None):
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    for k, v in (overrides or {}).items():
        if k not in cfg:
            raise ValueError(f'unknown model config key {k!r}; known: {", ".join(cfg)}')
        cfg[k] = v
    if cfg['max_disp'] % 32 or cfg['max_disp'] <= 0:
        raise ValueError(f'max_disp must be a positive multiple of 32, got {cfg["max_disp"]}')
    for key, known in (('aggregation', AGGREGATIONS), ('upsampler', UPSAMPLERS)):
        if cfg[key] not in known:
            raise ValueError(f'model.{key} {cfg[key]!r}: choose one of {", ".join(known)}')
    if cfg['context'] not in ('net', 'agg'):
        raise ValueError(f"model.context {cfg['context']!r}: choose 'net' or 'agg'")
    if cfg['context'] == 'agg' and (
        cfg['aggregation'] != '2d' or cfg['valid_iters'] or cfg['train_iters']
    ):
        raise ValueError(
            "model.context 'agg' needs aggregation '2d' and no refinement "
            '(valid_iters = train_iters = 0)'
        )
    if cfg['shared_stem'] and cfg['stem_ch'] != cfg['enc'][0]:
        raise ValueError(
            f'shared_stem: stem_2x is the encoder stem, so stem_ch must be enc[0] = '
            f'{cfg["enc"][0]}, got {cfg["stem_ch"]}'
        )
    if cfg['feat'][0] % cfg['cv_group']:
        raise ValueError(
            f'1/4 features ({cfg["feat"][0]} ch) must split into cv_group={cfg["cv_group"]}'
        )
    return cfg


class FFSSmall(nn.Module):
    def __init__(self, config=None):
        super().__init__()
        cfg = make_config(config)
        self.config = cfg
        self.max_disp = cfg['max_disp']
        self.cv_group = cfg['cv_group']
        self.normalize = cfg['normalize']
        self.valid_iters = cfg['valid_iters']
        self.num_disp = self.max_disp // 4
        f4, f8, f16, f32 = cfg['feat']
        self.feature_net = FeatureNet(
            cfg['enc'],
            cfg['feat'],
            cfg['stem_ch'],
            cfg['enc_depth'],
            cfg['shared_stem'],
            cfg['light_decoder'],
            cfg['enc_stem'],
        )
        if cfg['aggregation'] == 'axial3d':
            self.concat = ConcatVolume(f4, cfg['concat_ch'], self.num_disp)
            self.cost_filter = CostFilter(
                self.cv_group + 2 * cfg['concat_ch'], cfg['vol'], cfg['feat'], cfg['geo_ch']
            )
            geo_ch = cfg['geo_ch']
        else:  # '2d': GWC volume only, disparity as channels; the logits are the geometry
            self.concat = None
            self.cost_filter = Aggregation2d(
                self.cv_group, self.num_disp, cfg['agg2d'], cfg['feat'], cfg['corr_skip']
            )
            geo_ch = 1
        # the GRU refinement exists only if some iterations are configured
        refine = bool(cfg['train_iters'] or cfg['valid_iters'])
        if cfg['context'] == 'agg':
            self.context, hidden = None, cfg['agg2d'][0]
        else:
            ctx = cfg['ctx'] if refine else 0
            self.context = ContextNet(f4, cfg['hidden'], ctx, cfg['ctx_mid'])
            hidden = cfg['hidden']
        if refine:
            self.lookup = GeometryLookup(levels=2)
            lookup_ch = 2 * 9 * (geo_ch + 1)
            self.update = UpdateBlock(lookup_ch, cfg['hidden'], cfg['ctx'])
        else:
            self.lookup = self.update = None
        self.local_refine = (
            LocalRefine(hidden, cfg['local_refine']) if cfg['local_refine'] else None
        )
        stem_ch = cfg['enc'][0] if cfg['shared_stem'] else cfg['stem_ch']
        if cfg['upsampler'] == 'guided':
            self.upsampler = ConvexUpsampler(hidden, stem_ch, cfg['guide_ch'])
        else:
            self.upsampler = Convex4Upsampler(hidden, stem_ch, cfg['up_mid'])
        if cfg['pruned']:
            shrink(self, cfg['pruned'])  # a pruned model: its inner widths as recorded

    # ---- stage 1 ----
    def features(self, left, right):
        """Map left, right float32 [B,3,H,W] RGB 0..255 to the six upstream-named feature tensors.

        Returns them as a dict.
        """
        return self.feature_net(left, right)

    def gwc(self, features_left_04, features_right_04):
        """Return the contract's GWC volume [B,G,D,H/4,W/4] (float32)."""
        return build_gwc(
            features_left_04, features_right_04, self.cv_group, self.num_disp, self.normalize
        )

    # ---- stage 2 ----
    def post(
        self,
        features_left_04,
        features_left_08,
        features_left_16,
        features_left_32,
        features_right_04,
        stem_2x,
        gwc_volume,
        iters=None,
        return_all=False,
        with_confidence=False,
    ):
        """-> disparity [B,1,H,W] in pixels.

        with_confidence=True returns (disparity, confidence [B,1,H,W] in 0..1) (see
        :func:`volume_confidence`). return_all=True (training) returns a dict with the
        x4-upsampled initial and per-iteration predictions too ('confidence': None unless asked).
        """
        iters = self.valid_iters if iters is None else int(iters)
        if iters and self.update is None:
            raise ValueError('this model has no refinement (train_iters = valid_iters = 0)')
        vol = gwc_volume.float()
        if self.concat is not None:
            vol = torch.cat([vol, self.concat(features_left_04, features_right_04)], 1)
        geo, logits, *agg_feat = self.cost_filter(
            vol, features_left_04, features_left_08, features_left_16, features_left_32
        )
        prob = torch.softmax(logits, 1)  # [B,D,h,w]
        dvals = torch.arange(logits.shape[1], dtype=prob.dtype, device=prob.device).view(
            1, -1, 1, 1
        )
        disp = (prob * dvals).sum(1, keepdim=True)  # 1/4-pixel units
        preds = [disp] if return_all else None
        if self.context is None:
            h, ctx = agg_feat[0], None
        else:
            h, ctx = self.context(features_left_04)
        if self.local_refine is not None:
            disp = disp + self.local_refine(h, prob, disp)
            if return_all:
                preds.append(disp)
        pyr = self.lookup.build(geo, features_left_04, features_right_04) if iters else None
        for _ in range(iters):
            looked = self.lookup(pyr, disp.detach() if self.training else disp)
            h, delta = self.update(h, ctx, looked, disp)
            disp = disp + delta
            if return_all:
                preds.append(disp)
        conf = None
        if with_confidence:
            full, conf = self.upsampler(disp, h, stem_2x, extra=volume_confidence(prob, disp))
        else:
            full = self.upsampler(disp, h, stem_2x)
        if not return_all:
            return (full, conf) if with_confidence else full
        ups = [
            F.interpolate(p * 4.0, scale_factor=4.0, mode='bilinear', align_corners=False)
            for p in preds
        ]
        return {'final': full, 'init': ups[0], 'iters': ups[1:], 'confidence': conf}

    def forward(self, left, right, iters=None, with_confidence=False):
        f = self.features(left, right)
        vol = self.gwc(f['features_left_04'], f['features_right_04'])
        return self.post(**f, gwc_volume=vol, iters=iters, with_confidence=with_confidence)


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())
