"""Model recognition and every contract error's message (file named, problem, fix)."""

import shutil

import numpy as np
import pytest
from test_inference_models import make_single, make_two_stage

from ffs_ros.contract import ModelContractError, detect_model
from ffs_ros.inference.letterbox import from_network, plan_resize, to_network


@pytest.fixture(scope='module')
def export(tmp_path_factory):
    _, _, d = make_two_stage(tmp_path_factory.mktemp('c'), 64, 128, 32, use_16=False)
    return d


def copy(export, tmp_path, name='m'):
    dst = tmp_path / name
    shutil.copytree(export, dst)
    return dst


def test_two_stage_is_recognised_from_dir_and_file(export):
    src = detect_model(export)
    assert src.kind == 'two_stage' and src.network_size == (64, 128)
    assert (src.num_groups, src.num_disparities, src.config.normalize) == (8, 8, True)
    assert src.gwc_dtype == np.float16
    assert 'features_left_16' not in src.post.input_names
    assert detect_model(export / 'post_runner.onnx').kind == 'two_stage'


def test_prebuilt_engine_next_to_its_onnx_is_picked_up(export, tmp_path):
    d = copy(export, tmp_path)
    (d / 'feature_runner.engine').write_bytes(b'x')
    (d / 'post_runner.plan').write_bytes(b'x')
    src = detect_model(d)
    assert src.engines == {'feature': d / 'feature_runner.engine', 'post': d / 'post_runner.plan'}
    assert detect_model(d / 'post_runner.plan').engines['post'] == d / 'post_runner.plan'
    (d / 'lonely.engine').write_bytes(b'x')
    with pytest.raises(ModelContractError, match='lonely.onnx is not beside it'):
        detect_model(d / 'lonely.engine')


def test_missing_post_file(export, tmp_path):
    d = copy(export, tmp_path)
    (d / 'post_runner.onnx').unlink()
    with pytest.raises(
        ModelContractError, match='found feature_runner.onnx but not post_runner.onnx'
    ):
        detect_model(d)


def test_missing_path_and_unknown_directory(tmp_path):
    with pytest.raises(
        ModelContractError, match='does not exist; expected a directory with feature_runner.onnx'
    ):
        detect_model(tmp_path / 'nope')
    (tmp_path / 'readme.txt').write_text('x')
    with pytest.raises(
        ModelContractError, match=r'cannot tell which model to use \(found: readme.txt\)'
    ):
        detect_model(tmp_path)
    with pytest.raises(ModelContractError, match='unsupported model file type .txt'):
        detect_model(tmp_path / 'readme.txt')


def test_not_an_onnx_file(tmp_path):
    (tmp_path / 'x.onnx').write_bytes(b'garbage')
    with pytest.raises(ModelContractError, match='x.onnx is not a readable ONNX file'):
        detect_model(tmp_path / 'x.onnx')


def test_yaml_max_disp_disagreeing_with_graph(export, tmp_path):
    d = copy(export, tmp_path)
    (d / 'onnx.yaml').write_text('max_disp: 192\n')
    with pytest.raises(
        ModelContractError, match='max_disp 192 means D=48, but post_runner.onnx expects D=8'
    ):
        detect_model(d)


def test_yaml_cv_group_disagreeing_and_bad_normalize(export, tmp_path):
    d = copy(export, tmp_path)
    (d / 'onnx.yaml').write_text('cv_group: 4\n')
    with pytest.raises(ModelContractError, match='cv_group 4 disagrees with post_runner.onnx'):
        detect_model(d)
    (d / 'onnx.yaml').write_text('normalize: maybe\n')
    with pytest.raises(ModelContractError, match="normalize must be true or false, got 'maybe'"):
        detect_model(d)
    (d / 'onnx.yaml').write_text('normalize: false\n')
    assert detect_model(d).config.normalize is False
    (d / 'onnx.yaml').unlink()
    assert detect_model(d).config.normalize is True  # default when absent


def test_files_from_different_exports(export, tmp_path):
    d = copy(export, tmp_path)
    other = tmp_path / 'other'
    make_two_stage(other, 96, 128, 32)
    shutil.copy(other / 'post_runner.onnx', d / 'post_runner.onnx')
    with pytest.raises(
        ModelContractError, match='gwc_volume is 24x32 but the feature graph runs at 64x128'
    ):
        detect_model(d)


def test_size_not_multiple_of_32(tmp_path):
    make_two_stage(tmp_path, 64, 112, 32)
    with pytest.raises(ModelContractError, match='has W=112, which is not a multiple of 32'):
        detect_model(tmp_path)


def test_single_engine_and_stage_files_under_other_names(export, tmp_path):
    _, p = make_single(tmp_path / 'isaac.onnx', 64, 128, 32)
    src = detect_model(p)
    assert src.kind == 'single' and src.network_size == (64, 128)
    assert detect_model(tmp_path).kind == 'single'  # a directory with one ONNX
    shutil.copy(export / 'feature_runner.onnx', tmp_path / 'feat.onnx')
    with pytest.raises(
        ModelContractError,
        match='is the feature stage of a two-stage export; name it feature_runner.onnx',
    ):
        detect_model(tmp_path / 'feat.onnx')
    shutil.copy(export / 'post_runner.onnx', tmp_path / 'post.onnx')
    with pytest.raises(ModelContractError, match='is the post stage of a two-stage export'):
        detect_model(tmp_path / 'post.onnx')


def test_checkpoint_is_recognised(tmp_path, export):
    (tmp_path / 'ffs_small.pt').write_bytes(b'')
    assert detect_model(tmp_path).kind == 'torch'
    d = copy(export, tmp_path, 'both')
    (d / 'ffs_small.pt').write_bytes(b'')
    src = detect_model(d)
    assert src.kind == 'two_stage' and src.checkpoint == d / 'ffs_small.pt'


# -- resolution plans -----------------------------------------------------------------------------


def test_letterbox_plan_never_upscales_by_default():
    p = plan_resize((240, 320), (448, 640))
    assert (p.scaled_hw, p.scale_x, p.valid_window) == ((240, 320), 1.0, (0, 0, 320, 240))
    p = plan_resize((240, 320), (448, 640), allow_upscale=True)
    assert p.scaled_hw == (448, 597) and p.scale_x == pytest.approx(597 / 320)
    p = plan_resize((960, 1280), (448, 640))
    assert p.scaled_hw == (448, 597) and p.net_hw == (448, 640)
    p = plan_resize((100, 150), None)
    assert (p.net_hw, p.scaled_hw, p.scale_x) == ((128, 160), (100, 150), 1.0)


def test_letterbox_round_trip_of_a_disparity_ramp():
    p = plan_resize((240, 400), (128, 256))  # s = 0.533 (width-bound) -> 213x... valid region
    xs = np.tile(np.arange(400, dtype=np.float32), (240, 1))
    disp_in = 10 + 0.05 * xs  # input-pixel disparities
    net = np.zeros((128, 256), np.float32)
    small = (
        to_network(disp_in[..., None].repeat(3, 2), p)[..., 0] * p.scale_x
    )  # disparities scale with x
    net[:] = small
    back = from_network(net, p)
    assert back.shape == (240, 400)
    assert np.abs(back[2:-2, 2:-2] - disp_in[2:-2, 2:-2]).max() < 0.05


def test_yaml_with_python_tags_is_read(export, tmp_path):
    """Training-arg dumps may carry python/* tags; only the plain values are needed."""
    d = copy(export, tmp_path)
    (d / 'onnx.yaml').write_text(
        'max_disp: 32\nimage_size: !!python/tuple [64, 128]\nnormalize: false\n'
        'args: !!python/object:argparse.Namespace {lr: 0.1}\n'
    )
    src = detect_model(d)
    assert src.config.image_size == (64, 128) and src.config.normalize is False
    (d / 'onnx.yaml').write_text('max_disp: [32\n')
    with pytest.raises(ModelContractError, match='onnx.yaml is not valid YAML'):
        detect_model(d)
