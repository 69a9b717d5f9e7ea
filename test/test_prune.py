"""Structured pruning: whole inner channels removed, the network and its checkpoints still whole.

Channels whose filters are zero are the least important and removing them leaves the output
unchanged (the ranking and the slicing are right); a pruned checkpoint reloads and exports; the
fine-tune starts from it with `ffs-ros train --init`.
"""

import numpy as np
import pytest
from test_model import TINY, TINY_FAST
import torch

from ffs_ros.cli import main
from ffs_ros.model import build_model, count_parameters, load_model
from ffs_ros.model.widths import conv_and_norm, prunable_pairs, width_of
from ffs_ros.training.prune import channel_importance, prune


def _pair(h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    left = torch.rand(1, 3, h, w, generator=g) * 255
    return left, torch.roll(left, -4, 3)


@pytest.mark.parametrize('config', [TINY, TINY_FAST], ids=['ffs_small_blocks', 'fast_blocks'])
def test_removing_dead_channels_changes_nothing(config):
    torch.manual_seed(0)
    model = build_model(config).eval()
    pairs = prunable_pairs(model)
    assert pairs  # every architecture has inner widths
    dead = {}
    with torch.no_grad():
        for first in pairs:
            conv, bn = conv_and_norm(model.get_submodule(first))
            n = conv.out_channels
            idx = list(range(0, n, 2))  # every other channel: zero filter, and no batch-norm shift
            conv.weight[idx] = 0
            if conv.bias is not None:
                conv.bias[idx] = 0
            if bn is not None:
                bn.bias[idx] = 0
                bn.running_mean[idx] = 0
            dead[first] = n - len(idx)
    left, right = _pair()
    with torch.no_grad():
        ref, ref_conf = model(left, right, with_confidence=True)
    before = count_parameters(model)
    report = prune(model, 0.5)
    assert {k: b for k, (_, b) in report.items()} == dead
    assert all(float(channel_importance(model, f).min()) > 0 for f in pairs)  # the dead are gone
    assert count_parameters(model) < before
    with torch.no_grad():
        out, conf = model(left, right, with_confidence=True)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    torch.testing.assert_close(conf, ref_conf, atol=1e-5, rtol=0)
    assert model.config['pruned'] == {f: width_of(model, f) for f in pairs}


def test_pruned_checkpoint_reloads_exports_and_fine_tunes(tmp_path, capsys):
    from test_train import _cfg

    from ffs_ros.model.export import export_two_stage
    from ffs_ros.training.train import train

    torch.manual_seed(0)
    model = build_model(TINY_FAST)
    ck = tmp_path / 'fast.pt'
    torch.save({'config': model.config, 'state_dict': model.state_dict(), 'step': 7}, ck)
    assert main(['prune', '--checkpoint', str(ck), '--list']) == 0
    listed = capsys.readouterr().out
    assert 'feature_net.decoder.p4.0' in listed and 'upsampler.head.1' in listed
    out = tmp_path / 'pruned.pt'
    rc = main(['prune', '--checkpoint', str(ck), '--keep', '0.5', '--out', str(out)])
    assert rc == 0 and 'parameters' in capsys.readouterr().out
    pruned = load_model(out)
    assert pruned.config['pruned'] and pruned.step == 7
    assert count_parameters(pruned) < count_parameters(model)
    left, right = _pair()
    with torch.no_grad():
        a = pruned(left, right)
    # the same network after a save/load round trip, and in ONNX
    d = export_two_stage(pruned, tmp_path / 'onnx', 64, 96)
    from ffs_ros.inference import load_matcher

    m = load_matcher(d, backend='onnxruntime', threads=1, remove_invisible=False)
    img = lambda t: t[0].permute(1, 2, 0).numpy().astype(np.uint8)  # noqa: E731
    got = m.match(img(left.round()), img(right.round()))
    with torch.no_grad():
        ref = pruned(left.round(), right.round())[0, 0].numpy()
    assert np.abs(got - ref).max() < 0.05 and a.shape == (1, 1, 64, 96)
    # fine-tune: --init takes the pruned widths from the checkpoint
    cfg = _cfg(tmp_path / 'cache', 1)
    cfg['model'] = dict(TINY_FAST)
    train(cfg, tmp_path / 'ft', init=out, log=lambda m: None)
    ft = load_model(tmp_path / 'ft' / 'final.pt')
    assert ft.config['pruned'] == pruned.config['pruned']
    # errors: a width that is not inner, a bad share
    with pytest.raises(ValueError, match='not inner widths'):
        prune(build_model(TINY_FAST), 0.5, only=['feature_net.decoder.p4.1'])
    with pytest.raises(ValueError, match='keep must be in'):
        prune(build_model(TINY_FAST), 0.0)
