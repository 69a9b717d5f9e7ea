"""`ffs-ros train` mechanics on a tiny model.

Checkpoints are written, --resume continues where it stopped, --init warm-starts a new run from
weights and refuses weights of another architecture.
"""

import json
import math

import numpy as np
import pytest
from test_model import TINY
import torch

from ffs_ros.training.train import train


def _cfg(cache, steps):
    return {
        'model': dict(TINY),
        'data': {
            'cache': str(cache),
            'n': 3,
            'height': 64,
            'width': 96,
            'max_disparity': 24.0,
            'seed': 5,
        },
        'train': {
            'steps': steps,
            'batch': 1,
            'crop': [64, 96],
            'ckpt_every': 1,
            'keep_every': 0,
            'log_every': 1,
            'threads': 1,
        },
    }


def test_checkpoint_resume_and_init(tmp_path):
    cache, run = tmp_path / 'cache', tmp_path / 'run'
    quiet = lambda m: None  # noqa: E731
    train(_cfg(cache, 2), run, log=quiet)
    ck = torch.load(run / 'latest.pt', map_location='cpu', weights_only=False)
    assert ck['step'] == 2 and {'state_dict', 'optimizer', 'scheduler', 'rng'} <= set(ck)
    steps = [json.loads(line)['step'] for line in (run / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2]

    train(_cfg(cache, 3), run, resume=True, log=quiet)
    steps = [json.loads(line)['step'] for line in (run / 'log.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3]  # continued at step 3, did not start over
    assert torch.load(run / 'final.pt', map_location='cpu', weights_only=False)['step'] == 3

    msgs = []
    run2 = tmp_path / 'run2'
    train(_cfg(cache, 1), run2, log=msgs.append, init=run / 'final.pt')
    assert any('initialised from' in m for m in msgs)
    first = torch.load(run / 'final.pt', map_location='cpu', weights_only=False)['state_dict']
    after = torch.load(run2 / 'final.pt', map_location='cpu', weights_only=False)['state_dict']
    # one small step from the initial weights: close to them, not a fresh random init
    k = next(k for k, v in first.items() if v.dtype.is_floating_point and v.numel() > 100)
    assert (after[k] - first[k]).abs().max() < 0.05

    wrong = _cfg(cache, 1)
    wrong['model']['hidden'] = 24
    with pytest.raises(ValueError, match='do not fit'):
        train(wrong, tmp_path / 'run3', log=quiet, init=run / 'final.pt')


def test_occluded_pixels_get_their_loss_weight(tmp_path):
    """occluded_weight: occluded pixels inside the disparity range get that loss weight.

    They are trained with that weight (their rendered disparity is exact), non-occluded with 1,
    out-of-range with 0; `valid` (for metrics) stays non-occluded.
    """
    import numpy as np

    from ffs_ros.training.data import CropDataset, generate_cache

    generate_cache(tmp_path / 'c', n=2, height=64, width=96, max_disparity=24.0, seed=5)
    for w in (0.0, 0.5):
        ds = CropDataset(tmp_path / 'c', crop=(64, 96), max_disp=20, vflip=0.0, occluded_weight=w)
        b = ds.sample(0, np.random.default_rng(0))
        valid, weight, disp = b['valid'][0].numpy(), b['weight'][0].numpy(), b['disp'][0].numpy()
        occ = ~valid & (disp < 20) & (disp >= 0)
        assert occ.any() and valid.any() and (disp >= 20).any()
        assert np.all(weight[valid] == 1.0)
        assert np.all(weight[occ] == w)
        assert np.all(weight[disp >= 20] == 0.0)


def test_finetune_of_named_modules_from_a_checkpoint_without_the_guide(tmp_path):
    """Stage 3: --init without the guide term, then fine-tune only the named modules.

    --init from a checkpoint without the guide term (its new parameters start with a negligible
    effect) and train.trainable [upsampler]: everything else, BatchNorm statistics included, stays
    as it was.
    """
    cache, quiet = tmp_path / 'cache', (lambda m: None)
    base = _cfg(cache, 1)
    base['model']['guide_ch'] = 0
    train(base, tmp_path / 'a', log=quiet)
    cfg = _cfg(cache, 3)
    cfg['model']['guide_ch'] = 4
    cfg['train'].update(trainable=['upsampler'], lr=0.01)
    msgs = []
    train(cfg, tmp_path / 'b', log=msgs.append, init=tmp_path / 'a' / 'final.pt')
    assert any('new parameters with negligible initial effect' in m for m in msgs)
    assert any('training only upsampler' in m for m in msgs)
    before = torch.load(tmp_path / 'a' / 'final.pt', map_location='cpu', weights_only=False)[
        'state_dict'
    ]
    after = torch.load(tmp_path / 'b' / 'final.pt', map_location='cpu', weights_only=False)[
        'state_dict'
    ]
    for k, v in before.items():
        if not k.startswith('upsampler.'):
            assert torch.equal(after[k], v), k
    assert any(
        not torch.equal(after[k], before[k]) for k in before if k.startswith('upsampler.head')
    )
    assert after['upsampler.guide_scale'] != 1.0  # trained from its initial 1

    wrong = _cfg(cache, 1)
    wrong['train']['trainable'] = ['upsampler', 'decoder']
    with pytest.raises(ValueError, match='top-level modules'):
        train(wrong, tmp_path / 'c', log=quiet)


# each --init from the one before; the last one is shipped (models/README.md)
RECIPES = {
    'ffs_small': ['train.yaml', 'train_stage2.yaml', 'train_stage3.yaml'],
    'ffs_fast': ['train_fast.yaml', 'train_fast_stage2.yaml'],
}
# keys a stage may add with no effect on the weights it starts from (new blocks start at zero)
# or that are inference settings
ADDED_LATER = ('guide_ch', 'local_refine')


@pytest.mark.parametrize(
    'model_name, stage', [(m, i) for m, stages in RECIPES.items() for i in range(len(stages))]
)
def test_shipped_recipes_are_valid_for_the_shipped_models(model_name, stage):
    """The commands in models/README.md must run.

    Every key is known, scene options exist in the generator, the last stage builds the
    architecture of the shipped checkpoint, and each earlier stage one that --init can start the
    next from (equal up to the inference-time valid_iters, or missing only blocks the next stage
    adds with no initial effect).
    """
    import inspect
    from pathlib import Path

    import yaml

    from ffs_ros.model import checkpoint_config
    from ffs_ros.model.net import DEFAULT_CONFIG
    from ffs_ros.synth import render_scene
    from ffs_ros.training.train import DEFAULT_DATA, DEFAULT_TRAIN, INIT_MAY_ADD, merge

    root = Path(__file__).resolve().parent.parent
    recipes = RECIPES[model_name]

    def model_of(recipe):
        cfg = yaml.safe_load((root / 'config' / recipe).read_text())
        merge(DEFAULT_TRAIN, cfg['train'], 'train')
        data = merge(DEFAULT_DATA, cfg['data'], 'data')
        scene_params = set(inspect.signature(render_scene).parameters)
        for e in data['cache']:
            if isinstance(e, dict):
                assert set(e.get('scene_opts', {})) <= scene_params, e
        return merge(DEFAULT_CONFIG, cfg['model'], 'model')

    model = model_of(recipes[stage])
    if stage == len(recipes) - 1:
        shipped = torch.load(
            root / 'models' / model_name / f'{model_name}.pt',
            map_location='cpu',
            weights_only=False,
        )['config']
        assert model == checkpoint_config(shipped)
    else:
        nxt = model_of(recipes[stage + 1])

        def weights(c):  # valid_iters: an inference setting, not part of the weights
            return {k: v for k, v in c.items() if k not in ADDED_LATER + ('valid_iters',)}

        assert weights(model) == weights(nxt)
        for key in ADDED_LATER:
            assert model[key] in (0, nxt[key]), key
        assert {'upsampler.guide', 'local_refine.'} <= set(INIT_MAY_ADD)


def test_distillation_from_a_teacher_checkpoint(tmp_path):
    """Distil (train.teacher): a frozen teacher's disparity is a second target for a fast student.

    Loss finite with both terms logged, checkpoint written, the teacher's weights untouched.
    """
    from test_model import TINY_FAST

    cache, quiet = tmp_path / 'cache', (lambda m: None)
    train(_cfg(cache, 1), tmp_path / 'teacher', log=quiet)
    teacher = tmp_path / 'teacher' / 'final.pt'
    before = torch.load(teacher, map_location='cpu', weights_only=False)['state_dict']
    cfg = _cfg(cache, 2)
    cfg['model'] = dict(TINY_FAST, max_disp=32)
    cfg['train'].update(teacher=str(teacher), teacher_weight=0.5, batch=2, teacher_batch=1)
    msgs = []
    train(cfg, tmp_path / 'student', log=msgs.append)
    assert any(m.startswith('distilling from teacher') for m in msgs)
    lines = (tmp_path / 'student' / 'log.jsonl').read_text().splitlines()
    recs = [json.loads(line) for line in lines]
    assert [r['step'] for r in recs] == [1, 2]
    assert all(math.isfinite(r['loss']) and math.isfinite(r['loss_teacher']) for r in recs)
    assert all(r['loss_teacher'] > 0 for r in recs)
    ck = torch.load(tmp_path / 'student' / 'latest.pt', map_location='cpu', weights_only=False)
    assert ck['step'] == 2 and ck['config']['aggregation'] == '2d'
    assert ck['train_config']['teacher'] == str(teacher)
    after = torch.load(teacher, map_location='cpu', weights_only=False)['state_dict']
    assert all(torch.equal(after[k], v) for k, v in before.items())

    # max_err: only pixels where the teacher is within that many px of the ground truth; none
    # there -> 0
    from ffs_ros.training.train import teacher_loss

    gt = torch.full((1, 1, 4, 4), 10.0)
    out = {'final': gt + 1.0, 'init': gt + 1.0}
    assert float(teacher_loss(out, gt + 5.0, gt, 32, max_err=2.0)) == 0.0
    assert float(teacher_loss(out, gt + 5.0, gt, 32)) > 0.0


def test_teacher_cache_gives_every_crop_the_teachers_disparity(tmp_path):
    """train.teacher_cache: the teacher runs once per whole scene; crops carry its disparity.

    The cached values are the teacher's on the whole scene (float16), cut like the crop (vertical
    flips included); an interrupted build resumes; training then logs the teacher term on every
    crop without running the teacher.
    """
    from test_model import TINY_FAST

    from ffs_ros.model import load_model
    from ffs_ros.training.data import (
        CropDataset,
        build_teacher_cache,
        load_cache,
        teacher_cache_file,
    )

    cache, quiet = tmp_path / 'cache', (lambda m: None)
    train(_cfg(cache, 1), tmp_path / 'teacher', log=quiet)
    tpath = tmp_path / 'teacher' / 'final.pt'
    teacher = load_model(tpath)
    meta, arrs = load_cache(cache)
    # an interrupted build: scenes 0-1 recorded as done (marked 7.0 here), scene 2 still to do
    f = teacher_cache_file(cache, tpath, 1)
    part = np.lib.format.open_memmap(
        f, mode='w+', dtype=np.float16, shape=(meta['n'], meta['height'], meta['width'])
    )
    part[:2] = 7.0
    part.flush()
    del part
    (tmp_path / 'cache' / (f.name + '.done')).write_text('2')
    assert build_teacher_cache(cache, teacher, tpath, iters=1, batch=2, progress=quiet) == f
    assert not (tmp_path / 'cache' / (f.name + '.done')).exists()
    cached = np.load(f)
    assert (cached[:2] == 7.0).all()  # resumed: not recomputed
    with torch.no_grad():
        x = [
            torch.from_numpy(np.asarray(arrs[k][2:3], np.float32)).permute(0, 3, 1, 2)
            for k in ('left', 'right')
        ]
        ref = teacher(*x, iters=1)[:, 0].numpy()
    np.testing.assert_allclose(cached[2:3], ref, atol=0.05)
    f.unlink()  # a fresh build: every scene is the teacher's
    build_teacher_cache(cache, teacher, tpath, iters=1, batch=2, progress=quiet)
    cached = np.load(f)
    np.testing.assert_allclose(cached[2:3], ref, atol=0.05)
    ds = CropDataset(cache, (32, 64), 32, vflip=1.0, teacher=[f])
    rng = np.random.default_rng(0)
    item = ds.sample(1, rng)
    rng = np.random.default_rng(0)
    y0 = int(rng.integers(0, meta['height'] - 32 + 1))
    x0 = int(rng.integers(0, meta['width'] - 64 + 1))
    want = cached[1, y0: y0 + 32, x0: x0 + 64][::-1].astype(np.float32)
    np.testing.assert_array_equal(item['teacher'][0].numpy(), want)
    # training with the cache: the teacher term on every crop, logged
    cfg = _cfg(cache, 2)
    cfg['model'] = dict(TINY_FAST, max_disp=32)
    cfg['train'].update(teacher=str(tpath), teacher_iters=1, teacher_cache=True, batch=2)
    train(cfg, tmp_path / 'student', log=quiet)
    recs = [json.loads(x) for x in (tmp_path / 'student' / 'log.jsonl').read_text().splitlines()]
    assert all(math.isfinite(r['loss_teacher']) and r['loss_teacher'] > 0 for r in recs)
