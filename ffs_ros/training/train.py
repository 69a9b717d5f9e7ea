"""Training loop for FFSSmall on cached synthetic scenes.

AdamW with a one-cycle schedule, random crops, smooth-L1 on the full-resolution output plus the
x4-upsampled
initial (soft-argmin) disparity and every refinement iteration (later iterations weighted more);
optionally (train.teacher) plus a smooth-L1 to a frozen teacher model's disparity on the same crop
(distillation, e.g. of the fast tier from models/ffs_small/ffs_small.pt).
Resumable:
`latest.pt` in the run directory holds model, optimizer, scheduler, step and RNG states;
`log.jsonl` gets one
line per logged step (loss, EPE, bad-3 of the final output on valid pixels, lr, seconds per step).
SIGTERM/SIGINT save a checkpoint before exiting.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
import signal
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..model.net import FFSSmall, count_parameters
from .data import CropDataset, generate_cache, load_cache

DEFAULT_TRAIN = {
    'steps': 3000,
    'batch': 4,
    'crop': [160, 288],
    'lr': 1e-3,
    'weight_decay': 1e-4,
    'pct_start': 0.05,
    'grad_clip': 1.0,
    'iter_gamma': 0.8,
    'init_weight': 0.5,
    # loss weight of occluded pixels (exact disparity in our scenes); 0: ignore them
    'occluded_weight': 0.0,
    'ckpt_every': 100,
    'keep_every': 500,
    'log_every': 10,
    'seed': 0,
    'threads': 2,
    'device': 'cpu',  # 'cuda' on a GPU machine: model, batches and the volume live there
    # 'HH:MM' (UTC, today): one-cycle over wall-clock time instead of steps, stop there
    'deadline': None,
    # list of module names (e.g. [upsampler]) to train, the rest frozen in eval mode; None: all
    'trainable': None,
    # distillation: a checkpoint (e.g. models/ffs_small/ffs_small.pt) whose disparity on the same
    # crop (eval mode, no gradients) is a second, soft target beside the exact ground truth
    'teacher': None,
    'teacher_weight': 0.5,  # weight of the smooth-L1 to the teacher (final and init outputs)
    # score the teacher only where it is within this many px of the ground truth; None: on every
    # pixel inside the disparity range (occluded ones too, where the ground-truth weight may be 0)
    'teacher_max_err': None,
    'teacher_iters': None,  # the teacher's refinement iterations; None: its checkpoint's
    # distil on the first k crops of every batch only (None: all): the teacher's forward pass
    # costs about 3x the fast student's training step on the dev CPU
    'teacher_batch': None,
    # run the teacher once per whole scene before training and keep its disparities beside each
    # scene cache (resumable): every crop gets a teacher target, no teacher pass per step
    'teacher_cache': False,
}
# parameters a fine-tune may add to an --init checkpoint: modules whose fresh initialisation has a
# negligible
# effect (the upsampler's guide: ~0.01 px), so the initialised model computes what the checkpoint
# did
INIT_MAY_ADD = ('upsampler.guide', 'local_refine.')  # blocks that start with no effect
DEFAULT_DATA = {
    'cache': 'data_cache/train_v1',
    'n': 4000,
    'height': 192,
    'width': 320,
    'max_disparity': 96.0,
    'seed': 1,
    'scene_opts': {},
}


def merge(defaults, overrides, what):
    out = copy.deepcopy(defaults)
    for k, v in (overrides or {}).items():
        if k not in out:
            raise ValueError(f'unknown {what} key {k!r}; known: {", ".join(out)}')
        out[k] = v
    return out


def one_cycle_lr(p, max_lr, pct_start, div=25.0, final_div=1e4):
    """Return the one-cycle learning rate at progress p in [0, 1].

    Cosine warm-up to max_lr, cosine anneal to ~0.
    """
    p = min(max(p, 0.0), 1.0)
    lo, end = max_lr / div, max_lr / div / final_div
    if p < pct_start:
        t = p / pct_start
        return lo + (max_lr - lo) * (1 - math.cos(math.pi * t)) / 2
    t = (p - pct_start) / max(1 - pct_start, 1e-9)
    return end + (max_lr - end) * (1 + math.cos(math.pi * t)) / 2


def parse_deadline(text, now=None):
    """Parse 'HH:MM' (UTC) -> epoch seconds of the next such time.

    The next such time is today, or tomorrow if already past.
    """
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc) if now is None else now
    try:
        hh, mm = (int(v) for v in str(text).split(':'))
    except ValueError:
        raise ValueError(f'train.deadline {text!r}: expected HH:MM in UTC, e.g. "09:55"') from None
    t = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if t <= now:
        t += dt.timedelta(days=1)
    return t.timestamp()


def sequence_loss(out, gt, valid, iter_gamma=0.8, init_weight=0.5):
    """Return the smooth-L1 sequence loss over valid pixels.

    final + init_weight*init + sum_i gamma^(n-1-i) * iter_i. `valid` is a bool mask or a float
    per-pixel weight; the loss is the weighted mean.
    """
    m = valid.float()
    denom = m.sum().clamp(min=1.0)

    def smooth_l1(pred):
        return (F.smooth_l1_loss(pred, gt, reduction='none') * m).sum() / denom

    total = smooth_l1(out['final']) + init_weight * smooth_l1(out['init'])
    n = len(out['iters'])
    for i, p in enumerate(out['iters']):
        total = total + iter_gamma ** (n - 1 - i) * smooth_l1(p)
    return total


def teacher_loss(out, teacher_disp, gt, max_disp, max_err=None, init_weight=0.5):
    """Return the smooth-L1 of the final (and init_weight x the init) output to the teacher's.

    Scored on pixels whose ground truth and teacher disparity are inside [0, max_disp) and, with
    `max_err`, where the teacher is within max_err px of the ground truth.
    """
    m = (gt >= 0) & (gt < max_disp) & (teacher_disp >= 0) & (teacher_disp < max_disp)
    if max_err is not None:
        m = m & ((teacher_disp - gt).abs() <= float(max_err))
    m = m.float()
    denom = m.sum().clamp(min=1.0)

    def smooth_l1(pred):
        return (F.smooth_l1_loss(pred, teacher_disp, reduction='none') * m).sum() / denom

    return smooth_l1(out['final']) + init_weight * smooth_l1(out['init'])


def load_teacher(path, device, iters=None, log=print):
    """Load the distillation teacher (frozen, eval mode) from a checkpoint."""
    from ..model import load_model

    teacher = load_model(path, device)
    for p in teacher.parameters():
        p.requires_grad_(False)
    log(
        f'distilling from teacher {path} ({count_parameters(teacher)} parameters, '
        f'{teacher.valid_iters if iters is None else int(iters)} iterations)'
    )
    return teacher


def metrics(pred, gt, valid):
    err = (pred - gt).abs()[valid]
    if err.numel() == 0:
        return float('nan'), float('nan')
    return float(err.mean()), float((err > 3).float().mean())


def _rng_state(np_rng):
    return {'torch': torch.get_rng_state(), 'numpy': np_rng.bit_generator.state}


def save_checkpoint(path, model, opt, sched, step, np_rng, cfg, extra=None):
    tmp = Path(str(path) + '.tmp')
    torch.save(
        {
            'config': model.config,
            'state_dict': model.state_dict(),
            'optimizer': opt.state_dict(),
            'scheduler': sched.state_dict(),
            'step': step,
            'rng': _rng_state(np_rng),
            'train_config': cfg,
            **(extra or {}),
        },
        tmp,
    )
    tmp.replace(path)


def freeze_except(model, trainable):
    """Freeze every top-level module not named in `trainable` (None: train all) -> frozen names."""
    if trainable is None:
        return []
    names = [n for n, _ in model.named_children()]
    unknown = [t for t in trainable if t not in names]
    if unknown or not trainable:
        raise ValueError(
            f'train.trainable {trainable!r}: name top-level modules of the model: '
            f'{", ".join(names)}'
        )
    frozen = [n for n in names if n not in trainable]
    for n in frozen:
        for p in model.get_submodule(n).parameters():
            p.requires_grad_(False)
    return frozen


def train(cfg: dict, out_dir, resume: bool = False, log=print, max_steps=None, init=None):
    """Run (or resume) training as configured. Returns the run directory.

    init: a checkpoint whose weights start a new run (fine-tuning, e.g. from
    models/ffs_small/ffs_small.pt) with a fresh optimizer and schedule; its model config must match
    the configured one.
    """
    tcfg = merge(DEFAULT_TRAIN, cfg.get('train'), 'train')
    dcfg = merge(DEFAULT_DATA, cfg.get('data'), 'data')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(tcfg['threads']))
    # data.cache: a path, or a list of paths / {path, n, seed, scene_opts} entries (missing caches
    # are generated)
    entries = dcfg['cache'] if isinstance(dcfg['cache'], list) else [dcfg['cache']]
    caches = []
    for e in entries:
        spec = dict(dcfg, **e) if isinstance(e, dict) else dict(dcfg, path=e)
        path = Path(spec['path'])
        if not (path / 'meta.json').is_file():
            log(f'generating {spec["n"]} scenes into {path} ...')
            generate_cache(
                path,
                spec['n'],
                spec['height'],
                spec['width'],
                spec['max_disparity'],
                spec['seed'],
                workers=int(tcfg['threads']),
                progress=log,
                scene_opts=spec.get('scene_opts'),
            )
        load_cache(path)
        caches.append(str(path))
    model_cfg = dict(cfg.get('model') or {})
    ck = None
    if init is not None and not resume:
        ck = torch.load(init, map_location='cpu', weights_only=False)
        # a pruned checkpoint (ffs-ros prune) brings its inner widths with its weights
        if ck.get('config', {}).get('pruned') and not model_cfg.get('pruned'):
            model_cfg['pruned'] = ck['config']['pruned']
    if resume and (out / 'latest.pt').is_file() and not model_cfg.get('pruned'):
        prev = torch.load(out / 'latest.pt', map_location='cpu', weights_only=False)['config']
        if prev.get('pruned'):  # resuming the fine-tune of a pruned model
            model_cfg['pruned'] = prev['pruned']
    model = FFSSmall(model_cfg)
    if ck is not None:
        try:
            missing, unexpected = model.load_state_dict(ck['state_dict'], strict=False)
        except RuntimeError as e:
            missing, unexpected = [f'shape mismatch: {e}'], []
        bad = [k for k in missing if not k.startswith(INIT_MAY_ADD)] + list(unexpected)
        if bad:
            raise ValueError(
                f'--init {init}: its weights do not fit the configured model '
                f'({", ".join(bad[:5])}); '
                f'use the model section it was trained with'
            ) from None
        log(
            f'initialised from {init} (trained {ck.get("step", "?")} steps)'
            + (
                f'; new parameters with negligible initial effect: {", ".join(missing)}'
                if missing
                else ''
            )
        )
    device = torch.device(tcfg['device'])
    model.to(device)
    teacher = (
        load_teacher(tcfg['teacher'], device, tcfg['teacher_iters'], log)
        if tcfg['teacher']
        else None
    )
    teacher_files = None
    if teacher is not None and tcfg['teacher_cache']:
        from .data import build_teacher_cache

        teacher_files = [
            build_teacher_cache(c, teacher, tcfg['teacher'], tcfg['teacher_iters'], progress=log)
            for c in caches
        ]
        teacher = None  # its answers are in the caches now
    ds = CropDataset(
        caches,
        tcfg['crop'],
        model.max_disp,
        occluded_weight=tcfg['occluded_weight'],
        teacher=teacher_files,
    )
    frozen = freeze_except(model, tcfg['trainable'])
    if frozen:
        log(
            f'training only {", ".join(tcfg["trainable"])}; frozen (eval mode): '
            f'{", ".join(frozen)}'
        )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg['lr'], weight_decay=tcfg['weight_decay'])
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt,
        max_lr=tcfg['lr'],
        total_steps=int(tcfg['steps']),
        pct_start=tcfg['pct_start'],
        anneal_strategy='cos',
    )
    np_rng = np.random.default_rng(tcfg['seed'])
    torch.manual_seed(tcfg['seed'])
    step = 0
    time_start = time.time()
    latest = out / 'latest.pt'
    if resume:
        if not latest.is_file():
            raise FileNotFoundError(f'--resume: no {latest}; start without --resume')
        ck = torch.load(
            latest, map_location='cpu', weights_only=False
        )  # optimizer state follows the params
        model.load_state_dict(ck['state_dict'])
        opt.load_state_dict(ck['optimizer'])
        sched.load_state_dict(ck['scheduler'])
        if sched.total_steps != int(
            tcfg['steps']
        ):  # schedule length changed in the config: re-plan phases
            fresh = torch.optim.lr_scheduler.OneCycleLR(
                torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=tcfg['lr']),
                max_lr=tcfg['lr'],
                total_steps=int(tcfg['steps']),
                pct_start=tcfg['pct_start'],
                anneal_strategy='cos',
            )
            sched.total_steps = fresh.total_steps
            sched._schedule_phases = fresh._schedule_phases
            log(f'one-cycle schedule re-planned to {tcfg["steps"]} steps')
        step = int(ck['step'])
        if 'time_start' in ck:
            time_start = float(ck['time_start'])
        elif (
            out / 'log.jsonl'
        ).is_file():  # older checkpoint: recover the start from the first log line
            first = json.loads((out / 'log.jsonl').read_text().splitlines()[0])
            time_start = first['time'] - first['s_per_step'] * first['step']
        torch.set_rng_state(ck['rng']['torch'])
        np_rng.bit_generator.state = ck['rng']['numpy']
        log(f'resumed from {latest} at step {step}')
    (out / 'config.json').write_text(
        json.dumps({'model': model.config, 'train': tcfg, 'data': dcfg}, indent=1)
    )
    log(f'model parameters: {count_parameters(model)}; steps {step} -> {tcfg["steps"]}')
    stop = {'flag': False}

    def _stop(signum, frame):  # noqa: ARG001
        stop['flag'] = True

    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    model.train()
    for name in frozen:
        model.get_submodule(name).eval()  # frozen BatchNorm statistics stay as trained
    iters = int(model.config['train_iters'])
    t_last, steps_since = time.time(), 0
    end = (
        int(tcfg['steps']) if max_steps is None else min(int(tcfg['steps']), step + int(max_steps))
    )
    deadline = parse_deadline(tcfg['deadline']) if tcfg['deadline'] else None
    if deadline:
        end = int(1e9) if max_steps is None else step + int(max_steps)
        log(
            f'time-based one-cycle from {time.strftime("%H:%M:%S", time.gmtime(time_start))} to '
            f'{time.strftime("%H:%M:%S", time.gmtime(deadline))} UTC'
        )
    extra = {'time_start': time_start}
    try:
        with open(out / 'log.jsonl', 'a') as logf:
            while step < end and not stop['flag']:
                if deadline:
                    prog = (time.time() - time_start) / max(deadline - time_start, 1.0)
                    if prog >= 1.0:
                        break
                    for g in opt.param_groups:
                        g['lr'] = one_cycle_lr(prog, tcfg['lr'], tcfg['pct_start'])
                b = ds.batch(np_rng.integers(0, len(ds), tcfg['batch']), np_rng)
                b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
                f = model.features(b['left'], b['right'])
                vol = model.gwc(f['features_left_04'], f['features_right_04'])
                o = model.post(**f, gwc_volume=vol, iters=iters, return_all=True)
                loss = sequence_loss(
                    o, b['disp'], b['weight'], tcfg['iter_gamma'], tcfg['init_weight']
                )
                if teacher is not None or 'teacher' in b:
                    k = b['left'].shape[0] if 'teacher' in b else tcfg['teacher_batch']
                    k = k or b['left'].shape[0]
                    if 'teacher' in b:
                        t_disp = b['teacher']
                    else:
                        with torch.no_grad():
                            t_disp = teacher(
                                b['left'][:k], b['right'][:k], iters=tcfg['teacher_iters']
                            )
                    loss_t = teacher_loss(
                        {'final': o['final'][:k], 'init': o['init'][:k]},
                        t_disp,
                        b['disp'][:k],
                        model.max_disp,
                        tcfg['teacher_max_err'],
                        tcfg['init_weight'],
                    )
                    loss = loss + tcfg['teacher_weight'] * loss_t
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, tcfg['grad_clip'])
                opt.step()
                if not deadline:
                    sched.step()
                step += 1
                steps_since += 1
                if step % tcfg['log_every'] == 0 or step == end:
                    with torch.no_grad():
                        epe, bad3 = metrics(o['final'], b['disp'], b['valid'])
                        epe0, _ = metrics(o['init'], b['disp'], b['valid'])
                    now = time.time()
                    rec = {
                        'step': step,
                        'loss': round(loss.item(), 4),
                        'epe': round(epe, 3),
                        'bad3': round(bad3, 4),
                        'epe_init': round(epe0, 3),
                        **(
                            {'loss_teacher': round(loss_t.item(), 4)}
                            if teacher is not None or 'teacher' in b
                            else {}
                        ),
                        'lr': float(opt.param_groups[0]['lr']),
                        's_per_step': round((now - t_last) / steps_since, 3),
                        'time': now,
                    }
                    logf.write(json.dumps(rec) + '\n')
                    logf.flush()
                    log(json.dumps(rec))
                    t_last, steps_since = now, 0
                if step % tcfg['ckpt_every'] == 0:
                    save_checkpoint(latest, model, opt, sched, step, np_rng, tcfg, extra)
                    if tcfg['keep_every'] and step % tcfg['keep_every'] == 0:
                        torch.save(
                            {
                                'config': model.config,
                                'state_dict': model.state_dict(),
                                'step': step,
                            },
                            out / f'model_{step:06d}.pt',
                        )
    finally:
        save_checkpoint(latest, model, opt, sched, step, np_rng, tcfg, extra)
        for s, h in old.items():
            signal.signal(s, h)
    torch.save(
        {'config': model.config, 'state_dict': model.state_dict(), 'step': step}, out / 'final.pt'
    )
    log(f'stopped at step {step}; checkpoint {latest}')
    return out
