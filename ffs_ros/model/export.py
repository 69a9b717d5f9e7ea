"""Export a trained FFSSmall to the upstream two-stage ONNX contract.

    feature_runner.onnx : left, right float32 [1,3,H,W] RGB 0..255 -> features_left_04,
    features_left_08,
                          features_left_16, features_left_32, features_right_04, stem_2x
    post_runner.onnx    : those six + gwc_volume float16 [1,G,D,H/4,W/4] -> disp float32 [1,1,H,W]
                          and confidence float32 [1,1,H,W] (0..1, how sure each disparity is)
    onnx.yaml           : max_disp, valid_iters, cv_group, normalize, image_size (+ our model
    config)

With dynamic=True the H and W axes are symbolic (any multiple of 32 at run time); image_size then
records the size used for tracing. Optionally a single graph (left_image, right_image -> disparity,
inputs already ImageNet-normalised on the 0..255 scale, like the Isaac ROS / NGC export) with the
volume built in-graph.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .net import FEATURE_NAMES

OPSET = 17


class _FeatureStage(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, left, right):
        f = self.model.features(left, right)
        return tuple(f[k] for k in FEATURE_NAMES)


class _PostStage(nn.Module):
    def __init__(self, model, iters):
        super().__init__()
        self.model = model
        self.iters = iters

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
        return self.model.post(
            features_left_04,
            features_left_08,
            features_left_16,
            features_left_32,
            features_right_04,
            stem_2x,
            gwc_volume.float(),
            iters=self.iters,
            with_confidence=True,
        )


class _SingleGraph(nn.Module):
    """Isaac-style single graph.

    Inputs normalised as (x - 255*mean) / (255*std); volume built in-graph.
    """

    def __init__(self, model, iters):
        super().__init__()
        self.model = model
        self.iters = iters

    def forward(self, left_image, right_image):
        norm = self.model.feature_net.norm
        left = left_image * norm.std + norm.mean  # undo: features() normalises again
        right = right_image * norm.std + norm.mean
        f = self.model.features(left, right)
        vol = self.model.gwc(f['features_left_04'], f['features_right_04'])
        return self.model.post(**f, gwc_volume=vol, iters=self.iters, with_confidence=True)


def _export(module, args, path, input_names, output_names, dynamic_axes):
    kwargs = {
        'opset_version': OPSET,
        'input_names': list(input_names),
        'output_names': list(output_names),
        'dynamic_axes': dynamic_axes or None,
        'do_constant_folding': True,
    }
    module.eval()  # the exporter restores the wrapper's mode afterwards: keep everything in eval
    try:
        torch.onnx.export(module, args, str(path), dynamo=False, **kwargs)
    except TypeError:  # older torch without the dynamo switch
        torch.onnx.export(module, args, str(path), **kwargs)


def export_two_stage(
    model,
    out_dir,
    height: int,
    width: int,
    iters=None,
    dynamic: bool = False,
    single: bool = False,
) -> Path:
    """Write feature_runner.onnx, post_runner.onnx and onnx.yaml to out_dir.

    Also model.onnx if single.
    """
    import yaml

    if height % 32 or width % 32:
        raise ValueError(
            f'export size {height}x{width}: H and W must be multiples of 32 '
            f'(e.g. {height // 32 * 32 or 32}x{width // 32 * 32 or 32})'
        )
    iters = model.valid_iters if iters is None else int(iters)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    left = torch.rand(1, 3, height, width) * 255
    right = torch.rand(1, 3, height, width) * 255
    dyn_img = {2: 'H', 3: 'W'}
    with torch.no_grad():
        feats = model.features(left, right)
        vol = model.gwc(feats['features_left_04'], feats['features_right_04']).half()
        fdyn = None
        if dynamic:
            fdyn = {'left': dyn_img, 'right': dyn_img}
            for k in FEATURE_NAMES:
                s = {
                    'features_left_08': 8,
                    'features_left_16': 16,
                    'features_left_32': 32,
                    'stem_2x': 2,
                }.get(k, 4)
                fdyn[k] = {2: f'H_{s}', 3: f'W_{s}'}
        _export(
            _FeatureStage(model),
            (left, right),
            out / 'feature_runner.onnx',
            ('left', 'right'),
            FEATURE_NAMES,
            fdyn,
        )
        pdyn = None
        if dynamic:
            pdyn = {k: v for k, v in fdyn.items() if k in FEATURE_NAMES}
            pdyn['gwc_volume'] = {3: 'H_4', 4: 'W_4'}
            pdyn['disp'] = dyn_img
            pdyn['confidence'] = dyn_img
        _export(
            _PostStage(model, iters),
            tuple(feats[k] for k in FEATURE_NAMES) + (vol,),
            out / 'post_runner.onnx',
            FEATURE_NAMES + ('gwc_volume',),
            ('disp', 'confidence'),
            pdyn,
        )
        if single:
            norm = model.feature_net.norm
            ln, rn = (left - norm.mean) / norm.std, (right - norm.mean) / norm.std
            sdyn = (
                {
                    'left_image': dyn_img,
                    'right_image': dyn_img,
                    'disparity': dyn_img,
                    'confidence': dyn_img,
                }
                if dynamic
                else None
            )
            _export(
                _SingleGraph(model, iters),
                (ln, rn),
                out / 'model.onnx',
                ('left_image', 'right_image'),
                ('disparity', 'confidence'),
                sdyn,
            )
    meta = {
        'max_disp': int(model.max_disp),
        'valid_iters': iters,
        'cv_group': int(model.cv_group),
        'normalize': bool(model.normalize),
        'image_size': [int(height), int(width)],
        'dynamic_size': bool(dynamic),
        'model': 'ffs_ros FFSSmall',
        'model_config': model.config,
    }
    (out / 'onnx.yaml').write_text(yaml.safe_dump(meta, sort_keys=False))
    return out
