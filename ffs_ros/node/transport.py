"""The shipped Fast DDS shared-memory profile (config/fastdds_shm.xml) and how to enable it.

Fast DDS reads its profiles file when the first participant is created, so this must run before
rclpy.init() in the process (and the peer processes need it too). Fast DDS 3.x (Kilted and
later, the PyPI wheels) reads FASTDDS_DEFAULT_PROFILES_FILE and warns that
FASTRTPS_DEFAULT_PROFILES_FILE is deprecated; 2.x (Humble, Jazzy, so JetPack 6 robots) reads only
FASTRTPS_DEFAULT_PROFILES_FILE. So FASTDDS_ is always set, FASTRTPS_ too where ROS_DISTRO names a
Fast DDS 2.x distro.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

from ..paths import config_file

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
LEGACY_PROFILE_ENV = 'FASTRTPS_DEFAULT_PROFILES_FILE'   # Fast DDS 2.x
FAST_DDS_2_DISTROS = ('humble', 'iron', 'jazzy')


def profile_env_names(env: Optional[MutableMapping[str, str]] = None) -> tuple:
    """Return the profile variables this distro's Fast DDS reads (by ROS_DISTRO; unset: wheels)."""
    env = os.environ if env is None else env
    if env.get('ROS_DISTRO', '').lower() in FAST_DDS_2_DISTROS:
        return PROFILE_ENV, LEGACY_PROFILE_ENV
    return (PROFILE_ENV,)


def shm_profile_path() -> Path:
    """Absolute path of the shipped profile."""
    return config_file('fastdds_shm.xml').resolve()


def use_shm_profile(env: Optional[MutableMapping[str, str]] = None, override: bool = False) -> str:
    """Point `env` (default os.environ) at the shipped profile unless it already names one.

    With `override`, it is pointed there even then. Returns the profile path in effect.
    """
    env = os.environ if env is None else env
    names = profile_env_names(env)
    given = next((env[n] for n in (PROFILE_ENV, LEGACY_PROFILE_ENV) if env.get(n)), None)
    if override or given is None:
        path = shm_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f'Fast DDS profile {path} is missing; reinstall ffs_ros')
        given = str(path)
    for name in names:   # the same file for both Fast DDS generations
        if override or not env.get(name):
            env[name] = given
    return given
