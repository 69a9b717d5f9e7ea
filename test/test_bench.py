"""`ffs-ros bench`: the JSON contract and the CLI (small sizes, few iterations)."""

import json

import numpy as np
import pytest

from ffs_ros.cli import main
from ffs_ros.cli.bench import build_messages, format_table, parse_size, run_bench, synthetic_pair
from ffs_ros.convert import image_to_numpy
from ffs_ros.inference.base import MatcherInfo, StereoMatcher


class StagedMatcher(StereoMatcher):
    """Zero disparity work, but reports sub-stages like the network backends do."""

    @property
    def info(self):
        return MatcherInfo(backend='staged')

    def match(self, left, right):
        self.last_timings = {'preprocess': 0.25, 'feature': 1.0}
        return np.full(left.shape[:2], 20.0, np.float32)


def test_bench_cli_sgbm_writes_the_json_contract(tmp_path, capsys):
    path = tmp_path / 'b.json'
    rc = main(
        [
            'bench',
            '--backend',
            'sgbm',
            '--size',
            '160x120',
            '--iters',
            '3',
            '--warmup',
            '1',
            '--max-disparity',
            '32',
            '--json',
            str(path),
        ]
    )
    assert rc == 0
    res = json.loads(path.read_text())
    for stage in ('convert', 'match', 'depth', 'cloud', 'serialize'):
        s = res['stages'][stage]
        assert 0 <= s['p50_ms'] <= s['p95_ms']
    assert res['backend'] == 'sgbm' and res['size'] == [160, 120]
    assert 0 < res['overhead_p50_ms'] < res['total_p50_ms']
    assert 0 < res['overhead_stage_sum_p50_ms'] and res['overhead_cpu_p50_ms'] > 0
    assert res['valid_fraction'] > 0.3  # SGBM found most of the generated scene
    table = capsys.readouterr().out
    assert 'overhead (not match)' in table and 'serialize' in table


def test_run_bench_records_matcher_stages_and_excludes_match_from_overhead():
    res = run_bench(StagedMatcher(), 96, 64, iters=4, warmup=1)
    assert res['stages']['match/preprocess']['p50_ms'] == 0.25
    assert res['stages']['match/feature']['p50_ms'] == 1.0
    parts = sum(res['stages'][s]['p50_ms'] for s in ('convert', 'depth', 'cloud', 'serialize'))
    assert res['overhead_p50_ms'] == pytest.approx(parts, rel=0.5, abs=0.5)
    assert 'match/feature' in format_table(res)


def test_synthetic_messages_are_a_valid_pair():
    left, right, scene = synthetic_pair(64, 48, 16, seed=1)
    assert left.shape == right.shape == (48, 64, 3) and not np.array_equal(left, right)
    for enc in ('rgb8', 'bgr8', 'mono8'):
        lft, r, li, ri = build_messages(left, right, enc)
        assert lft.encoding == enc and (li.width, li.height) == (64, 48)
        assert ri.p[3] < 0  # right P carries -fx * baseline
    np.testing.assert_array_equal(image_to_numpy(build_messages(left, right)[0]), left)


@pytest.mark.parametrize(
    'argv,msg',
    [
        (['--size', '640-480'], 'must look like 640x480'),
        (['--outputs', 'depth,mesh'], 'unknown --outputs'),
        (['--backend', 'nope'], 'unknown backend'),
        (['-o', 'fp16'], 'KEY=VALUE'),
    ],
)
def test_bench_cli_bad_arguments_exit_2_with_message(argv, msg, capsys):
    assert main(['bench', '--iters', '1'] + argv) == 2
    assert msg in capsys.readouterr().out


def test_parse_size():
    assert parse_size('640x480') == (640, 480)
    with pytest.raises(ValueError, match='at least 16x16'):
        parse_size('8x8')
