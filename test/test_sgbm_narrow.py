"""Issue 10.1: narrow images with backend sgbm are refused as bad input before OpenCV sees them.

OpenCV's StereoSGBM crashes the process (SIGSEGV) on an image exactly one pixel narrower than its
disparity range and raises cv2.error on other narrow ones. Each check runs in its own Python
process so that a regression segfaults that child, not the test runner.
"""

import json
import subprocess
import sys
import textwrap

import pytest

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from ffs_ros.convert import make_camera_infos, numpy_to_image
    from ffs_ros.inference.sgbm import SGBMMatcher
    from ffs_ros.pipeline import InputError, PipelineConfig, StereoPipeline
    from ffs_ros.synth import plane_pair

    mode, width, max_disp = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    m = SGBMMatcher(max_disparity=max_disp)
    result = {}
    if mode == 'matcher':
        im = np.random.default_rng(0).integers(0, 255, (24, width, 3), np.uint8)
        try:
            d = m.match(im, im.copy())
            result = {'ok': True, 'shape': list(d.shape)}
        except ValueError as e:
            result = {'ok': False, 'type': type(e).__name__, 'problem': getattr(e, 'problem', ''),
                      'fix': getattr(e, 'fix', '')}
    else:   # pipeline: the narrow pair is bad input, the next good pair is processed
        p = StereoPipeline(m, PipelineConfig(max_disparity=float(max_disp)))
        for w in (width, 128):
            s = plane_pair(48, w, 8.0, seed=1)
            li, ri = make_camera_infos(w, 48, 100.0, 0.1)
            try:
                out = p.process(numpy_to_image(s.left, 'rgb8'), numpy_to_image(s.right, 'rgb8'),
                li, ri)
                result[w] = {'ok': True, 'valid': out.valid_fraction}
            except InputError as e:
                result[w] = {'ok': False, 'problem': e.problem, 'fix': e.fix}
    print(json.dumps(result))
""")


def run_child(*args):
    r = subprocess.run(
        [sys.executable, '-c', CHILD, *map(str, args)], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (
        f'child exited {r.returncode} (negative: killed by a signal)\n{r.stderr}'
    )
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('width', [1, 2, 33, 255, 256])
def test_sgbm_refuses_images_not_wider_than_its_disparity_range(width):
    r = run_child('matcher', width, 256)
    assert r['ok'] is False and r['type'] == 'ImageTooNarrow', r
    assert f'width {width} px' in r['problem'] and '257 px' in r['problem'], r
    assert 'max_disparity' in r['problem'] + r['fix'], r
    if width > 16:  # the fix names a disparity range that fits the image
        assert f'max_disparity to {(width - 1) // 16 * 16}.0' in r['fix'], r


def test_sgbm_matches_the_narrowest_accepted_width():
    r = run_child('matcher', 257, 256)
    assert r == {'ok': True, 'shape': [24, 257]}
    assert run_child('matcher', 49, 48)['ok'] is True


def test_pipeline_refuses_a_narrow_pair_as_input_error_and_processes_the_next():
    r = run_child('pipeline', 47, 48)  # 47 = range - 1: the width that segfaulted
    assert r['47']['ok'] is False and 'too narrow' in r['47']['problem'], r
    assert 'max_disparity to 32.0' in r['47']['fix'], r
    assert r['128']['ok'] is True and r['128']['valid'] > 0.5, r
