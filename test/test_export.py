"""Export to the upstream two-stage ONNX contract.

Names, dtypes, onnx.yaml, and torch == ONNX Runtime (<= 0.05 px) with the numpy GWC volume between
the two sessions, at the traced size and, for a --dynamic export, at another size.
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml

from ffs_ros.contract.gwc import gwc_volume_numpy
from ffs_ros.model import FEATURE_NAMES, build_model
from ffs_ros.model.export import export_two_stage

TINY = {
    'max_disp': 32,
    'enc': [8, 8, 16, 16, 16],
    'feat': [16, 16, 16, 16],
    'stem_ch': 8,
    'concat_ch': 4,
    'vol': [8, 8, 8, 8],
    'geo_ch': 2,
    'hidden': 16,
    'ctx': 16,
    'valid_iters': 2,
}


def _run_two_stage(d, left, right, cfg):
    fs = ort.InferenceSession(str(d / 'feature_runner.onnx'), providers=['CPUExecutionProvider'])
    ps = ort.InferenceSession(str(d / 'post_runner.onnx'), providers=['CPUExecutionProvider'])
    outs = fs.run(None, {'left': left, 'right': right})
    f = dict(zip([o.name for o in fs.get_outputs()], outs))
    vol = gwc_volume_numpy(
        f['features_left_04'],
        f['features_right_04'],
        cfg['cv_group'],
        cfg['max_disp'] // 4,
        cfg['normalize'],
    ).astype(np.float16)
    feeds = {i.name: (vol if i.name == 'gwc_volume' else f[i.name]) for i in ps.get_inputs()}
    return fs, ps, ps.run(None, feeds)[0]


def _run_post_outputs(d, left, right, cfg):
    """Return the post graph's outputs by name."""
    fs, ps, _ = _run_two_stage(d, left, right, cfg)
    outs = fs.run(None, {'left': left, 'right': right})
    f = dict(zip([o.name for o in fs.get_outputs()], outs))
    vol = gwc_volume_numpy(
        f['features_left_04'], f['features_right_04'], cfg['cv_group'], cfg['max_disp'] // 4
    ).astype(np.float16)
    feeds = {i.name: (vol if i.name == 'gwc_volume' else f[i.name]) for i in ps.get_inputs()}
    return dict(zip([o.name for o in ps.get_outputs()], ps.run(None, feeds)))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    with torch.no_grad():
        model.upsampler.guide_scale.fill_(
            0.5
        )  # a trained guide term is part of the exported graph
    d = tmp_path_factory.mktemp('exp')
    export_two_stage(model, d, 64, 96, iters=2, dynamic=True, single=True)
    return model, d


@pytest.mark.parametrize('size', [(64, 96), (96, 128)])
def test_torch_and_onnxruntime_agree(exported, size):
    model, d = exported
    cfg = yaml.safe_load((d / 'onnx.yaml').read_text())
    rng = np.random.default_rng(1)
    left = (rng.random((1, 3) + size) * 255).astype(np.float32)
    right = np.roll(left, -5, axis=3)
    fs, ps, disp = _run_two_stage(d, left, right, cfg)
    with torch.no_grad():
        ref = model(torch.from_numpy(left), torch.from_numpy(right), iters=2).numpy()
    assert disp.shape == (1, 1) + size
    assert np.abs(disp - ref).max() <= 0.05
    # the confidence output agrees too, and is a probability
    outs = _run_post_outputs(d, left, right, cfg)
    with torch.no_grad():
        _, ref_conf = model(
            torch.from_numpy(left), torch.from_numpy(right), iters=2, with_confidence=True
        )
    conf = outs['confidence']
    assert conf.shape == (1, 1) + size
    assert np.abs(conf - ref_conf.numpy()).max() <= 0.01
    assert conf.min() >= 0.0 and conf.max() <= 1.0 + 1e-6


def test_contract_names_types_and_yaml(exported):
    _, d = exported
    fs = ort.InferenceSession(str(d / 'feature_runner.onnx'), providers=['CPUExecutionProvider'])
    ps = ort.InferenceSession(str(d / 'post_runner.onnx'), providers=['CPUExecutionProvider'])
    assert [i.name for i in fs.get_inputs()] == ['left', 'right']
    assert tuple(o.name for o in fs.get_outputs()) == FEATURE_NAMES
    ins = {i.name: i for i in ps.get_inputs()}
    assert set(ins) == set(FEATURE_NAMES) | {'gwc_volume'}
    assert ins['gwc_volume'].type == 'tensor(float16)'
    assert [o.name for o in ps.get_outputs()] == ['disp', 'confidence']
    assert isinstance(fs.get_inputs()[0].shape[2], str)  # symbolic H with --dynamic
    cfg = yaml.safe_load((d / 'onnx.yaml').read_text())
    assert cfg['max_disp'] == 32 and cfg['valid_iters'] == 2 and cfg['cv_group'] == 8
    assert cfg['normalize'] is True and cfg['image_size'] == [64, 96]


def test_single_graph_matches(exported):
    model, d = exported
    rng = np.random.default_rng(2)
    left = (rng.random((1, 3, 64, 96)) * 255).astype(np.float32)
    right = np.roll(left, -3, axis=3)
    mean = np.array([123.675, 116.28, 103.53], np.float32).reshape(1, 3, 1, 1)
    std = np.array([58.395, 57.12, 57.375], np.float32).reshape(1, 3, 1, 1)
    s = ort.InferenceSession(str(d / 'model.onnx'), providers=['CPUExecutionProvider'])
    out = s.run(
        ['disparity'], {'left_image': (left - mean) / std, 'right_image': (right - mean) / std}
    )[0]
    with torch.no_grad():
        ref = model(torch.from_numpy(left), torch.from_numpy(right), iters=2).numpy()
    assert np.abs(out - ref).max() <= 0.05


def test_export_rejects_sizes_not_multiple_of_32(tmp_path):
    with pytest.raises(ValueError, match='multiples of 32'):
        export_two_stage(build_model(TINY), tmp_path, 60, 96)


@pytest.mark.parametrize('local_refine', [0, 8])
def test_fast_blocks_export_with_symbolic_sizes(tmp_path, local_refine):
    """The fast tier's blocks export; torch == ORT at 2 sizes.

    2D aggregation, no GRU, convex4 upsampling, with and without the local refinement.
    """
    from test_model import TINY_FAST

    torch.manual_seed(0)
    model = build_model(dict(TINY_FAST, local_refine=local_refine)).eval()
    if local_refine:  # its zero-initialised output layer would hide a broken export
        torch.nn.init.normal_(model.local_refine.out.weight, std=0.1)
    export_two_stage(model, tmp_path, 64, 96, dynamic=True)
    cfg = yaml.safe_load((tmp_path / 'onnx.yaml').read_text())
    assert cfg['valid_iters'] == 0 and cfg['cv_group'] == 4
    rng = np.random.default_rng(3)
    for size in ((64, 96), (96, 160)):
        left = (rng.random((1, 3) + size) * 255).astype(np.float32)
        right = np.roll(left, -4, axis=3)
        _, ps, disp = _run_two_stage(tmp_path, left, right, cfg)
        with torch.no_grad():
            ref = model(torch.from_numpy(left), torch.from_numpy(right)).numpy()
        assert disp.shape == (1, 1) + size
        assert np.abs(disp - ref).max() <= 0.05
