"""Evaluation metrics and data sets (the numbers in models/README.md come from these functions)."""

import numpy as np
import pytest

from ffs_ros.training import evaluate as ev


def test_score_definitions():
    gt = np.full((2, 5), 40.0, np.float32)
    pred = gt.copy()
    pred[0, 0] += 0.5  # ok everywhere
    pred[0, 1] += 1.5  # bad-1 only
    pred[0, 2] += 2.5  # bad-1, bad-2; not D1 (3 px rule)
    pred[0, 3] += 4.0  # D1 too (> 3 px and > 5 % of 40 = 2 px)
    valid = np.ones_like(gt, bool)
    s = ev.score(pred, gt, valid)
    assert s['epe'] == pytest.approx((0.5 + 1.5 + 2.5 + 4.0) / 10)
    assert (
        s['bad1'] == pytest.approx(0.3)
        and s['bad2'] == pytest.approx(0.2)
        and s['d1'] == pytest.approx(0.1)
    )
    assert s['density'] == 1.0


def test_missing_ground_truth_and_invalid_predictions():
    gt = np.array([[10.0, np.inf, 10.0, 10.0]], np.float32)
    pred = np.array([[10.0, 99.0, np.nan, 12.0]], np.float32)
    s = ev.score(pred, gt, np.ones_like(gt, bool))
    # inf GT is not scored; the NaN is filled with the smaller neighbour (background): min(99, 12)
    # = 12
    assert s['density'] == pytest.approx(2 / 3)
    assert s['epe'] == pytest.approx((0 + 2 + 2) / 3)


def test_fill_invalid_prefers_background():
    d = np.array([[5.0, np.nan, np.nan, 20.0, np.nan]], np.float32)
    assert np.allclose(ev.fill_invalid(d), [[5.0, 5.0, 5.0, 20.0, 20.0]])


def test_motorcycle_is_bundled_and_scaled():
    (full,) = ev.motorcycle()
    (small,) = ev.motorcycle(max_size=370)
    assert full.left.shape == (500, 741, 3) and full.gt.shape == (500, 741)
    assert not full.valid.all() and full.valid.mean() > 0.8  # +inf = missing ground truth
    assert max(small.left.shape[:2]) <= 370
    ratio = np.nanmax(np.where(small.valid, small.gt, np.nan)) / np.nanmax(
        np.where(full.valid, full.gt, np.nan)
    )
    assert ratio == pytest.approx(small.left.shape[1] / 741, rel=0.02)


def test_heldout_synthetic_is_fixed_and_not_training_data():
    a = ev.synthetic(2, 64, 96, 30.0)
    b = ev.synthetic(2, 64, 96, 30.0)
    assert np.array_equal(a[1].left, b[1].left) and np.array_equal(a[1].gt, b[1].gt)
    from ffs_ros.training.data import DEFAULT_TRAIN_SEED

    assert ev.HELDOUT_SEED != DEFAULT_TRAIN_SEED


def test_perfect_matcher_scores_zero():
    pairs = ev.synthetic(2, 64, 96, 30.0)
    table = {p.left.tobytes(): p.gt for p in pairs}
    rows, mean = ev.evaluate_matcher(lambda lft, r: table[lft.tobytes()], pairs)
    assert mean['epe'] == 0.0 and mean['bad2'] == 0.0 and len(rows) == 2


def test_eval_cli_passes_matcher_options(tmp_path, capsys):
    """`ffs-ros eval -o KEY=VALUE` runs the model with that load_matcher option (as bench does)."""
    from test_inference_models import make_two_stage

    from ffs_ros.cli import main

    make_two_stage(tmp_path / 'm', 64, 96, 32, dynamic=True)
    base = ['eval', '--model', str(tmp_path / 'm'), '--datasets', 'synthetic']
    base += ['--synthetic-n', '1', '--no-sgbm', '--confidence', 'none']
    assert main(base + ['-o', 'net_size=[128,160]']) == 0
    out = capsys.readouterr().out
    assert 'net_size=[128,160]' in out and 'synthetic' in out  # the row names the option
    assert main(base + ['-o', 'net_size=[100,160]']) == 2
    assert 'must be multiples of 32' in capsys.readouterr().out
    assert main(base + ['-o', 'net_size']) == 2
    assert 'KEY=VALUE' in capsys.readouterr().out
    assert main(base + ['--direct-torch', '-o', 'net_size=[128,160]']) == 2
    assert 'drop it or --direct-torch' in capsys.readouterr().out
