"""The shipped Fast DDS shared-memory profile (config/fastdds_shm.xml) and how to enable it.

Fast DDS reads FASTDDS_DEFAULT_PROFILES_FILE when the first participant is created, so this
must run before rclpy.init() in the process (and the peer processes need it too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping, Optional

from ..paths import config_file

PROFILE_ENV = 'FASTDDS_DEFAULT_PROFILES_FILE'


def shm_profile_path() -> Path:
    """Absolute path of the shipped profile."""
    return config_file('fastdds_shm.xml').resolve()


def use_shm_profile(env: Optional[MutableMapping[str, str]] = None, override: bool = False) -> str:
    """Point `env` (default os.environ) at the shipped profile unless it already names one.

    With `override`, it is pointed there even then. Returns the profile path in effect.
    """
    env = os.environ if env is None else env
    if override or not env.get(PROFILE_ENV):
        path = shm_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f'Fast DDS profile {path} is missing; reinstall ffs_ros')
        env[PROFILE_ENV] = str(path)
    return env[PROFILE_ENV]
