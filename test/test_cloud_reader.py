"""Every cloud variant we publish, read back by an independent reader.

The reader is ROS 2's own sensor_msgs_py.point_cloud2 (from ../shared/wheels/sensor-msgs-py; not on
PyPI), compared with our geometry.
"""

import numpy as np
import pytest
from std_msgs.msg import Header

from ffs_ros.convert import make_camera_infos, numpy_to_image
from ffs_ros.geometry import StereoCamera, depth_to_points, disparity_to_depth
from ffs_ros.inference.base import MatcherInfo, StereoMatcher
from ffs_ros.pipeline import PipelineConfig, StereoPipeline, Wanted

try:
    from sensor_msgs_py import point_cloud2 as pc2
except ImportError:  # a user's fresh clone without ../shared: say what is missing
    pc2 = None
pytestmark = pytest.mark.skipif(
    pc2 is None,
    reason='sensor_msgs_py is not installed: make venv installs it from '
    '../shared/wheels/sensor-msgs-py when ../shared is present',
)

W, H, FX, B = 48, 32, 40.0, 0.1


class Fixed(StereoMatcher):
    """A matcher returning a given disparity (NaN holes, a near and a far region)."""

    def __init__(self, disp):
        super().__init__()
        self.disp = disp

    @property
    def info(self):
        return MatcherInfo(backend='fixed')

    def match(self, left, right):
        return self.disp.copy()


def scene():
    rng = np.random.default_rng(3)
    disp = np.full((H, W), 4.0, np.float32)  # 1.0 m
    disp[:, W // 2:] = 1.0  # 4.0 m
    disp[rng.random((H, W)) < 0.1] = np.nan
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    return disp, rgb


def cloud(disp, rgb, **cfg):
    li, ri = make_camera_infos(W, H, FX, B)
    h = Header(frame_id='left_optical')
    pipe = StereoPipeline(Fixed(disp), PipelineConfig(**cfg))
    out = pipe.process(
        numpy_to_image(rgb, 'rgb8', h),
        numpy_to_image(rgb, 'rgb8', h),
        li,
        ri,
        Wanted(disparity=False, depth=False, cloud=True),
    )
    cam = StereoCamera.from_projection(li.p, ri.p, W, H)
    return out.cloud, cam


@pytest.mark.parametrize('organized', [True, False])
@pytest.mark.parametrize('use_color', [True, False])
@pytest.mark.parametrize('depth_range', [(0.0, 100.0), (0.5, 2.0)])
def test_sensor_msgs_py_reads_our_clouds_as_our_geometry(organized, use_color, depth_range):
    disp, rgb = scene()
    msg, cam = cloud(
        disp,
        rgb,
        organized_cloud=organized,
        use_color=use_color,
        min_depth=depth_range[0],
        max_depth=depth_range[1],
    )
    z = disparity_to_depth(disp, cam)
    pts = depth_to_points(z, cam)
    keep = np.isfinite(z) & (z >= depth_range[0]) & (z <= depth_range[1])
    names = ['x', 'y', 'z'] + (['rgb'] if use_color else [])
    assert [f.name for f in msg.fields] == names
    got = pc2.read_points_numpy(msg, field_names=['x', 'y', 'z'], skip_nans=True)
    np.testing.assert_allclose(got, pts[keep], rtol=1e-6, atol=1e-6)
    assert msg.is_dense == (not organized or bool(keep.all()))
    if organized:
        assert (msg.height, msg.width) == (H, W)
        every = pc2.read_points_numpy(msg, field_names=['z'])[:, 0].reshape(H, W)
        assert np.array_equal(np.isnan(every), ~keep)  # NaN points where nothing is valid
    else:
        assert (msg.height, msg.width) == (1, int(keep.sum()))
    if use_color:
        rec = pc2.read_points(msg, field_names=['x', 'y', 'z', 'rgb'], skip_nans=True)
        packed = np.asarray(rec['rgb'], np.float32).view(np.uint32)
        cols = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1).astype(
            np.uint8
        )
        np.testing.assert_array_equal(
            cols, rgb[keep]
        )  # the packed rgb decodes to the input colours


def test_builder_benchmark_builds_the_same_bytes_as_the_reference(capsys):
    """tools/cloud_builder_bench.py times our builder against create_cloud.

    Both must build the same cloud.
    """
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / 'tools' / 'cloud_builder_bench.py'
    spec = importlib.util.spec_from_file_location('cloud_builder_bench', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (
        mod.main(['--size', '64x48', '--iters', '2']) == 0
    )  # asserts byte equality before timing
    assert '"ratio"' in capsys.readouterr().out
