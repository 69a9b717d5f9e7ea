"""OpenCV semi-global block matching: the CPU baseline backend."""

from __future__ import annotations

import time

import cv2
import numpy as np

from .base import MatcherInfo, StereoMatcher, check_pair


class ImageTooNarrow(ValueError):
    """The pair is narrower than OpenCV's SGBM can handle with this disparity range.

    Carries `problem` and `fix` like the pipeline's InputError (which the pipeline turns it
    into), so the node refuses the frame as bad input instead of reporting an internal error.
    """

    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f'{problem}; fix: {fix}')


class SGBMMatcher(StereoMatcher):
    """StereoSGBM (3-way), block 5, left-right consistency check, speckle filtering.

    `max_disparity` is rounded up to a multiple of 16 as OpenCV requires. Images must be wider
    than that range (`min_width`): narrower pairs raise ImageTooNarrow before OpenCV sees them.
    """

    def __init__(
        self,
        max_disparity: int = 192,
        block_size: int = 5,
        uniqueness: int = 10,
        lr_max_diff: int = 1,
        speckle_window: int = 100,
        speckle_range: int = 2,
    ) -> None:
        super().__init__()
        if max_disparity < 1:
            raise ValueError(f'max_disparity must be >= 1, got {max_disparity}')
        if block_size < 1 or block_size % 2 == 0:
            raise ValueError(f'block_size must be a positive odd number, got {block_size}')
        self.num_disparities = int(np.ceil(max_disparity / 16.0) * 16)
        self.block_size = int(block_size)
        self._last_hw = None
        channels = 3
        self._params = {
            'minDisparity': 0,
            'numDisparities': self.num_disparities,
            'blockSize': block_size,
            'P1': 8 * channels * block_size**2,
            'P2': 32 * channels * block_size**2,
            'disp12MaxDiff': lr_max_diff,  # >= 0 enables OpenCV's left-right consistency check
            'uniquenessRatio': uniqueness,
            'speckleWindowSize': speckle_window,
            'speckleRange': speckle_range,
            'mode': cv2.STEREO_SGBM_MODE_SGBM_3WAY,
        }
        self._sgbm = cv2.StereoSGBM_create(**self._params)

    @property
    def min_width(self) -> int:
        """Narrowest image width (px) this matcher accepts: numDisparities + 1.

        Measured with OpenCV 5.0 (minDisparity 0, SGBM_3WAY, block sizes 1..51, heights 1..16, each
        width in its own process): width == numDisparities - 1 crashes the process (SIGSEGV, or
        SIGABRT from a heap check), width <= numDisparities otherwise raises cv2.error (a bogus
        18-exabyte allocation or the buffer_area assertion), every width > numDisparities works.
        The block size plays no part in that limit.
        """
        return self.num_disparities + 1

    def check_width(self, width: int) -> None:
        """Raise ImageTooNarrow unless `width` px can be matched (see min_width)."""
        if width >= self.min_width:
            return
        fits = (width - 1) // 16 * 16  # the largest disparity range that fits this width
        if fits >= 16:
            fix = (
                f'set max_disparity to {fits}.0 or less (sgbm rounds it up to a multiple of 16 '
                'and '
                f'needs a range narrower than the image), or publish wider images'
            )
        else:
            fix = 'publish images at least 17 px wide (sgbm cannot match narrower ones at all)'
        raise ImageTooNarrow(
            f'image width {width} px is too narrow for backend sgbm with a '
            f'{self.num_disparities}-px '
            f'disparity range (max_disparity rounded up to a multiple of 16); it needs images at '
            f'least {self.min_width} px wide',
            fix,
        )

    @property
    def info(self) -> MatcherInfo:
        window = None
        if self._last_hw is not None:
            # where SGBM can produce disparities, as stereo_image_proc reports it: not the leftmost
            # numDisparities + border - 1 columns (no match possible), not the block's border
            # elsewhere
            h, w = self._last_hw
            border = self.block_size // 2
            x0, x1 = self.num_disparities + border - 1, w - 1 - border
            y0, y1 = border, h - 1 - border
            window = (x0, y0, max(0, x1 - x0), max(0, y1 - y0))
        return MatcherInfo(
            backend='sgbm',
            device='cpu',
            model=f'OpenCV StereoSGBM (D={self.num_disparities})',
            valid_window=window,
            max_disparity=float(self.num_disparities),
        )

    def match(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        check_pair(left, right)
        self.check_width(left.shape[1])  # never hand OpenCV a size it crashes on
        if self._last_hw is not None and left.shape[:2] != self._last_hw:
            # OpenCV keeps SGBM's work buffer at the largest size seen (hundreds of MB after one
            # huge
            # frame): a new matcher object keeps memory at the current size's
            self._sgbm = cv2.StereoSGBM_create(**self._params)
        self._last_hw = left.shape[:2]
        t0 = time.perf_counter()
        raw = self._sgbm.compute(left, right)  # int16, 4 fractional bits; invalid = -16
        disp = raw.astype(np.float32) * (1.0 / 16.0)
        disp[raw <= 0] = np.nan
        self.last_timings = {'match': (time.perf_counter() - t0) * 1e3}
        return disp
