"""`ffs-ros infer` and `ffs-ros build-engine` end to end on CPU.

With a tiny generated export, on ONNX Runtime.
"""

import json

import cv2
import numpy as np
import pytest
from test_inference_models import make_two_stage, shifted_pair

from ffs_ros.cli import main
from ffs_ros.overview import overview_shape

FX, BASELINE, DISP = 200.0, 0.1, 16


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('cli')
    _, _, model = make_two_stage(root / 'model', 128, 256, 64)
    left, right = shifted_pair(128, 256, DISP, seed=9)
    cv2.imwrite(str(root / 'l.png'), cv2.cvtColor(left, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / 'r.png'), cv2.cvtColor(right, cv2.COLOR_RGB2BGR))
    (root / 'K.txt').write_text(f'{FX} 0 127.5 0 {FX} 63.5 0 0 1\n{BASELINE}\n')
    return root, model, left


def read_ply(path):
    data = path.read_bytes()
    head, body = data.split(b'end_header\n', 1)
    assert b'format binary_little_endian 1.0' in head
    n = int(head.split(b'element vertex ')[1].split(b'\n')[0])
    rec = np.frombuffer(
        body,
        dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1'), ('g', 'u1'), ('b', 'u1')],
    )
    assert len(rec) == n
    return rec


def test_infer_with_k_txt_writes_disparity_depth_and_cloud(setup, capsys):
    root, model, left = setup
    out = root / 'out'
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'l.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(model),
            '--backend',
            'onnxruntime',
            '--calib',
            str(root / 'K.txt'),
            '--max-depth',
            '5',
            '--out',
            str(out),
        ]
    )
    assert rc == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert f'wrote {out}/ left.png, disparity.npy' in cap.err and 'overview.png' in cap.err
    assert 'warning' not in cap.err and 'skipped' not in cap.err
    assert summary['backend'] == 'onnxruntime' and set(summary['stages_ms']) >= {
        'feature',
        'gwc',
        'post',
    }
    disp = np.load(out / 'disparity.npy')
    assert disp.dtype == np.float32 and disp.shape == (128, 256)
    assert np.nanmedian(np.abs(disp[4:-4, 24:-4] - DISP)) < 0.1
    assert cv2.imread(str(out / 'disparity.png')).shape == (128, 256, 3)
    # what a person can judge: the left image, depth colours and the overview, all listed
    np.testing.assert_array_equal(cv2.imread(str(out / 'left.png'))[..., ::-1], left)
    assert cv2.imread(str(out / 'depth.png')).shape == (128, 256, 3)
    assert cv2.imread(str(out / 'overview.png')).shape == overview_shape(128, 256)
    assert summary['outputs'] == [
        'left.png',
        'disparity.npy',
        'disparity.png',
        'confidence.npy',
        'confidence.png',
        'depth.npy',
        'depth.png',
        'cloud.ply',
        'overview.png',
    ]
    # a two-stage export without a confidence output: the feature-based confidence, in [0, 1]
    # at input resolution, NaN exactly where the disparity is; high on this clean textured pair
    assert summary['confidence'] == 'features'
    conf = np.load(out / 'confidence.npy')
    assert conf.dtype == np.float32 and conf.shape == disp.shape
    np.testing.assert_array_equal(np.isnan(conf), np.isnan(disp))
    assert np.nanmin(conf) >= 0 and np.nanmax(conf) <= 1
    assert np.nanmedian(conf[4:-4, 24:-4]) > 0.9 and summary['mean_confidence'] > 0.5
    assert cv2.imread(str(out / 'confidence.png')).shape == (128, 256, 3)
    assert summary['depth_colors_m'] == [0.0, 5.0]  # 16 x fx*B/64 px = 5 m, at most --max-depth
    assert 'swap_check' not in summary  # a good match: no second pass
    depth = np.load(out / 'depth.npy')
    expected = FX * BASELINE / DISP  # 1.25 m
    assert np.nanmedian(depth) == pytest.approx(expected, rel=0.01)
    cloud = read_ply(out / 'cloud.ply')
    kept = depth <= 5  # the cloud keeps [--min-depth, --max-depth]; depth.npy is not cut
    assert len(cloud) == kept.sum() < np.isfinite(depth).sum() and np.all(cloud['z'] <= 5)
    ys, xs = np.nonzero(kept)
    np.testing.assert_array_equal(cloud['r'], left[ys, xs, 0])
    i = len(cloud) // 2
    assert cloud['x'][i] == pytest.approx((xs[i] - 127.5) * cloud['z'][i] / FX, rel=1e-4)


def test_infer_with_camera_info_yaml_and_max_depth(setup, tmp_path):
    root, model, _ = setup
    info = tmp_path / 'right.yaml'
    info.write_text(
        'image_width: 256\nimage_height: 128\ncamera_name: right\n'
        f'camera_matrix: {{rows: 3, cols: 3, data: [{FX}, 0, 127.5, 0, {FX}, 63.5, 0, 0, 1]}}\n'
        'projection_matrix: '
        f'{{rows: 3, cols: 4, data: [{FX}, 0, 127.5, {-FX * BASELINE}, 0, {FX}, 63.5, '
        '0, 0, 0, 1, 0]}\n'
    )
    out = tmp_path / 'o'
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'l.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(model),
            '--backend',
            'onnxruntime',
            '--camera-info',
            str(info),
            '--min-depth',
            '1.2',
            '--max-depth',
            '1.3',
            '--out',
            str(out),
        ]
    )
    assert rc == 0
    depth = np.load(out / 'depth.npy')  # baseline from the right camera's Tx = -fx*B
    assert np.nanmedian(depth) == pytest.approx(FX * BASELINE / DISP, rel=0.01)
    # as in stereo_node: the depth image keeps every valid disparity, only the cloud is cut to
    # [min_depth, max_depth]
    assert np.nanmax(depth) > 1.3
    cloud = read_ply(out / 'cloud.ply')
    assert np.all(cloud['z'] <= 1.3) and np.all(cloud['z'] >= 1.2)
    kept = (depth >= 1.2) & (depth <= 1.3)
    assert 0 < len(cloud) == kept.sum() < np.isfinite(depth).sum()


def test_infer_errors_are_messages_not_tracebacks(setup, tmp_path, capsys):
    root, model, _ = setup
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'nope.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(model),
            '--out',
            str(tmp_path),
        ]
    )
    assert rc == 2 and 'nope.png does not exist' in capsys.readouterr().err
    info = tmp_path / 'left.yaml'
    info.write_text(
        'image_width: 256\nimage_height: 128\nprojection_matrix: {data: [200, 0, 127.5, 0, 0, '
        '200, 63.5, '
        '0, 0, 0, 1, 0]}\n'
    )
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'l.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(model),
            '--camera-info',
            str(info),
            '--out',
            str(tmp_path),
        ]
    )
    assert rc == 2 and '--baseline METRES' in capsys.readouterr().err
    bad_k = tmp_path / 'K.txt'
    bad_k.write_text('1 2 3\n0.1\n')
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'l.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(model),
            '--calib',
            str(bad_k),
            '--out',
            str(tmp_path),
        ]
    )
    assert rc == 2 and 'line 1 has 3 numbers' in capsys.readouterr().err
    rc = main(
        [
            'infer',
            '--left',
            str(root / 'l.png'),
            '--right',
            str(root / 'r.png'),
            '--model',
            str(tmp_path / 'missing'),
            '--out',
            str(tmp_path),
        ]
    )
    assert (
        rc == 2
        and 'does not exist; expected a directory with feature_runner.onnx'
        in capsys.readouterr().err
    )


def write_pair(path, left, right):
    path.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path / 'l.png'), cv2.cvtColor(left, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(path / 'r.png'), cv2.cvtColor(right, cv2.COLOR_RGB2BGR))
    return str(path / 'l.png'), str(path / 'r.png')


def test_infer_warns_about_a_swapped_pair_and_a_missing_calibration(tmp_path, capsys):
    """Warn about a swapped pair and note the depth skipped for lack of calibration.

    sgbm turns the negative disparities of a swapped pair into NaN: the check sees few valid
    pixels, matches the pair the other way round and says what to do.
    """
    left, right = shifted_pair(128, 320, DISP, seed=3)
    lp, rp = write_pair(tmp_path, left, right)
    out = tmp_path / 'swapped'
    rc = main(['infer', '--left', rp, '--right', lp, '--backend', 'sgbm', '--out', str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    summary = json.loads(cap.out.strip().splitlines()[-1])
    assert 'left and right look swapped' in cap.err and "pass the left camera's image" in cap.err
    assert summary['swap_check']['looks_swapped'] is True
    assert summary['swap_check']['valid_fraction'] > 0.9 and summary['valid_fraction'] < 0.1
    # without calibration: disparity only, and a note saying why
    assert 'no calibration given, so depth.npy, depth.png and cloud.ply were skipped' in cap.err
    assert not (out / 'depth.npy').exists() and not (out / 'cloud.ply').exists()
    assert summary['outputs'] == ['left.png', 'disparity.npy', 'disparity.png', 'overview.png']
    assert cv2.imread(str(out / 'overview.png')).shape == overview_shape(128, 320)
    # the right order: no warning, no second pass
    out = tmp_path / 'right_order'
    rc = main(['infer', '--left', lp, '--right', rp, '--backend', 'sgbm', '--out', str(out)])
    assert rc == 0
    cap = capsys.readouterr()
    assert 'warning' not in cap.err
    assert 'swap_check' not in json.loads(cap.out.strip().splitlines()[-1])


def test_swap_check_catches_a_network_that_matches_a_swapped_pair_with_garbage():
    """Catch a swapped pair that a network matches with garbage (the shipped model).

    A network returns mostly positive (wrong) disparities for a swapped pair: the match error
    (the right image warped by the disparity vs the left) shows it.
    """
    from ffs_ros.cli.infer import match_error, swap_check
    from ffs_ros.inference import load_matcher
    from ffs_ros.synth import render_scene

    scene = render_scene(np.random.default_rng(0), 128, 256, max_disparity=48, min_disparity=4.0)
    matcher = load_matcher(None, 'onnxruntime')
    try:
        good = matcher.match(scene.left, scene.right)
        assert 'swapped' not in swap_check(matcher, scene.left, scene.right, good)
        bad = matcher.match(scene.right, scene.left)
        check = swap_check(matcher, scene.right, scene.left, bad)
    finally:
        matcher.close()
    assert check['valid_fraction'] > 0.5  # few NaN: the valid fraction alone would not see it
    assert check['looks_swapped'] and check['swapped']['match_error'] < 0.5 < check['match_error']
    # the true disparity scores well too (not 0: each view has its own noise, gain and blur)
    ok = np.isfinite(scene.disparity) & ~scene.occluded
    assert match_error(scene.left, scene.right, np.where(ok, scene.disparity, np.nan)) < 0.45


def test_infer_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(['infer', '--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for shown in ('(default: 100.0)', '(default: 0.0)', '(default: auto)', '(default: letterbox)'):
        assert shown in text, shown


def test_build_engine_without_tensorrt_says_what_to_do(setup, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    _, model, _ = setup
    rc = main(['build-engine', '--model', str(model), '--precision', 'fp32'])
    err = capsys.readouterr().err
    assert rc == 2 and 'needs the TensorRT Python package' in err
    assert 'sgbm' not in err and 'build engines on the machine that will run them' in err
