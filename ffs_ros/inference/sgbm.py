"""OpenCV semi-global block matching: the CPU baseline backend."""
from __future__ import annotations

import time

import cv2
import numpy as np

from .base import MatcherInfo, StereoMatcher, check_pair


class SGBMMatcher(StereoMatcher):
    """StereoSGBM (3-way), block 5, left-right consistency check, speckle filtering.

    `max_disparity` is rounded up to a multiple of 16 as OpenCV requires.
    """

    def __init__(self, max_disparity: int = 192, block_size: int = 5, uniqueness: int = 10,
                 lr_max_diff: int = 1, speckle_window: int = 100, speckle_range: int = 2) -> None:
        super().__init__()
        if max_disparity < 1:
            raise ValueError(f'max_disparity must be >= 1, got {max_disparity}')
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f'block_size must be a positive odd number, got {block_size}')
        self.num_disparities = int(np.ceil(max_disparity / 16.0) * 16)
        channels = 3
        self._sgbm = cv2.StereoSGBM_create(
            minDisparity=0,
            numDisparities=self.num_disparities,
            blockSize=block_size,
            P1=8 * channels * block_size ** 2,
            P2=32 * channels * block_size ** 2,
            disp12MaxDiff=lr_max_diff,  # >= 0 enables OpenCV's left-right consistency check
            uniquenessRatio=uniqueness,
            speckleWindowSize=speckle_window,
            speckleRange=speckle_range,
            mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY,
        )

    @property
    def info(self) -> MatcherInfo:
        return MatcherInfo(backend='sgbm', device='cpu', model=f'OpenCV StereoSGBM (D={self.num_disparities})')

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        check_pair(left, right)
        t0 = time.perf_counter()
        raw = self._sgbm.compute(left, right)  # int16, 4 fractional bits; invalid = -16
        disp = raw.astype(np.float32) * (1.0 / 16.0)
        disp[raw <= 0] = np.nan
        self.last_timings = {'match': (time.perf_counter() - t0) * 1e3}
        return disp
