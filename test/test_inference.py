"""End-to-end matcher behaviour on CPU with tiny upstream-shaped ONNX exports.

The exports are generated here; they run on ONNX Runtime.
"""

import numpy as np
import pytest
from test_inference_models import make_single, make_two_stage, shifted_pair, torch_two_stage
import torch

from ffs_ros.contract import detect_model
from ffs_ros.inference import choose_backend, load_matcher


@pytest.fixture(scope='module')
def matching_model(tmp_path_factory):
    """Cosine volume + sharp soft-argmin: returns true disparities.

    Fixed 128x256, D=16, features_left_16 dropped.
    """
    feat, post, d = make_two_stage(tmp_path_factory.mktemp('matching'), 128, 256, 64, use_16=False)
    return feat, post, d


@pytest.fixture(scope='module', params=[True, False], ids=['normalize', 'no-normalize'])
def random_model(request, tmp_path_factory):
    """Random convolutions around the volume, for parity with torch; both values of `normalize`."""
    norm = request.param
    feat, post, d = make_two_stage(
        tmp_path_factory.mktemp('random'), 64, 128, 32, normalize=norm, random=True
    )
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
    """The flag from onnx.yaml really reaches the volume.

    Issue #26: a wrong flag gives garbage.
    """
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
    """Sizes differ from the 128x256 graph.

    Scale s<=1 + pad, then disparity resized back and divided by s.
    """
    _, _, d = matching_model
    left, right = shifted_pair(*in_hw, disp, seed=4)
    m = load_matcher(d, 'onnxruntime')
    out = m(left, right)
    assert out.shape == in_hw and out.dtype == np.float32
    info = m.info
    s = min(128 / in_hw[0], 256 / in_hw[1], 1.0)
    assert info.extra['scale'][0] == pytest.approx(s, rel=0.02)
    assert info.network_size == (128, 256)
    assert info.valid_window == (0, 0, in_hw[1], in_hw[0])  # output-image pixels: the whole image
    assert info.max_disparity == pytest.approx(64 / info.extra['scale'][0])
    ys, xs = np.nonzero(np.isfinite(out))  # reported values are matchable disparities
    assert np.all(out[ys, xs] > 0) and np.all(xs - out[ys, xs] >= 0)
    inner = out[4:-4, disp + 8: -8]
    assert np.nanmedian(np.abs(inner - disp)) < 0.1
    assert np.mean(np.abs(inner - disp) < 0.5) > 0.9
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}


def test_stretch_mode_divides_by_horizontal_scale(matching_model):
    _, _, d = matching_model
    left, right = shifted_pair(
        256, 320, 20, seed=5
    )  # 0.5 vertically, 0.8 horizontally -> 16 px in network
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
    assert m.info.network_size == (128, 160) and m.info.extra['scale'] == (1.0, 1.0)
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
    assert (
        load_matcher(matching_model[2]).info.backend == 'onnxruntime'
    )  # this machine: no TensorRT, no CUDA


def test_load_matcher_errors(matching_model, tmp_path, monkeypatch):
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tmp_path / 'none'))
    with pytest.raises(ValueError, match='no shipped model is installed.*or use backend sgbm'):
        load_matcher(None, 'onnxruntime')
    with pytest.raises(ValueError, match="unknown backend 'cuda'"):
        load_matcher(matching_model[2], 'cuda')
    with pytest.raises(
        ValueError, match=r"option\(s\) \['precison'\] are not for backend onnxruntime"
    ):
        load_matcher(matching_model[2], 'onnxruntime', precison='fp16')
    with pytest.raises(
        ValueError, match=r"\['precision'\] are not for backend onnxruntime; it takes: resize_mode"
    ):
        load_matcher(matching_model[2], 'onnxruntime', precision='fp16')
    with pytest.raises(ValueError, match='resize_mode must be one of letterbox, stretch'):
        load_matcher(matching_model[2], 'onnxruntime', resize_mode='squash')
    with pytest.raises(ValueError, match='conflicts with the model, which is fixed at 256x128'):
        load_matcher(matching_model[2], 'onnxruntime', net_size=(64, 64))
    with pytest.raises(RuntimeError, match='needs onnxruntime-gpu'):
        load_matcher(matching_model[2], 'onnxruntime', device='cuda')
    assert load_matcher(None, 'sgbm').info.backend == 'sgbm'


def test_auto_falls_back_to_sgbm_only_when_no_model_is_installed(
    matching_model, tmp_path, monkeypatch
):
    """One policy for node, infer and eval.

    'auto' without a model and with none installed runs SGBM (with the search range asked for); a
    model that is given or installed is never silently replaced.
    """
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tmp_path / 'none'))
    m = load_matcher(None, 'auto', max_disparity=64, resize_mode='stretch')
    assert m.info.backend == 'sgbm' and m.num_disparities == 64
    with pytest.raises(ValueError, match='does not exist'):
        load_matcher(tmp_path / 'missing', 'auto')
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(matching_model[2]))
    assert load_matcher(None, 'auto', max_disparity=64, device='cpu').info.backend == 'onnxruntime'


def test_cuda_graph_with_onnxruntime_is_refused_with_the_reason(matching_model):
    """ORT synchronises and runs on its own terms inside Run().

    A capture around it cannot work (defect 9).
    """
    for io_binding in (False, True):
        with pytest.raises(
            ValueError,
            match='cuda_graph does not work with backend onnxruntime.*tensorrt or torch',
        ):
            load_matcher(
                matching_model[2],
                'onnxruntime',
                device='cpu',
                io_binding=io_binding,
                cuda_graph=True,
            )


def test_bad_images_are_refused(matching_model):
    m = load_matcher(matching_model[2], 'onnxruntime')
    with pytest.raises(ValueError, match='HxWx3 uint8'):
        m(np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8))


class FakeOwnModel(torch.nn.Module):
    """Stands in for ffs_ros.model's network.

    The documented .features/.post API on the tiny modules.
    """

    def __init__(self, feat, post):
        super().__init__()
        self.feat, self.postm = feat, post
        self.max_disp, self.cv_group, self.normalize = 64, 8, True

    def features(self, left, right):
        names = [
            'features_left_04',
            'features_left_08',
            'features_left_16',
            'features_left_32',
            'features_right_04',
            'stem_2x',
        ]
        return dict(zip(names, self.feat(left, right)))

    def post(self, gwc_volume, with_confidence=False, **f):
        disp = self.postm(
            f['features_left_04'],
            f['features_left_08'],
            f['features_left_16'],
            f['features_left_32'],
            f['features_right_04'],
            f['stem_2x'],
            gwc_volume,
        )
        if not with_confidence:
            return disp
        # a known confidence map: 0.25 in the left half, 0.75 in the right half
        conf = torch.full_like(disp, 0.25)
        conf[..., disp.shape[-1] // 2:] = 0.75
        return disp, conf


def test_torch_backend_pipeline_on_cpu(matching_model, tmp_path):
    """The torch path (own model API) letterboxes/crops on the device.

    And it agrees with the ONNX path.
    """
    from ffs_ros.contract import ModelSource
    from ffs_ros.inference.network import NetworkMatcher
    from ffs_ros.inference.torch_backend import torch_graphs

    def TorchMatcher(src, device, **kw):
        return NetworkMatcher(src, torch_graphs(src, device=device, **kw))

    feat, post, d = matching_model
    src = ModelSource('torch', tmp_path, checkpoint=tmp_path / 'x.pt')
    m = TorchMatcher(src, device='cpu', model=FakeOwnModel(feat, post))
    left, right = shifted_pair(100, 150, 12, seed=8)
    out = m(left, right)
    assert (
        out.shape == (100, 150) and m.info.backend == 'torch' and m.info.network_size == (128, 160)
    )
    assert np.nanmedian(np.abs(out[4:-4, 20:-4] - 12)) < 0.1
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}
    # the model's own confidence comes through at input resolution (network 160 wide: the
    # boundary at 80 px stays at 80 px, the input is only cropped), NaN where the disparity is
    assert m.info.confidence == 'network'
    r = m.match_full(left, right)
    np.testing.assert_array_equal(r.disparity, out)
    assert r.confidence.shape == (100, 150) and r.confidence.dtype == np.float32
    ok = np.isfinite(r.disparity)
    np.testing.assert_array_equal(np.isnan(r.confidence), ~ok)
    assert np.allclose(r.confidence[:, :78][ok[:, :78]], 0.25)
    assert np.allclose(r.confidence[:, 82:][ok[:, 82:]], 0.75)
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
    cuda = choose_providers('cuda:0', gpu, stream_handle=0x5EED)[1]
    assert cuda == ('CUDAExecutionProvider', {'device_id': 0, 'user_compute_stream': str(0x5EED)})
    with pytest.raises(RuntimeError, match='needs onnxruntime-gpu'):
        choose_providers('cuda', cpu_only)


def test_cuda_graph_capture_failure_is_logged_once_and_the_size_runs_without(
    random_model, monkeypatch, caplog
):
    """Defect 8: a size whose capture fails runs the plain path, without retries.

    It gives the same result, is logged once and never retried.
    """
    feat, post, d, norm = random_model
    m = load_matcher(d, 'onnxruntime', device='cpu', io_binding=True)
    left, right = shifted_pair(64, 128, 8, seed=2)
    plain = m(left, right)
    attempts = []

    class NoCapture:
        def __init__(self):
            attempts.append(1)
            raise RuntimeError('operation not permitted when stream is capturing')

    monkeypatch.setattr(torch.cuda, 'CUDAGraph', NoCapture)
    m.cuda_graph = (
        True  # (refused at construction for ORT; here only the fallback logic is exercised)
    )
    with caplog.at_level('WARNING', logger='ffs_ros.inference.network'):
        first, second = m(left, right), m(left, right)
    np.testing.assert_array_equal(first, plain)
    np.testing.assert_array_equal(second, plain)
    assert len(attempts) == 1 and m._captured[(64, 128)] is None
    assert [
        r.getMessage() for r in caplog.records if 'CUDA graph capture failed' in r.getMessage()
    ] == [
        'CUDA graph capture failed at network size 128x64 (RuntimeError: operation not permitted '
        'when stream is '
        'capturing); running without CUDA graphs for this size (same results, more launch '
        'overhead)'
    ]


def test_device_runner_waits_once_per_frame(random_model, monkeypatch):
    """Defect 12: stage times come from the clock, not from a synchronisation per stage.

    One wait per frame.
    """
    from ffs_ros.inference.device import Device

    feat, post, d, norm = random_model
    m = load_matcher(d, 'onnxruntime', device='cpu', io_binding=True)
    waits = []
    monkeypatch.setattr(Device, 'synchronize', lambda self: waits.append(1))
    m(*shifted_pair(64, 128, 8, seed=2))
    assert len(waits) == 1
    assert set(m.last_timings) == {'preprocess', 'feature', 'gwc', 'post', 'postprocess'}


def test_bound_inputs_stay_alive_while_onnxruntime_runs(random_model, monkeypatch):
    """Defect 14: a non-contiguous input is bound through a contiguous copy.

    The copy must live until the run ends.
    """
    import gc
    import warnings

    from ffs_ros.inference.onnx_backend import OrtBoundGraph

    feat, post, d, norm = random_model
    m = load_matcher(d, 'onnxruntime', device='cpu', io_binding=True)
    graph = m.graphs.graphs['feature']
    session = graph.session
    bound = []

    class CheckingBinding:
        def __init__(self, b):
            self.b = b

        def bind_input(self, name, kind, idx, dtype, shape, ptr):
            bound.append(ptr)
            return self.b.bind_input(name, kind, idx, dtype, shape, ptr)

        def __getattr__(self, k):
            return getattr(self.b, k)

    class CheckingSession:
        def io_binding(self):
            return CheckingBinding(session.io_binding())

        def run_with_iobinding(self, b):
            gc.collect()
            with warnings.catch_warnings():
                warnings.simplefilter(
                    'ignore'
                )  # gc.get_objects touches deprecated torch attributes
                live = {t.data_ptr() for t in gc.get_objects() if isinstance(t, torch.Tensor)}
            assert all(p in live for p in bound), 'a bound input was freed before the run'
            return session.run_with_iobinding(b.b)

        def __getattr__(self, k):
            return getattr(session, k)

    graph.session = CheckingSession()
    x = torch.rand(1, 3, 128, 64).transpose(2, 3) * 255  # non-contiguous [1,3,64,128]
    out = OrtBoundGraph.run(graph, {'left': x, 'right': x.clone()}, (64, 128))
    assert len(bound) == 2 and out['features_left_04'].abs().sum() > 0


def test_valid_window_is_in_output_image_pixels_end_to_end(matching_model):
    """A 500x400 image through a fixed 256x128 letterbox model.

    The DisparityImage's valid window is the whole 500x400 image (the old code reported
    0,0,160,128: network pixels, (x0, y0, x1, y1) form).
    """
    from std_msgs.msg import Header

    from ffs_ros.convert import make_camera_infos, numpy_to_image
    from ffs_ros.pipeline import PipelineConfig, StereoPipeline, Wanted

    left, right = shifted_pair(400, 500, 16, seed=9)
    li, ri = make_camera_infos(500, 400, 400.0, 0.1)
    pipe = StereoPipeline(load_matcher(matching_model[2], 'onnxruntime'), PipelineConfig())
    h = Header(frame_id='left_optical')
    out = pipe.process(
        numpy_to_image(left, 'rgb8', h),
        numpy_to_image(right, 'rgb8', h),
        li,
        ri,
        Wanted(disparity=True, depth=False, cloud=False),
    )
    vw = out.disparity.valid_window
    assert (vw.x_offset, vw.y_offset, vw.width, vw.height) == (0, 0, 500, 400)
    assert pipe.matcher.info.network_size == (128, 256)


def test_onnxruntime_tensorrt_ep_gets_an_existing_cache_folder(tmp_path, monkeypatch):
    """Defect 10: the TensorRT EP creates only one directory level; we create the folder first.

    The EP fails otherwise.
    """
    from ffs_ros.inference.onnx_backend import choose_providers

    monkeypatch.setenv('FFS_ROS_ENGINE_CACHE', str(tmp_path / 'a' / 'b'))
    gpu = ['TensorrtExecutionProvider', 'CUDAExecutionProvider', 'CPUExecutionProvider']
    name, opts = choose_providers('cuda', gpu, stream_handle=7)[0]
    assert name == 'TensorrtExecutionProvider' and (tmp_path / 'a' / 'b' / 'onnxruntime').is_dir()
    assert opts['trt_engine_cache_path'] == str(tmp_path / 'a' / 'b' / 'onnxruntime')
    assert opts['trt_timing_cache_enable'] is True and opts['user_compute_stream'] == '7'


def test_results_do_not_alias_the_networks_buffers(random_model):
    """The device runner's graphs keep persistent output buffers.

    A returned disparity must stay as it was when the next frame runs.
    """
    feat, post, d, norm = random_model
    m = load_matcher(d, 'onnxruntime', device='cpu', io_binding=True)
    a = m(*shifted_pair(64, 128, 8, seed=2))
    kept = a.copy()
    m(*shifted_pair(64, 128, 4, seed=5))
    np.testing.assert_array_equal(a, kept)


def test_auto_on_a_cpu_never_loads_torch():
    """Run 'auto' on a machine without a CUDA GPU without importing torch (libtorch: ~330 MB RSS).

    It decides and runs ONNX Runtime; torch is never imported (issue 14.5).
    """
    import subprocess
    import sys
    code = ('import sys, numpy as np\n'
            'from ffs_ros.inference import load_matcher\n'
            "m = load_matcher(None, 'auto')\n"
            'm(np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96, 3), np.uint8))\n'
            "print(m.info.backend, 'torch' in sys.modules)\n")
    if torch.cuda.is_available():
        pytest.skip('this machine has a CUDA GPU: auto may rightly choose torch')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['onnxruntime', 'False']
