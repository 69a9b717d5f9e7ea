"""Confidence: how sure every disparity is, from every source, and what users do with it.

The shipped model's own confidence and the model-agnostic feature confidence on a pair with a
known-wrong region; the threshold mask in the pipeline; a one-output post graph (official
exports) still loads and gets the feature confidence; the left-right check; the sparsification
metric of `ffs-ros eval`.
"""

import numpy as np
import pytest

from ffs_ros.convert import image_to_numpy, make_camera_infos, numpy_to_image
from ffs_ros.inference import load_matcher
from ffs_ros.inference.base import MatcherInfo, MatchResult, StereoMatcher
from ffs_ros.inference.confidence import (
    LRCheckMatcher,
    feature_confidence_numpy,
    feature_confidence_torch,
    lr_difference,
    mirrored,
)
from ffs_ros.pipeline import PipelineConfig, StereoPipeline, Wanted
from ffs_ros.synth import render_scene
from ffs_ros.training import evaluate as ev


@pytest.fixture(scope='module')
def corrupted_pair():
    """Return a rendered scene whose left image has an 80x80 patch of noise (no true match)."""
    s = render_scene(np.random.default_rng(11), 240, 320, 64.0)
    left = s.left.copy()
    left[80:160, 160:240] = np.random.default_rng(0).integers(0, 256, (80, 80, 3), np.uint8)
    patch = np.zeros((240, 320), bool)
    patch[90:150, 170:230] = True
    rest = np.ones_like(patch)
    rest[70:170, 150:250] = False
    rest[:, :70] = False  # the left border has no right pixels for the near objects
    return left, s.right, s.disparity, patch, rest


@pytest.mark.parametrize('source', ['network', 'features'])
def test_known_wrong_region_gets_low_confidence(corrupted_pair, source):
    """Check that the shipped model's sources are low where the disparity is wrong.

    Measured: network 0.72 in the patch vs 1.00 elsewhere; features 0.06 vs 0.89.
    """
    left, right, gt, patch, rest = corrupted_pair
    m = load_matcher(None, backend='onnxruntime', confidence_source=source, threads=2)
    assert m.info.confidence == source
    r = m.match_full(left, right)
    err = np.abs(r.disparity - gt)
    # the premise: the disparity in the patch is wrong, elsewhere right
    assert np.nanmedian(err[patch]) > 2.0 and np.nanmedian(err[rest]) < 0.5
    c = r.confidence
    assert c.shape == gt.shape and c.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(c), np.isnan(r.disparity))
    assert np.nanmin(c) >= 0.0 and np.nanmax(c) <= 1.0
    inside, outside = np.nanmean(c[patch]), np.nanmean(c[rest])
    if source == 'network':
        assert inside < 0.85 and outside > 0.95
    else:
        assert inside < 0.3 and outside > 0.7
    # match() stays the disparity contract, identical to match_full's
    np.testing.assert_array_equal(m.match(left, right), r.disparity)


def test_feature_confidence_numpy_and_torch_agree():
    import torch

    rng = np.random.default_rng(3)
    vol = rng.uniform(-1, 1, (1, 8, 16, 12, 20)).astype(np.float32)
    vol[0, :, 5] += 1.5  # a clear peak at bin 5 (20 px) everywhere
    disp = np.full((48, 80), 20.0, np.float32)
    disp[:, 40:] = 60.0  # right half: the estimate sits far from the peak
    a = feature_confidence_numpy(vol, disp)
    b = feature_confidence_torch(torch.from_numpy(vol), torch.from_numpy(disp)[None, None])
    np.testing.assert_allclose(a, b[0, 0].numpy(), atol=1e-5)
    assert a.shape == (48, 80)
    assert a[:, 24:36].min() > 0.9 and a[:, 48:].max() < 0.1
    # float16 volumes (what the host path builds for fp16 post graphs) give the same
    half = feature_confidence_numpy(vol.astype(np.float16), disp)
    np.testing.assert_allclose(half, a, atol=2e-3)


# ---- the pipeline: topic, statistics, threshold mask --------------------------------------------
W, H, FX, B = 96, 64, 400.0, 0.12


class ConfidentMatcher(StereoMatcher):
    """A constant disparity with a known confidence ramp (0 at the left edge, 1 at the right)."""

    def __init__(self, disparity=24.0, confidence='network'):
        super().__init__()
        self.d = float(disparity)
        self.source = confidence
        self.ramp = np.tile(np.linspace(0, 1, W, dtype=np.float32), (H, 1))

    @property
    def info(self):
        return MatcherInfo(backend='fake', confidence=self.source)

    def match(self, left, right):
        return self.match_full(left, right).disparity

    def match_full(self, left, right):
        d = np.full((H, W), self.d, np.float32)
        d[:, :30] = np.nan  # invalid on the left
        c = self.ramp.copy()
        c[np.isnan(d)] = np.nan
        return MatchResult(d, c if self.source else None)


def _msgs():
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), np.uint8)
    left, right = numpy_to_image(rgb, 'rgb8'), numpy_to_image(rgb, 'rgb8')
    left.header.frame_id = 'left_optical'
    li, ri = make_camera_infos(W, H, FX, B)
    return left, right, li, ri


def test_threshold_masks_exactly_the_pixels_below_it():
    m = ConfidentMatcher()
    pipe = StereoPipeline(m, PipelineConfig(confidence_threshold=0.6))
    wanted = Wanted(disparity=True, depth=True, cloud=True, confidence=True)
    out = pipe.process(*_msgs(), wanted)
    ramp = m.ramp
    keep = (ramp >= 0.6) & (np.arange(W) >= 30)[None, :]
    disp = image_to_numpy(out.disparity.image)
    np.testing.assert_array_equal(np.isfinite(disp), keep)
    depth = image_to_numpy(out.depth)
    np.testing.assert_array_equal(np.isfinite(depth), keep)
    np.testing.assert_allclose(depth[keep], FX * B / 24.0, rtol=1e-5)
    pts = np.frombuffer(bytes(out.cloud.data), np.float32).reshape(H, W, -1)
    np.testing.assert_array_equal(np.isfinite(pts[..., 2]), keep)
    # the confidence image: 32FC1, left header, the matcher's values (unmasked), NaN invalid
    c = out.confidence
    assert c.encoding == '32FC1' and c.header.frame_id == 'left_optical'
    conf = image_to_numpy(c)
    valid = np.arange(W)[None, :].repeat(H, 0) >= 30
    np.testing.assert_array_equal(conf[valid], ramp[valid])
    assert np.all(np.isnan(conf[~valid]))
    assert out.mean_confidence == pytest.approx(float(ramp[valid].mean()), rel=1e-6)
    assert out.masked_fraction == pytest.approx(1 - keep.sum() / valid.sum())
    assert out.valid_fraction == pytest.approx(keep.mean())


def test_threshold_off_keeps_everything_and_confidence_only_while_wanted():
    out = StereoPipeline(ConfidentMatcher()).process(*_msgs(), Wanted(confidence=False))
    assert out.confidence is None and out.masked_fraction == 0.0
    assert out.mean_confidence is not None
    disp = image_to_numpy(out.disparity.image)
    assert np.isfinite(disp[:, 30:]).all()


def test_threshold_without_a_confidence_is_a_configuration_error():
    with pytest.raises(ValueError, match='confidence_threshold 0.5 needs a confidence.*sgbm'):
        StereoPipeline(load_matcher(backend='sgbm'), PipelineConfig(confidence_threshold=0.5))
    with pytest.raises(ValueError, match=r'confidence_threshold must be in \[0, 1\)'):
        PipelineConfig(confidence_threshold=1.5).validate()
    # a matcher without confidence: outputs carry none, nothing is masked
    pipe = StereoPipeline(ConfidentMatcher(confidence=''))
    out = pipe.process(*_msgs(), Wanted(confidence=True))
    assert out.confidence is None and out.mean_confidence is None


# ---- model files: with and without a confidence output ------------------------------------------
@pytest.fixture(scope='module')
def exports(tmp_path_factory):
    """Our tiny model exported as shipped (disp + confidence) and cut to disp only (official)."""
    import onnx
    import onnx.utils
    from test_export import TINY
    import torch

    from ffs_ros.model import build_model
    from ffs_ros.model.export import export_two_stage

    root = tmp_path_factory.mktemp('conf_exports')
    torch.manual_seed(0)
    export_two_stage(build_model(TINY).eval(), root / 'with', 64, 96, dynamic=True)
    (root / 'without').mkdir()
    for f in ('feature_runner.onnx', 'onnx.yaml'):
        (root / 'without' / f).write_bytes((root / 'with' / f).read_bytes())
    post = str(root / 'with' / 'post_runner.onnx')
    names = [i.name for i in onnx.load(post).graph.input]
    onnx.utils.extract_model(post, str(root / 'without' / 'post_runner.onnx'), names, ['disp'])
    return root / 'with', root / 'without'


def test_one_output_post_graph_still_loads(exports):
    from ffs_ros.contract import detect_model

    with_dir, without_dir = exports
    assert detect_model(with_dir).confidence_output == 'confidence'
    src = detect_model(without_dir)
    assert src.confidence_output is None and src.disparity_output == 'disp'
    left, right = (np.random.default_rng(1).integers(0, 256, (64, 96, 3), np.uint8),) * 2
    full = load_matcher(with_dir, backend='onnxruntime', threads=1)
    cut = load_matcher(without_dir, backend='onnxruntime', threads=1)
    assert full.info.confidence == 'network' and cut.info.confidence == 'features'
    a, b = full.match_full(left, right), cut.match_full(left, right)
    np.testing.assert_allclose(a.disparity, b.disparity, atol=1e-4, equal_nan=True)
    assert b.confidence is not None and b.confidence.shape == (64, 96)
    off = load_matcher(without_dir, backend='onnxruntime', confidence_source='off')
    assert off.info.confidence == '' and off.match_full(left, right).confidence is None
    with pytest.raises(ValueError, match="has no 'confidence' output.*use 'features'"):
        load_matcher(without_dir, backend='onnxruntime', confidence_source='network')
    with pytest.raises(ValueError, match='confidence_source'):
        load_matcher(without_dir, backend='onnxruntime', confidence_source='bogus')


def test_single_graph_without_confidence_has_none(tmp_path):
    from test_inference_models import make_single

    _, path = make_single(tmp_path / 'model.onnx', 64, 96, 32)
    m = load_matcher(path, backend='onnxruntime', threads=1)
    assert m.info.confidence == ''
    img = np.random.default_rng(2).integers(0, 256, (64, 96, 3), np.uint8)
    assert m.match_full(img, img).confidence is None
    with pytest.raises(ValueError, match='features needs a two-stage model'):
        load_matcher(path, backend='onnxruntime', confidence_source='features')


# ---- the left-right check -----------------------------------------------------------------------
def test_lr_difference_reads_the_right_disparity_at_x_minus_d():
    d_left = np.full((4, 20), 3.0, np.float32)
    d_right = np.full((4, 20), 3.0, np.float32)
    d_right[:, 5] = 9.0  # the right pixel x=5 disagrees: left pixel 8 (= 5 + 3) sees it
    diff = lr_difference(d_left, d_right)
    assert np.isnan(diff[:, :3]).all()  # x - d < 0: no right pixel
    assert (diff[:, 8] == 6.0).all()
    others = np.ones(20, bool)
    others[[0, 1, 2, 8]] = False
    assert (diff[:, others] == 0).all()


class MirrorAwareMatcher(StereoMatcher):
    """d everywhere; on the mirrored pass (as the LR check calls it) a wrong stripe."""

    def __init__(self, d=4.0):
        super().__init__()
        self.d = d
        self.calls = 0

    @property
    def info(self):
        return MatcherInfo(backend='fake', confidence='network')

    def match(self, left, right):
        self.calls += 1
        out = np.full(left.shape[:2], self.d, np.float32)
        if self.calls % 2 == 0:  # the mirrored pass: right-image columns 10..14 disagree
            out[:, ::-1][:, 10:15] = self.d + 5
        return out

    def match_full(self, left, right):
        d = self.match(left, right)
        return MatchResult(d, np.full_like(d, 0.5))


def test_lr_check_drops_exactly_the_inconsistent_pixels():
    inner = MirrorAwareMatcher()
    m = LRCheckMatcher(inner, max_diff=1.0)
    img = np.zeros((6, 40, 3), np.uint8)
    r = m.match_full(img, img)
    bad = np.zeros(40, bool)
    bad[:4] = True  # x - d < 0
    bad[14:19] = True  # right columns 10..14 seen from left columns 14..18
    np.testing.assert_array_equal(np.isnan(r.disparity[0]), bad)
    np.testing.assert_array_equal(np.isnan(r.confidence), np.isnan(r.disparity))
    assert m.info.lr_check and m.info.confidence == 'network'
    assert inner.calls == 2 and 'lr_check' in m.last_timings
    sg = load_matcher(backend='sgbm', lr_check=True, lr_max_diff=2.0)
    assert isinstance(sg, LRCheckMatcher) and sg.max_diff == 2.0 and sg.info.backend == 'sgbm'
    with pytest.raises(ValueError, match='lr_max_diff must be > 0'):
        LRCheckMatcher(inner, 0.0)


def test_mirrored_pair_gives_the_right_disparity():
    """The right image's disparity, from the mirrored pass, on a real scene (shipped model)."""
    s = render_scene(np.random.default_rng(4), 128, 192, 32.0, min_objects=0, max_objects=0)
    m = load_matcher(None, backend='onnxruntime', threads=2)
    d_left = m.match(s.left, s.right)
    d_right = mirrored(m.match(mirrored(s.right), mirrored(s.left)))
    diff = lr_difference(d_left, d_right)
    assert np.nanmedian(diff) < 0.5  # a consistent pair: both directions agree


# ---- the sparsification metric ------------------------------------------------------------------
def test_sparsification_oracle_random_and_inverted():
    rng = np.random.default_rng(0)
    err = rng.exponential(1.0, 20000)
    bad = (err > 2).mean()
    oracle = ev.sparsification(err, -err)
    assert oracle['ratio'] == pytest.approx(1.0)
    assert oracle['at'][1.0] == pytest.approx(bad)
    assert oracle['at'][0.8] == pytest.approx(max(0.0, bad - 0.2) / 0.8, abs=1e-3)
    flat = ev.sparsification(err, np.ones_like(err))  # no information: the curve stays flat
    assert flat['auc'] == pytest.approx(0.99 * bad, rel=0.05)
    worst = ev.sparsification(err, err)  # most confident where the error is largest
    assert worst['at'][0.5] > bad > oracle['at'][0.5]
    nan_last = ev.sparsification(err, np.where(err > 2, np.nan, 1.0))  # NaN = least sure
    assert nan_last['ratio'] == pytest.approx(1.0, abs=0.01)
    with pytest.raises(ValueError):
        ev.sparsification(np.array([]), np.array([]))
