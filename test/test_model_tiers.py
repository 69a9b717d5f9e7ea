"""Model tiers: `fast` and `accurate` by name, the default by where the matcher runs.

FFS_ROS_MODEL_DIR names a folder holding the tiers (ffs_fast/, ffs_small/) or one model (then the
only tier). Tiny exports stand in for the shipped models.
"""

from pathlib import Path

import pytest

from ffs_ros.inference import NoModelInstalled, load_matcher, resolve_model_path, runs_on_gpu
from ffs_ros.paths import MODEL_TIERS, default_model_dir, installed_tiers


@pytest.fixture(scope='module')
def tier_root(tmp_path_factory):
    from test_inference_models import make_two_stage

    root = tmp_path_factory.mktemp('tiers')
    make_two_stage(root / 'ffs_fast', 64, 96, 32, seed=1)
    make_two_stage(root / 'ffs_small', 64, 96, 32, seed=2)
    return root


def test_tiers_by_name_and_default_by_device(tier_root, monkeypatch):
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tier_root))
    fast, accurate = tier_root / 'ffs_fast', tier_root / 'ffs_small'
    assert installed_tiers() == {'fast': fast, 'accurate': accurate}
    assert resolve_model_path('fast') == tier_root / 'ffs_fast'
    assert resolve_model_path('accurate') == tier_root / 'ffs_small'
    assert resolve_model_path(None) == tier_root / 'ffs_fast'  # on a CPU: real time first
    assert resolve_model_path('', on_gpu=True) == tier_root / 'ffs_small'
    assert resolve_model_path('/some/path') == Path('/some/path')
    # what the node and the tools load: the log line and diagnostics name the folder
    m = load_matcher(None, backend='onnxruntime', device='cpu')
    assert 'ffs_fast' in m.info.model
    assert 'ffs_small' in load_matcher('accurate', backend='onnxruntime').info.model


def test_one_tier_installed_or_one_model_named(tier_root, tmp_path, monkeypatch):
    only = tmp_path / 'models'
    only.mkdir()
    (only / 'ffs_small').symlink_to(tier_root / 'ffs_small', target_is_directory=True)
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(only))
    assert resolve_model_path(None) == only / 'ffs_small'  # fast missing: the installed one
    with pytest.raises(ValueError, match=r'the fast tier \(ffs_fast\) is not installed.*accurate'):
        resolve_model_path('fast')
    # FFS_ROS_MODEL_DIR naming one model: it is every tier
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tier_root / 'ffs_fast'))
    assert installed_tiers() == dict.fromkeys(MODEL_TIERS, tier_root / 'ffs_fast')
    assert resolve_model_path('accurate') == tier_root / 'ffs_fast'
    assert default_model_dir('fast') == tier_root / 'ffs_fast'
    monkeypatch.setenv('FFS_ROS_MODEL_DIR', str(tmp_path / 'empty'))
    with pytest.raises(NoModelInstalled, match='no shipped model is installed'):
        resolve_model_path(None)
    with pytest.raises(ValueError, match='unknown model tier'):
        default_model_dir('medium')


def test_gpu_guess():
    assert runs_on_gpu('tensorrt', None) and not runs_on_gpu('sgbm', None)
    assert runs_on_gpu('onnxruntime', 'cuda:1') and not runs_on_gpu('torch', 'cpu')


def test_shipped_layout_and_defaults(monkeypatch):
    """The repository ships both tiers (setup.py installs every tier folder); fast on a CPU."""
    monkeypatch.delenv('FFS_ROS_MODEL_DIR', raising=False)
    root = Path(__file__).resolve().parent.parent / 'models'
    for sub in MODEL_TIERS.values():
        assert (root / sub / 'feature_runner.onnx').is_file()
        assert (root / sub / f'{sub}.pt').is_file()
    assert not list(root.glob('*.onnx'))  # nothing left at the top of models/
    assert resolve_model_path(None) == root / 'ffs_fast'
    assert resolve_model_path('', on_gpu=True) == root / 'ffs_small'
    assert resolve_model_path('fast') == root / 'ffs_fast'
