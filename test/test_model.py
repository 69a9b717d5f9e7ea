"""FFSSmall: the two-stage split, the public load_model API, and that it can learn.

Learning is shown by one tiny overfit.
"""

import numpy as np
import pytest
import torch

from ffs_ros.contract.gwc import gwc_volume_torch
from ffs_ros.model import FEATURE_NAMES, build_model, load_model
from ffs_ros.model.lookup import lookup_last
from ffs_ros.model.volume import shifted_stack

TINY = {
    'max_disp': 32,
    'enc': [8, 8, 16, 16, 16],
    'feat': [16, 16, 16, 16],
    'stem_ch': 8,
    'concat_ch': 4,
    'vol': [8, 8, 8, 8],
    'geo_ch': 2,
    'hidden': 16,
    'ctx': 16,
    'valid_iters': 2,
    'train_iters': 2,
}


@pytest.fixture(scope='module')
def tiny():
    torch.manual_seed(0)
    return build_model(TINY).eval()


def _pair(h=64, w=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, h, w, generator=g) * 255, torch.rand(1, 3, h, w, generator=g) * 255


def test_feature_stage_names_and_shapes(tiny):
    left, right = _pair()
    with torch.no_grad():
        f = tiny.features(left, right)
    assert tuple(f) == FEATURE_NAMES
    assert f['features_left_04'].shape == (1, 16, 16, 24)
    assert f['features_right_04'].shape == (1, 16, 16, 24)
    assert f['features_left_08'].shape[-2:] == (8, 12)
    assert f['features_left_16'].shape[-2:] == (4, 6)
    assert f['features_left_32'].shape[-2:] == (2, 3)
    assert f['stem_2x'].shape == (1, 8, 32, 48)


def test_forward_is_post_of_features_and_contract_volume(tiny):
    left, right = _pair()
    with torch.no_grad():
        full = tiny(left, right)
        f = tiny.features(left, right)
        vol = gwc_volume_torch(
            f['features_left_04'],
            f['features_right_04'],
            tiny.cv_group,
            tiny.max_disp // 4,
            tiny.normalize,
        )
        split = tiny.post(**f, gwc_volume=vol.half())  # upstream feeds the volume as fp16
    assert full.shape == (1, 1, 64, 96)
    assert torch.allclose(full, split, atol=0.05)
    assert (
        tiny.max_disp == 32
        and tiny.cv_group == 8
        and tiny.normalize is True
        and tiny.valid_iters == 2
    )


def test_load_model_roundtrip(tmp_path, tiny):
    path = tmp_path / 'm.pt'
    torch.save({'config': tiny.config, 'state_dict': tiny.state_dict(), 'step': 7}, path)
    m = load_model(path)
    assert not m.training and m.step == 7
    left, right = _pair(seed=1)
    with torch.no_grad():
        assert torch.allclose(m(left, right), tiny(left, right))
    with pytest.raises(FileNotFoundError, match='ffs-ros train'):
        load_model(tmp_path / 'missing.pt')
    torch.save({'weights': 1}, tmp_path / 'bad.pt')
    with pytest.raises(ValueError, match='not an ffs_ros checkpoint'):
        load_model(tmp_path / 'bad.pt')


def test_bad_config_is_named():
    with pytest.raises(ValueError, match='multiple of 32'):
        build_model({'max_disp': 100})
    with pytest.raises(ValueError, match='unknown model config key'):
        build_model({'widht': 3})


def test_lookup_interpolates_and_zeroes_outside():
    vals = torch.tensor([[0.0, 10.0, 20.0, 30.0]])
    pos = torch.tensor([[0.0, 0.5, 2.25, 3.0, -1.0, 3.5, 4.0]])
    out = lookup_last(vals, pos)
    assert torch.allclose(out, torch.tensor([[0.0, 5.0, 22.5, 30.0, 0.0, 15.0, 0.0]]))


def test_shifted_stack_matches_definition():
    r = torch.arange(2 * 5, dtype=torch.float32).view(1, 1, 2, 5)
    s = shifted_stack(r, 3)
    for d in range(3):
        for w in range(5):
            want = r[0, 0,:, w - d] if w >= d else torch.zeros(2)
            assert torch.equal(s[0, 0, d,:, w], want)


def test_tiny_model_learns_a_constant_shift():
    """A few optimisation steps on one plane pair must reduce the error a lot.

    That is: the graph is trainable.
    """
    from ffs_ros.synth import plane_pair
    from ffs_ros.training.train import sequence_loss

    torch.manual_seed(0)
    m = build_model(TINY).train()
    s = plane_pair(32, 64, 8.0, seed=3)
    left = torch.from_numpy(s.left).permute(2, 0, 1)[None].float()
    right = torch.from_numpy(s.right).permute(2, 0, 1)[None].float()
    gt = torch.from_numpy(s.disparity)[None, None]
    valid = torch.from_numpy(~s.occluded)[None, None]
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    errs = []
    for _ in range(30):
        f = m.features(left, right)
        o = m.post(
            **f, gwc_volume=m.gwc(f['features_left_04'], f['features_right_04']), return_all=True
        )
        loss = sequence_loss(o, gt, valid)
        errs.append(float((o['final'] - gt).abs()[valid].mean()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.mean(errs[-5:]) < 0.3 * np.mean(errs[:3])


def test_guided_upsampler_starts_as_plain_convex_and_snaps_edges():
    """guide_scale 0 is the plain convex upsampler; active, the guide snaps edges.

    guide_scale 0: exactly the plain convex upsampler (the weights of a checkpoint trained without
    the guide mean the same thing with it). Active: still a convex combination of the 3x3 coarse
    neighbours, and an embedding that tells the two sides of an image edge apart puts the depth
    edge on the image edge.
    """
    from ffs_ros.model.upsample import ConvexUpsampler

    torch.manual_seed(0)
    plain, guided = ConvexUpsampler(16, 8), ConvexUpsampler(16, 8, guide_ch=4)
    guided.head.load_state_dict(plain.head.state_dict())
    guided.guide_scale.data.zero_()
    d4 = torch.rand(1, 1, 6, 8) * 10
    hidden, stem = torch.randn(1, 16, 6, 8), torch.randn(1, 8, 12, 16)
    with torch.no_grad():
        assert torch.equal(plain(d4, hidden, stem), guided(d4, hidden, stem))
        guided.guide_scale.fill_(3.0)
        out = guided(d4, hidden, stem)
    nb = (
        torch.nn.functional.max_pool2d(d4 * 4, 3, 1, 1),
        -torch.nn.functional.max_pool2d(-d4 * 4, 3, 1, 1),
    )
    up = lambda t: torch.nn.functional.interpolate(t, scale_factor=4, mode='nearest')  # noqa: E731
    assert out.shape == (1, 1, 24, 32)
    assert torch.all(out <= up(nb[0]) + 1e-4) and torch.all(out >= up(nb[1]) - 1e-4)

    # a vertical depth edge between coarse columns, the image edge 2 px inside column 2 (full-res
    # x = 10):
    # with a zero head and an embedding equal to the image's side, every pixel takes its own
    # side's disparity
    d4 = torch.zeros(1, 1, 4, 5)
    d4[..., 2:] = 5.0  # far 0 px left of column 2, near 20 px from it on
    side = torch.zeros(1, 8, 8, 10)
    side[..., 5:] = 1.0  # stem channel 0: 1 right of the image edge (1/2-res x 5)
    g = ConvexUpsampler(4, 8, guide_ch=1)
    with torch.no_grad():
        for m in list(g.head) + list(g.guide):
            if isinstance(m, torch.nn.Conv2d):
                m.weight.zero_()
                m.bias.zero_()
        g.guide[0].weight[0, 0, 1, 1] = 1.0  # pass "right of the edge" through the guide CNN
        g.guide[2].weight[0, 0, 1, 1] = 1.0
        g.guide[4].weight[0, 0, 1, 1] = 1.0
        g.guide[6].weight[:, 0] = 2.0
        g.guide[6].bias[:] = -1.0  # embedding -1 left of the edge, +1 right of it
        g.guide_scale.zero_()
        plain_out = g(d4, torch.zeros(1, 4, 4, 5), side)[0, 0, 0]
        g.guide_scale.fill_(20.0)
        out = g(d4, torch.zeros(1, 4, 4, 5), side)[0, 0, 0]
    assert torch.all(out[:10] < 0.5) and torch.all(out[10:] > 19.5), out
    assert (
        plain_out[6:12] - torch.tensor([0, 0, 20, 20, 20, 20.0])
    ).abs().max() > 5  # plain: blended edge


def test_checkpoints_without_guide_load_as_plain_upsampler(tmp_path):
    """Checkpoints written before the guide term load with guide_ch 0.

    They have no 'guide_ch' in their config.
    """
    cfg = dict(TINY, guide_ch=0)
    torch.manual_seed(0)
    old = build_model(cfg).eval()
    saved = dict(old.config)
    del saved['guide_ch']
    torch.save({'config': saved, 'state_dict': old.state_dict()}, tmp_path / 'old.pt')
    m = load_model(tmp_path / 'old.pt')
    assert m.config['guide_ch'] == 0
    left, right = _pair(seed=2)
    with torch.no_grad():
        assert torch.equal(m(left, right), old(left, right))


# the fast tier's block choices (tools/latency_table.py, docs/fast_tier.md), tiny
TINY_FAST = dict(
    TINY,
    enc_stem=1,
    enc_depth=1,
    shared_stem=True,
    stem_ch=8,
    light_decoder=True,
    aggregation='2d',
    agg2d=[8, 16, 16],
    corr_skip=True,
    context='agg',
    valid_iters=0,
    train_iters=0,
    upsampler='convex4',
    up_mid=8,
    guide_ch=0,
    cv_group=4,
)


def test_fast_blocks_keep_the_two_stage_contract_and_confidence():
    torch.manual_seed(0)
    m = build_model(TINY_FAST).eval()
    assert m.lookup is None and m.update is None and m.concat is None and m.context is None
    left, right = _pair()
    with torch.no_grad():
        f = m.features(left, right)
        assert tuple(f) == FEATURE_NAMES
        assert f['stem_2x'].shape == (1, 8, 32, 48)  # the encoder's own stem
        vol = gwc_volume_torch(f['features_left_04'], f['features_right_04'], 4, 8, True)
        disp, conf = m.post(**f, gwc_volume=vol.half(), with_confidence=True)
        full = m(left, right)
        out = m.post(**f, gwc_volume=vol, return_all=True)
    assert disp.shape == conf.shape == (1, 1, 64, 96)
    assert torch.allclose(full, disp, atol=0.05)
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0 + 1e-5
    assert 0.0 <= float(disp.min()) and float(disp.max()) <= 32.0
    assert out['iters'] == [] and out['init'].shape == (1, 1, 64, 96)
    with pytest.raises(ValueError, match='no refinement'):
        m.post(**f, gwc_volume=vol, iters=1)


def test_convex4_softmax_and_upsampling_are_convex():
    from ffs_ros.model.upsample4 import Convex4Upsampler, softmax9

    x = torch.randn(2, 9, 16, 3, 4) * 5
    assert torch.allclose(softmax9(x), torch.softmax(x, 1), atol=1e-6)
    torch.manual_seed(0)
    up = Convex4Upsampler(6, 4, mid=8)
    d4 = torch.rand(1, 1, 5, 7) * 10
    with torch.no_grad():
        out, ones = up(d4, torch.randn(1, 6, 5, 7), torch.randn(1, 4, 10, 14), torch.ones_like(d4))
    assert out.shape == (1, 1, 20, 28)
    assert torch.allclose(ones, torch.ones_like(ones), atol=1e-5)  # weights sum to 1
    hi = torch.nn.functional.max_pool2d(d4 * 4, 3, 1, 1)
    lo = -torch.nn.functional.max_pool2d(-d4 * 4, 3, 1, 1)
    near = lambda t: torch.nn.functional.interpolate(t, scale_factor=4, mode='nearest')  # noqa: E731
    assert torch.all(out <= near(hi) + 1e-4) and torch.all(out >= near(lo) - 1e-4)


@pytest.mark.parametrize(
    'bad, match',
    [
        ({'aggregation': '3d'}, 'aggregation'),
        ({'upsampler': 'bilinear'}, 'upsampler'),
        ({'context': 'agg', 'aggregation': 'axial3d'}, "context 'agg'"),
        ({'context': 'agg', 'valid_iters': 1}, "context 'agg'"),
        ({'shared_stem': True, 'stem_ch': 16}, 'shared_stem'),
    ],
)
def test_bad_fast_config_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        build_model(dict(TINY_FAST, **bad))


def test_ffs_small_defaults_are_unchanged():
    """Check that the block choices default to ffs_small's blocks (its checkpoint still loads)."""
    from ffs_ros.model import DEFAULT_CONFIG

    m = build_model({})
    assert DEFAULT_CONFIG['aggregation'] == 'axial3d' and DEFAULT_CONFIG['upsampler'] == 'guided'
    assert m.feature_net.stem2 is not None and m.concat is not None and m.update is not None
    assert len(m.feature_net.encoder.stem) == 2 and len(m.feature_net.encoder.s4) == 2
    # a checkpoint written before the block choices existed: completed with ffs_small's blocks
    from ffs_ros.model import BLOCK_CHOICES, checkpoint_config

    old = {k: v for k, v in m.config.items() if k not in BLOCK_CHOICES}
    assert checkpoint_config(old) == m.config


def test_corr_skip_starts_as_winner_take_all():
    """With a zero classifier, the 2D aggregation's logits are the scaled mean cosine per bin."""
    from ffs_ros.model.aggregate2d import CORR_SKIP_SCALE, Aggregation2d

    torch.manual_seed(0)
    agg = Aggregation2d(4, 6, [8, 8, 8], [16, 16, 16, 16], corr_skip=True).eval()
    with torch.no_grad():
        agg.classifier.weight.zero_()
        agg.classifier.bias.zero_()
        vol = torch.rand(1, 4, 6, 8, 8) * 2 - 1
        feats = [torch.randn(1, 16, 8 // s, 8 // s) for s in (1, 2, 4, 8)]
        _, logits, _ = agg(vol, *feats)
    assert torch.allclose(logits, CORR_SKIP_SCALE * vol.mean(1), atol=1e-5)


def test_local_refine_reads_the_bins_around_the_estimate_and_starts_with_no_effect():
    from ffs_ros.model.refine_local import sample_bins

    prob = torch.zeros(1, 8, 1, 2)
    prob[0, 3] = 1.0  # all mass in bin 3
    disp4 = torch.tensor([3.0, 2.5]).view(1, 1, 1, 2)
    s = sample_bins(prob, disp4, range(-2, 3))[0, :, 0]  # [5, 2]
    assert torch.allclose(s[:, 0], torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0]))
    assert torch.allclose(s[:, 1], torch.tensor([0.0, 0.0, 0.5, 0.5, 0.0]))  # between bins
    # added to a trained network (ffs-ros train --init), it computes exactly as before
    torch.manual_seed(0)
    base = build_model(TINY_FAST).eval()
    m = build_model(dict(TINY_FAST, local_refine=8)).eval()
    missing, unexpected = m.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith('local_refine.') for k in missing)
    left, right = _pair(seed=4)
    with torch.no_grad():
        assert torch.equal(m(left, right), base(left, right))
        f = m.features(left, right)
        vol = gwc_volume_torch(f['features_left_04'], f['features_right_04'], 4, 8, True)
        out = m.post(**f, gwc_volume=vol, return_all=True)
        torch.nn.init.normal_(m.local_refine.out.weight, std=0.1)
        moved = m.post(**f, gwc_volume=vol, return_all=True)
    assert len(out['iters']) == 1 and torch.equal(out['iters'][0], out['init'])
    assert not torch.allclose(moved['iters'][0], moved['init'])  # the correction is applied
    assert torch.allclose(moved['final'], m(left, right), atol=1e-5)
