"""The scene generator's ground truth is exact.

Warping the right view by the disparity gives the left view.
"""

import cv2
import numpy as np
import pytest

from ffs_ros.synth import StereoSample, plane_pair, render_scene


def _warp_error(sample, disparity):
    """Return |left - right warped by `disparity`| on non-occluded pixels off depth edges.

    Pixels on a depth edge are left out: bilinear sampling there mixes two surfaces (a property of
    the check, not of the ground truth).
    """
    h, w = disparity.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    warped = cv2.remap(
        sample.right.astype(np.float32), xs - disparity.astype(np.float32), ys, cv2.INTER_LINEAR
    )
    gt = sample.disparity
    jump = np.zeros((h, w), np.uint8)
    jump[:, 1:] |= np.abs(np.diff(gt, axis=1)) > 0.5
    jump[:,:-1] |= np.abs(np.diff(gt, axis=1)) > 0.5
    jump[1:] |= np.abs(np.diff(gt, axis=0)) > 0.5
    edge = cv2.dilate(jump, np.ones((5, 5), np.uint8)) > 0
    return np.abs(warped - sample.left.astype(np.float32)).max(axis=2)[~sample.occluded & ~edge]


@pytest.mark.parametrize(
    'seed,opts',
    [
        (0, {}),
        (1, {}),
        (2, {}),
        (3, {}),
        (4, {}),
        (5, {'lattice_prob': 0.6, 'hole_prob': 0.5, 'thin_prob': 0.4}),
    ],
)
def test_right_warped_by_ground_truth_reproduces_left(seed, opts):
    s = render_scene(
        np.random.default_rng(seed), 96, 160, max_disparity=40.0, photometric=False, **opts
    )
    err = _warp_error(s, s.disparity)
    # bilinear resampling of textures twice + object borders: small, but not zero
    assert np.median(err) < 3.0
    assert (err > 20).mean() < 0.02
    # the check is sharp: a disparity off by 1.5 px breaks it
    bad = _warp_error(s, s.disparity + 1.5)
    assert bad.mean() > 2.0 * err.mean()


def test_scene_fields_and_ranges():
    s = render_scene(np.random.default_rng(7), 64, 96, max_disparity=32.0)
    assert isinstance(s, StereoSample)
    assert s.left.shape == s.right.shape == (64, 96, 3) and s.left.dtype == np.uint8
    assert s.disparity.shape == (64, 96) and s.disparity.dtype == np.float32
    assert s.occluded.dtype == bool
    assert np.isfinite(s.disparity).all()
    assert s.disparity.min() >= 0.0 and s.disparity.max() <= 32.0 + 1e-3
    xs = np.arange(96)[None,:]
    assert s.occluded[xs - s.disparity < 0].all()  # off the right image's left edge


def test_scene_is_reproducible_from_seed():
    a = render_scene(np.random.default_rng(11), 48, 64, max_disparity=16.0)
    b = render_scene(np.random.default_rng(11), 48, 64, max_disparity=16.0)
    assert np.array_equal(a.left, b.left) and np.array_equal(a.disparity, b.disparity)


def test_plane_pair_constant_disparity():
    # plane at 2 m, fx 400 px, baseline 0.12 m -> 24 px
    s = plane_pair(64, 128, 400 * 0.12 / 2.0)
    assert np.all(s.disparity == np.float32(24.0))
    assert s.occluded[:,:24].all() and not s.occluded[:, 24:].any()
    assert np.array_equal(s.left[:, 24:], s.right[:,:-24])


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match='disparity'):
        plane_pair(32, 32, -1.0)
    with pytest.raises(ValueError, match='max_disparity'):
        render_scene(np.random.default_rng(0), 32, 32, max_disparity=0.0)
