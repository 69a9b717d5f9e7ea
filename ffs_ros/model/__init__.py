"""Our own Fast-FoundationStereo-family networks (FFSSmall and fast blocks), checkpoints, export.

Public API (stable; used by the torch inference backend):

    load_model(checkpoint_path, device='cpu') -> FFSSmall in eval mode, with attributes
        max_disp (int, pixels), cv_group (int), normalize (bool), valid_iters (int)
      and methods
        features(left, right) -> dict(features_left_04, features_left_08, features_left_16,
        features_left_32,
                                      features_right_04, stem_2x)
        post(features_left_04, features_left_08, features_left_16, features_left_32,
        features_right_04,
             stem_2x, gwc_volume, iters=None) -> disparity [B,1,H,W]
        forward(left, right, iters=None) -> disparity [B,1,H,W]
      Inputs: float32 [B,3,H,W] RGB 0..255, H and W multiples of 32. gwc_volume: the contract's
      volume
      (ffs_ros.contract.gwc), [B, cv_group, max_disp // 4, H/4, W/4], any float dtype.

A checkpoint is a torch.save dict {'config': {...}, 'state_dict': ..., 'step': ..., ...}.
"""

from __future__ import annotations

from pathlib import Path

from .net import (
    BLOCK_CHOICES,
    DEFAULT_CONFIG,
    FEATURE_NAMES,
    FFSSmall,
    count_parameters,
    make_config,
)

__all__ = [
    'BLOCK_CHOICES',
    'DEFAULT_CONFIG',
    'FEATURE_NAMES',
    'FFSSmall',
    'build_model',
    'checkpoint_config',
    'count_parameters',
    'load_model',
    'make_config',
]


def build_model(config=None):
    """Return a fresh (untrained) FFSSmall with config overrides."""
    return FFSSmall(config)


def checkpoint_config(config):
    """Return a checkpoint's model config, completed for keys added since it was written.

    Keys added since the checkpoint was written are set to what it was trained with (checkpoints
    before the guided upsampler have no 'guide_ch': they used plain convex upsampling; checkpoints
    before the fast tier's block choices used the blocks those keys default to).
    """
    blocks = {k: DEFAULT_CONFIG[k] for k in BLOCK_CHOICES}
    return {**blocks, 'guide_ch': 0, **config}


def load_model(checkpoint_path, device='cpu'):
    """Load a checkpoint written by `ffs-ros train` (or models/ffs_small/ffs_small.pt).

    Returns the model in eval mode.
    """
    import torch

    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(
            f'checkpoint {path} not found; pass the .pt written by `ffs-ros train` '
            f'(e.g. models/ffs_small/ffs_small.pt)'
        )
    ck = torch.load(path, map_location='cpu', weights_only=False)
    if not isinstance(ck, dict) or 'state_dict' not in ck or 'config' not in ck:
        raise ValueError(
            f'{path} is not an ffs_ros checkpoint (expected a dict with config and state_dict)'
        )
    model = FFSSmall(checkpoint_config(ck['config']))
    model.load_state_dict(ck['state_dict'])
    model.step = int(ck.get('step', 0))
    return model.to(device).eval()
