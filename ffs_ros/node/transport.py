"""The shipped Fast DDS shared-memory profile (config/fastdds_shm.xml) and how to enable it.

Fast DDS reads its profiles file when the first participant is created, so this must run before
rclpy.init() in the process (and the peer processes need it too). Fast DDS 3.x (Kilted) reads
FASTDDS_DEFAULT_PROFILES_FILE, 2.x (Humble, Jazzy, so JetPack 6 robots) only
FASTRTPS_DEFAULT_PROFILES_FILE: both are set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

from ..paths import config_file

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'
PROFILE_ENVS = (PROFILE_ENV, 'FASTRTPS_DEFAULT_PROFILES_FILE')   # Fast DDS 3.x, 2.x


def shm_profile_path() -> Path:
    """Absolute path of the shipped profile."""
    return config_file('fastdds_shm.xml').resolve()


def use_shm_profile(env: Optional[MutableMapping[str, str]] = None, override: bool = False) -> str:
    """Point `env` (default os.environ) at the shipped profile unless it already names one.

    With `override`, it is pointed there even then. Returns the profile path in effect.
    """
    env = os.environ if env is None else env
    given = next((env[n] for n in PROFILE_ENVS if env.get(n)), None)
    if override or given is None:
        path = shm_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f'Fast DDS profile {path} is missing; reinstall ffs_ros')
        given = str(path)
    for name in PROFILE_ENVS:   # the same file for both Fast DDS generations
        if override or not env.get(name):
            env[name] = given
    return given
