"""Where the package's shipped files (models, config, launch) live, for both install styles."""

from __future__ import annotations

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


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


def default_model_dir() -> Path:
    """Return the shipped default model (override with FFS_ROS_MODEL_DIR)."""
    env = os.environ.get('FFS_ROS_MODEL_DIR')
    if env:
        return Path(env)
    return share_dir() / 'models'


def config_file(name: str = 'stereo.yaml') -> Path:
    return share_dir() / 'config' / name
