"""Where the package's shipped files (models, config, launch) live, for both install styles."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent

# The shipped model tiers: name users give -> folder under models/. `fast` is real time on a CPU,
# `accurate` is the more accurate, slower model (the default on GPUs).
MODEL_TIERS = {'fast': 'ffs_fast', 'accurate': 'ffs_small'}
_MODEL_SUFFIXES = ('.onnx', '.pt', '.pth')


def share_dir() -> Path:
    """Return the directory holding models/, config/ and launch/.

    A source checkout or `pip install -e .` uses the repository root; a colcon install uses the
    ament share directory of the package.
    """
    if (_REPO_ROOT / 'package.xml').is_file():
        return _REPO_ROOT
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory('ffs_ros'))
    except Exception:  # noqa: BLE001 - ament index missing or package not registered
        return _REPO_ROOT


def models_root() -> Path:
    """Return the folder holding the model tiers (FFS_ROS_MODEL_DIR overrides the shipped one)."""
    env = os.environ.get('FFS_ROS_MODEL_DIR')
    return Path(env).expanduser() if env else share_dir() / 'models'


def _is_model(d: Path) -> bool:
    return d.is_dir() and any(p.suffix in _MODEL_SUFFIXES for p in d.iterdir())


def installed_tiers() -> dict:
    """Return tier name -> model folder for the tiers installed under :func:`models_root`.

    A root that is itself a model (FFS_ROS_MODEL_DIR naming one model) is the only tier: it
    answers for both names.
    """
    root = models_root()
    if _is_model(root):
        return dict.fromkeys(MODEL_TIERS, root)
    return {tier: root / sub for tier, sub in MODEL_TIERS.items() if _is_model(root / sub)}


def default_model_dir(tier: str = 'accurate') -> Path:
    """Return the folder of shipped model `tier` ('fast' or 'accurate'), installed or not."""
    if tier not in MODEL_TIERS:
        raise ValueError(f'unknown model tier {tier!r}; choose one of {", ".join(MODEL_TIERS)}')
    root = models_root()
    return root if _is_model(root) else root / MODEL_TIERS[tier]


def config_file(name: str = 'stereo.yaml') -> Path:
    return share_dir() / 'config' / name
