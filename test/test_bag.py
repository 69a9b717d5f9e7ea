"""`ffs-ros bag`: a bag of synthetic scenes goes in; every pair comes out processed.

The bag is written with rosbags from synthetic scenes; every pair comes out processed, with the
node's topic names, message types, stamps and frame ids, and depth matching the ground truth
(sqlite3 and MCAP).
"""

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from stereo_msgs.msg import DisparityImage

from ffs_ros.cli import main
from ffs_ros.convert import image_to_numpy, make_camera_infos, numpy_to_image
from ffs_ros.synth import plane_pair

H, W, FX, B = 96, 160, 200.0, 0.1
TS = get_typestore(Stores.ROS2_JAZZY)


def write_bag(path, storage, n=5, compressed=False, bad_index=None, info_after=True):
    """Write N pairs of a plane at disparity 8 + 2*i px (depth FX*B/d), stamped 1 s + i * 0.1 s.

    Each camera_info is written just after its image (as drivers do).
    """
    plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
    truth = {}
    with Writer(path, version=9, storage_plugin=plugin) as w:
        img_type = 'sensor_msgs/msg/CompressedImage' if compressed else 'sensor_msgs/msg/Image'
        conns = {
            t: w.add_connection(t, img_type, typestore=TS)
            for t in ('/left/image_rect', '/right/image_rect')
        }
        conns.update(
            {
                t: w.add_connection(t, 'sensor_msgs/msg/CameraInfo', typestore=TS)
                for t in ('/left/camera_info', '/right/camera_info')
            }
        )
        for i in range(n):
            t = 1_000_000_000 + i * 100_000_000
            d = 8.0 + 2 * i
            s = plane_pair(H, W, d, seed=i)
            li, ri = make_camera_infos(W, H, FX, B, frame_id='cam_left')
            for side, img, info in (('left', s.left, li), ('right', s.right, ri)):
                if bad_index == i and side == 'right':
                    img = img[:,:-8].copy()  # a pair of different sizes: refused, not fatal
                msg = numpy_to_image(img, 'rgb8')
                msg.header.frame_id = 'cam_left'
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
                info.header = msg.header
                if compressed:
                    c = CompressedImage(header=msg.header, format='png')
                    c.data = cv2.imencode('.png', cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[
                        1
                    ].tobytes()
                    msg = c
                w.write(conns[f'/{side}/image_rect'], t + 1000, serialize_message(msg))
                if info_after:
                    w.write(conns[f'/{side}/camera_info'], t + 2000, serialize_message(info))
            truth[t] = FX * B / d
    return truth


def read_bag(path):
    out = {}
    with Reader(path) as r:
        types = {c.topic: c.msgtype for c in r.connections}
        cls = {
            'stereo_msgs/msg/DisparityImage': DisparityImage,
            'sensor_msgs/msg/Image': Image,
            'sensor_msgs/msg/CameraInfo': CameraInfo,
            'sensor_msgs/msg/PointCloud2': PointCloud2,
            'sensor_msgs/msg/CompressedImage': CompressedImage,
        }
        for c, t, raw in r.messages():
            out.setdefault(c.topic, []).append((t, deserialize_message(raw, cls[c.msgtype])))
    return types, out


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_every_pair_processed_into_the_node_topics(tmp_path, storage, capsys):
    truth = write_bag(tmp_path / 'in', storage)
    rc = main(
        [
            'bag',
            str(tmp_path / 'in'),
            '--out',
            str(tmp_path / 'out'),
            '--backend',
            'sgbm',
            '--max-disparity',
            '64',
            '--storage',
            storage,
            '--quiet',
        ]
    )
    assert rc == 0
    report = capsys.readouterr().out
    assert 'processed' in report and '5 (' in report
    types, msgs = read_bag(tmp_path / 'out')
    assert (
        types['/disparity'] == 'stereo_msgs/msg/DisparityImage'
        and types['/points2'] == 'sensor_msgs/msg/PointCloud2'
    )
    assert (
        types['/depth/image_rect'] == 'sensor_msgs/msg/Image' and '/left/image_rect' in types
    )  # inputs copied
    assert len(msgs['/disparity']) == len(msgs['/depth/image_rect']) == len(msgs['/points2']) == 5
    for (log_t, depth), (_, info) in zip(msgs['/depth/image_rect'], msgs['/depth/camera_info']):
        stamp = depth.header.stamp.sec * 1_000_000_000 + depth.header.stamp.nanosec
        assert (
            depth.header.frame_id == info.header.frame_id == 'cam_left' and log_t == stamp + 1000
        )
        z = image_to_numpy(depth)
        z = z[np.isfinite(z)]
        assert z.size > 0.5 * H * W
        assert np.median(z) == pytest.approx(truth[stamp], rel=0.03)


def test_bad_pairs_counted_compressed_inputs_decoded_and_no_inputs(tmp_path, capsys):
    write_bag(tmp_path / 'in', 'mcap', n=4, compressed=True, bad_index=1)
    rc = main(
        [
            'bag',
            str(tmp_path / 'in'),
            '--out',
            str(tmp_path / 'out'),
            '--backend',
            'sgbm',
            '--max-disparity',
            '64',
            '--no-inputs',
            '--outputs',
            'disparity',
            '--quiet',
        ]
    )
    assert rc == 0
    report = capsys.readouterr().out
    assert 'refused' in report and 'left image is 160x96 but right image is 152x96' in report
    types, msgs = read_bag(tmp_path / 'out')
    assert set(types) == {'/disparity'} and len(msgs['/disparity']) == 3


def test_infos_published_before_or_missing(tmp_path, capsys):
    """Without camera infos every pair is refused with the reason.

    Bad arguments are one line and exit 2.
    """
    write_bag(tmp_path / 'in', 'mcap', n=2, info_after=False)
    assert (
        main(
            [
                'bag',
                str(tmp_path / 'in'),
                '--out',
                str(tmp_path / 'out'),
                '--backend',
                'sgbm',
                '--quiet',
            ]
        )
        == 0
    )
    assert 'no camera_info for this stamp or before it' in capsys.readouterr().out
    assert (
        main(
            [
                'bag',
                str(tmp_path / 'in'),
                '--out',
                str(tmp_path / 'out2'),
                '--backend',
                'sgbm',
                '--left-image',
                '/cam/left',
                '--quiet',
            ]
        )
        == 2
    )
    assert 'topic /cam/left is not in' in capsys.readouterr().err
    assert (
        main(
            ['bag', str(tmp_path / 'nothing'), '--out', str(tmp_path / 'o3'), '--backend', 'sgbm']
        )
        == 2
    )


def test_confidence_output_and_threshold(tmp_path, capsys):
    """--outputs confidence writes /confidence (32FC1 0..1); the threshold masks /disparity."""
    from test_inference_models import make_two_stage

    _, _, model = make_two_stage(tmp_path / 'model', 96, 160, 64, dynamic=True)
    write_bag(tmp_path / 'in', 'sqlite3', n=3)
    args = ['bag', str(tmp_path / 'in'), '--backend', 'onnxruntime', '--model', str(model)]
    args += ['--outputs', 'disparity,confidence', '--quiet', '--no-inputs']
    assert main(args + ['--out', str(tmp_path / 'all')]) == 0
    assert main(args + ['--out', str(tmp_path / 'cut'), '--confidence-threshold', '0.9']) == 0
    types, msgs = read_bag(tmp_path / 'all')
    assert types['/confidence'] == 'sensor_msgs/msg/Image' and len(msgs['/confidence']) == 3
    _, cut = read_bag(tmp_path / 'cut')
    for (_, conf), (_, d_all), (_, d_cut) in zip(
        msgs['/confidence'], msgs['/disparity'], cut['/disparity']
    ):
        c = image_to_numpy(conf)
        assert conf.encoding == '32FC1' and conf.header.frame_id == 'cam_left'
        assert np.nanmin(c) >= 0 and np.nanmax(c) <= 1
        a, b = image_to_numpy(d_all.image), image_to_numpy(d_cut.image)
        np.testing.assert_array_equal(np.isfinite(b), np.isfinite(a) & (c >= 0.9))
    capsys.readouterr()
    rc = main(
        ['bag', str(tmp_path / 'in'), '--out', str(tmp_path / 'o'), '--backend', 'sgbm',
         '--outputs', 'confidence']
    )
    assert rc == 2 and 'backend sgbm gives no confidence' in capsys.readouterr().err
