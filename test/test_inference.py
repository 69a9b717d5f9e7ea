"""End-to-end matcher behaviour on CPU with tiny upstream-shaped ONNX exports generated here (ONNX Runtime)."""
import numpy as np
import pytest
import torch

from ffs_ros.inference import choose_backend, load_matcher
from ffs_ros.inference.contracts import detect_model
from test_inference_models import make_single, make_two_stage, shifted_pair, torch_two_stage


@pytest.fixture(scope='module')
def matching_model(tmp_path_factory):
    """Cosine volume + sharp soft-argmin: returns true disparities; fixed 128x256, D=16, features_left_16 dropped."""
    feat, post, d = make_two_stage(tmp_path_factory.mktemp('matching'), 128, 256, 64, use_16=False)
    return feat, post, d


@pytest.fixture(scope='module', params=[True, False], ids=['normalize', 'no-normalize'])
def random_model(request, tmp_path_factory):
    """Random convolutions around the volume, for parity with torch; both values of `normalize`."""
    norm = request.param
    feat, post, d = make_two_stage(tmp_path_factory.mktemp('random'), 64, 128, 32, normalize=norm, random=True)
    return feat, post, d, norm


def test_two_stage_onnx_matches_the_same_modules_in_torch(random_model):
    feat, post, d, norm = random_model
    left, right = shifted_pair(64, 128, 8, seed=1)
    m = load_matcher(d, 'onnxruntime', remove_invisible=False)
    out = m(left, right)
    ref = torch_two_stage(feat, post, left, right, 32, norm)
    valid = np.isfinite(out)
    assert valid.mean() > 0.5
    assert np.abs(out[valid] - ref[valid]).max() <= 0.05
    assert np.all(ref[~valid] <= 0)  # only non-positive disparities are reported invalid


def test_wrong_normalize_flag_changes_the_result(random_model, tmp_path):
    """The flag from onnx.yaml really reaches the volume (issue #26: a wrong flag gives garbage)."""
    feat, post, d, norm = random_model
    left, right = shifted_pair(64, 128, 8, seed=1)
    flipped = torch_two_stage(feat, post, left, right, 32, not norm)
    out = load_matcher(d, 'onnxruntime', remove_invisible=False)(left, right)
    valid = np.isfinite(out) & (flipped > 0)
    assert np.abs(out[valid] - flipped[valid]).max() > 0.5


def test_io_binding_path_gives_the_host_result(random_model):
    feat, post, d, norm = random_model
    left, right = shifted_pair(64, 128, 8, seed=2)
    host = load_matcher(d, 'onnxruntime')(left, right)
    m = load_matcher(d, 'onnxruntime', device='cpu', io_binding=True)
    bound = m(left, right)
    np.testing.assert_allclose(bound, host, atol=0.05, equal_nan=True)
    assert m.info.extra['io_binding'] is True
    assert set(m.last_timings) >= {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}


@pytest.mark.parametrize('in_hw,disp', [((160, 320), 20), ((96, 200), 8), ((200, 250), 25)])
def test_letterboxed_constant_disparity_comes_back_at_input_size(matching_model, in_hw, disp):
    """Sizes differ from the 128x256 graph: scale s<=1 + pad, then disparity resized back and divided by s."""
    _, _, d = matching_model
    left, right = shifted_pair(*in_hw, disp, seed=4)
    m = load_matcher(d, 'onnxruntime')
    out = m(left, right)
    assert out.shape == in_hw and out.dtype == np.float32
    info = m.info
    s = min(128 / in_hw[0], 256 / in_hw[1], 1.0)
    assert info.extra['scale'][0] == pytest.approx(s, rel=0.02)
    x1, y1 = info.extra['valid_window'][2:]
    assert (y1, x1) == (round(in_hw[0] * s), round(in_hw[1] * s))
    ys, xs = np.nonzero(np.isfinite(out))                 # reported values are matchable disparities
    assert np.all(out[ys, xs] > 0) and np.all(xs - out[ys, xs] >= 0)
    inner = out[4:-4, disp + 8:-8]
    assert np.nanmedian(np.abs(inner - disp)) < 0.1
    assert np.mean(np.abs(inner - disp) < 0.5) > 0.9
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}


def test_stretch_mode_divides_by_horizontal_scale(matching_model):
    _, _, d = matching_model
    left, right = shifted_pair(256, 320, 20, seed=5)    # 0.5 vertically, 0.8 horizontally -> 16 px in network
    m = load_matcher(d, 'onnxruntime', resize_mode='stretch')
    out = m(left, right)
    assert out.shape == (256, 320)
    assert m.info.extra['scale'] == pytest.approx((0.8, 0.5))
    assert np.nanmedian(np.abs(out[8:-8, 30:-8] - 20)) < 0.15


def test_dynamic_graph_runs_at_input_size_padded_to_32(tmp_path):
    feat, post, d = make_two_stage(tmp_path, 64, 128, 64, dynamic=True)
    src = detect_model(d)
    assert src.network_size is None
    left, right = shifted_pair(100, 150, 12, seed=6)
    m = load_matcher(d, 'onnxruntime')
    out = m(left, right)
    assert m.info.extra['network_input'] == (128, 160) and m.info.extra['scale'] == (1.0, 1.0)
    assert np.nanmedian(np.abs(out[4:-4, 20:-4] - 12)) < 0.1


def test_single_engine_contract(tmp_path):
    _, path = make_single(tmp_path / 'stereo.onnx', 128, 256, 64)
    left, right = shifted_pair(128, 256, 16, seed=7)
    m = load_matcher(path, 'onnxruntime')
    out = m(left, right)
    assert m.info.extra['model_kind'] == 'single'
    assert np.nanmedian(np.abs(out[4:-4, 24:-4] - 16)) < 0.1


def test_auto_backend_policy(matching_model, tmp_path):
    src = detect_model(matching_model[2])
    assert choose_backend(src, cuda_torch=False, trt_ok=False) == 'onnxruntime'
    assert choose_backend(src, cuda_torch=True, trt_ok=True) == 'tensorrt'
    src.checkpoint = tmp_path / 'ffs_small.pt'
    assert choose_backend(src, cuda_torch=True, trt_ok=False) == 'torch'
    assert choose_backend(src, cuda_torch=False, trt_ok=False) == 'onnxruntime'
    assert load_matcher(matching_model[2]).info.backend == 'onnxruntime'  # this machine: no TensorRT, no CUDA


def test_load_matcher_errors(matching_model, tmp_path, monkeypatch):
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tmp_path / 'none'))
    with pytest.raises(ValueError, match='no default model is installed.*or use backend sgbm'):
        load_matcher(None, 'onnxruntime')
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        load_matcher(matching_model[2], 'cuda')
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['precison'\]"):
        load_matcher(matching_model[2], 'onnxruntime', precison='fp16')
    with pytest.raises(ValueError, match='resize_mode must be one of letterbox, stretch'):
        load_matcher(matching_model[2], 'onnxruntime', resize_mode='squash')
    with pytest.raises(ValueError, match='conflicts with the model, which is fixed at 256x128'):
        load_matcher(matching_model[2], 'onnxruntime', net_size=(64, 64))
    with pytest.raises(RuntimeError, match='needs onnxruntime-gpu'):
        load_matcher(matching_model[2], 'onnxruntime', device='cuda')
    assert load_matcher(None, 'sgbm').info.backend == 'sgbm'


def test_bad_images_are_refused(matching_model):
    m = load_matcher(matching_model[2], 'onnxruntime')
    with pytest.raises(ValueError, match='HxWx3 uint8'):
        m(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8))


class FakeOwnModel(torch.nn.Module):
    """Stands in for ffs_ros.model's network: the documented .features/.post API on the tiny modules."""

    def __init__(self, feat, post):
        super().__init__()
        self.feat, self.postm = feat, post
        self.max_disp, self.cv_group, self.normalize = 64, 8, True

    def features(self, left, right):
        names = ['features_left_04', 'features_left_08', 'features_left_16', 'features_left_32',
                 'features_right_04', 'stem_2x']
        return dict(zip(names, self.feat(left, right)))

    def post(self, gwc_volume, **f):
        return self.postm(f['features_left_04'], f['features_left_08'], f['features_left_16'],
                          f['features_left_32'], f['features_right_04'], f['stem_2x'], gwc_volume)


def test_torch_backend_pipeline_on_cpu(matching_model, tmp_path):
    """The torch path (own model API) letterboxes/crops on the device and agrees with the ONNX path."""
    from ffs_ros.inference.contracts import ModelSource
    from ffs_ros.inference.torch_backend import TorchMatcher
    feat, post, d = matching_model
    src = ModelSource('torch', tmp_path, checkpoint=tmp_path / 'x.pt')
    m = TorchMatcher(src, device='cpu', model=FakeOwnModel(feat, post))
    left, right = shifted_pair(100, 150, 12, seed=8)
    out = m(left, right)
    assert out.shape == (100, 150) and m.info.backend == 'torch' and m.info.extra['network_input'] == (128, 160)
    assert np.nanmedian(np.abs(out[4:-4, 20:-4] - 12)) < 0.1
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}
    with pytest.raises(ValueError, match='fp16 autocast is for CUDA'):
        TorchMatcher(src, device='cpu', fp16=True, model=FakeOwnModel(feat, post))
    with pytest.raises(RuntimeError, match='torch sees no CUDA GPU'):
        TorchMatcher(src, device='cuda', model=FakeOwnModel(feat, post))


def test_provider_choice():
    from ffs_ros.inference.onnx_backend import choose_providers
    cpu_only = ['CPUExecutionProvider']
    assert choose_providers(None, cpu_only) == cpu_only
    gpu = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    names = [p[0] if isinstance(p, tuple) else p for p in choose_providers('cuda:1', gpu)]
    assert names == gpu
    assert choose_providers('cuda:1', gpu)[1] == ('CUDAExecutionProvider', {'device_id': 1})
    assert choose_providers('cpu', gpu) == cpu_only
    with pytest.raises(RuntimeError, match='needs onnxruntime-gpu'):
        choose_providers('cuda', cpu_only)
