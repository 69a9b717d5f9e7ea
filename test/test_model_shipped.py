"""Regression tests for the shipped models, models/ffs_small/ (accurate) and models/ffs_fast/.

On fixed generated pairs each stays under error bounds set with a margin from what it achieved when
it was shipped (see models/README.md), through the same ONNX Runtime path the node uses; its export
keeps the two-stage contract (symbolic H and W, the confidence output) and agrees with the shipped
torch checkpoint.
"""

from pathlib import Path

import numpy as np
import pytest

from ffs_ros.synth import plane_pair, render_scene

MODELS = Path(__file__).resolve().parent.parent / 'models'

# measured when shipping (models/README.md) -> bound with margin.
#   scene_epe: px, mean over the 3 held-out scenes below (non-occluded pixels)
#   plane: px, median |d - 24| on a fronto-parallel plane at 24 px
TIERS = {
    'ffs_small': {'scene_epe': 0.8, 'plane': 0.2},  # shipped: 0.53, 0.063
    'ffs_fast': {'scene_epe': 1.3, 'plane': 0.1},  # shipped: 0.87, 0.018
}


@pytest.fixture(scope='module', params=sorted(TIERS))
def tier(request):
    d = MODELS / request.param
    if not (d / 'feature_runner.onnx').is_file():
        pytest.fail(f'no shipped model in {d}; both tiers must be committed there')
    return request.param


@pytest.fixture(scope='module')
def matcher(tier):
    from ffs_ros.inference import load_matcher

    return load_matcher(str(MODELS / tier), backend='onnxruntime')


def test_models_folder_size():
    total = sum(p.stat().st_size for p in MODELS.rglob('*') if p.is_file())
    assert total <= 30 * 2**20, f'models/ holds {total / 2**20:.1f} MB; the limit is 30 MB'


def test_export_contract(tier):
    """onnx.yaml agrees with the checkpoint; symbolic H and W; every output the node uses."""
    import onnx
    import torch
    import yaml

    d = MODELS / tier
    cfg = yaml.safe_load((d / 'onnx.yaml').read_text())
    ck = torch.load(d / f'{tier}.pt', map_location='cpu', weights_only=False)['config']
    for key in ('max_disp', 'cv_group', 'valid_iters'):
        assert cfg[key] == ck[key], key
    assert cfg['max_disp'] % 32 == 0 and cfg['normalize'] is True and cfg['dynamic_size'] is True
    for name in ('feature_runner.onnx', 'post_runner.onnx'):
        g = onnx.load(str(d / name), load_external_data=False).graph
        for inp in g.input:
            dims = inp.type.tensor_type.shape.dim
            assert dims[-1].dim_param and dims[-2].dim_param, f'{name}:{inp.name} has a fixed size'
        if name == 'post_runner.onnx':
            assert [o.name for o in g.output] == ['disp', 'confidence']


def test_plane_at_24px(tier, matcher):
    # plane at 2 m, fx 400 px, baseline 0.12 m -> 24 px
    s = plane_pair(240, 320, 24.0, seed=5)
    d = matcher(s.left, s.right)
    err = np.abs(d - 24.0)[~s.occluded & np.isfinite(d)]
    assert np.median(err) < TIERS[tier]['plane']


def test_heldout_scenes_epe(tier, matcher):
    errs = []
    for seed in (101, 202, 303):
        s = render_scene(np.random.default_rng([777, seed]), 240, 320, max_disparity=64.0)
        d = matcher(s.left, s.right)
        m = ~s.occluded & np.isfinite(d)
        errs.append(float(np.abs(d - s.disparity)[m].mean()))
    assert np.mean(errs) < TIERS[tier]['scene_epe'], errs


def test_torch_checkpoint_matches_onnx_export(tier):
    import onnxruntime as ort
    import torch
    import yaml

    from ffs_ros.contract.gwc import gwc_volume_numpy
    from ffs_ros.model import load_model

    d = MODELS / tier
    model = load_model(d / f'{tier}.pt')
    cfg = yaml.safe_load((d / 'onnx.yaml').read_text())
    s = plane_pair(64, 96, 10.0, seed=2)
    left = s.left.transpose(2, 0, 1)[None].astype(np.float32)
    right = s.right.transpose(2, 0, 1)[None].astype(np.float32)
    fs = ort.InferenceSession(str(d / 'feature_runner.onnx'), providers=['CPUExecutionProvider'])
    ps = ort.InferenceSession(str(d / 'post_runner.onnx'), providers=['CPUExecutionProvider'])
    f = dict(zip([o.name for o in fs.get_outputs()], fs.run(None, {'left': left, 'right': right})))
    vol = gwc_volume_numpy(
        f['features_left_04'],
        f['features_right_04'],
        cfg['cv_group'],
        cfg['max_disp'] // 4,
        cfg['normalize'],
    ).astype(np.float16)
    disp = ps.run(
        None, {i.name: (vol if i.name == 'gwc_volume' else f[i.name]) for i in ps.get_inputs()}
    )[0]
    with torch.no_grad():
        ref = model(
            torch.from_numpy(left), torch.from_numpy(right), iters=cfg['valid_iters']
        ).numpy()
    assert np.abs(disp - ref).max() <= 0.05
