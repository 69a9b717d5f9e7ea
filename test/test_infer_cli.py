"""`ffs-ros infer` and `ffs-ros build-engine` end to end on CPU.

With a tiny generated export, on ONNX Runtime.
"""

import json

import cv2
import numpy as np
import pytest
from test_inference_models import make_two_stage, shifted_pair

from ffs_ros.cli import main

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
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary['backend'] == 'onnxruntime' and set(summary['stages_ms']) >= {
        'feature',
        'gwc',
        'post',
    }
    disp = np.load(out / 'disparity.npy')
    assert disp.dtype == np.float32 and disp.shape == (128, 256)
    assert np.nanmedian(np.abs(disp[4:-4, 24:-4] - DISP)) < 0.1
    assert cv2.imread(str(out / 'disparity.png')).shape == (128, 256, 3)
    depth = np.load(out / 'depth.npy')
    expected = FX * BASELINE / DISP  # 1.25 m
    assert np.nanmedian(depth) == pytest.approx(expected, rel=0.01)
    cloud = read_ply(out / 'cloud.ply')
    assert len(cloud) == np.isfinite(depth).sum() and np.all(cloud['z'] <= 5)
    ys, xs = np.nonzero(np.isfinite(depth))
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
            '--max-depth',
            '1.3',
            '--out',
            str(out),
        ]
    )
    assert rc == 0
    depth = np.load(out / 'depth.npy')  # baseline from the right camera's Tx = -fx*B
    assert np.nanmedian(depth) == pytest.approx(FX * BASELINE / DISP, rel=0.01)
    assert (
        np.all(np.isnan(depth) | (depth <= 1.3)) and np.isnan(depth).mean() > 0.05
    )  # the far tail is cut


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


def test_build_engine_without_tensorrt_says_what_to_do(setup, capsys):
    try:
        import tensorrt  # noqa: F401

        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    _, model, _ = setup
    rc = main(['build-engine', '--model', str(model), '--precision', 'fp32'])
    assert rc == 2 and 'needs the TensorRT Python package' in capsys.readouterr().err
