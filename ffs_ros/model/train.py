"""Training loop for FFSSmall on cached synthetic scenes.

AdamW with a one-cycle schedule, random crops, smooth-L1 on the full-resolution output plus the x4-upsampled
initial (soft-argmin) disparity and every refinement iteration (later iterations weighted more). Resumable:
`latest.pt` in the run directory holds model, optimizer, scheduler, step and RNG states; `log.jsonl` gets one
line per logged step (loss, EPE, bad-3 of the final output on valid pixels, lr, seconds per step).
SIGTERM/SIGINT save a checkpoint before exiting.
"""
from __future__ import annotations

import copy
import json
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import CropDataset, generate_cache, load_cache
from .net import FFSSmall, count_parameters

DEFAULT_TRAIN = {
    'steps': 3000, 'batch': 4, 'crop': [160, 288], 'lr': 1e-3, 'weight_decay': 1e-4, 'pct_start': 0.05,
    'grad_clip': 1.0, 'iter_gamma': 0.8, 'init_weight': 0.5, 'ckpt_every': 100, 'keep_every': 500,
    'log_every': 10, 'seed': 0, 'threads': 2,
}
DEFAULT_DATA = {'cache': 'data_cache/train_v1', 'n': 4000, 'height': 192, 'width': 320,
                'max_disparity': 96.0, 'seed': 1}


def merge(defaults, overrides, what):
    out = copy.deepcopy(defaults)
    for k, v in (overrides or {}).items():
        if k not in out:
            raise ValueError(f'unknown {what} key {k!r}; known: {", ".join(out)}')
        out[k] = v
    return out


def sequence_loss(out, gt, valid, iter_gamma=0.8, init_weight=0.5):
    """Smooth-L1 over valid pixels: final + init_weight*init + sum_i gamma^(n-1-i) * iter_i."""
    m = valid.float()
    denom = m.sum().clamp(min=1.0)

    def l(pred):
        return (F.smooth_l1_loss(pred, gt, reduction='none') * m).sum() / denom

    total = l(out['final']) + init_weight * l(out['init'])
    n = len(out['iters'])
    for i, p in enumerate(out['iters']):
        total = total + iter_gamma ** (n - 1 - i) * l(p)
    return total


def metrics(pred, gt, valid):
    err = (pred - gt).abs()[valid]
    if err.numel() == 0:
        return float('nan'), float('nan')
    return float(err.mean()), float((err > 3).float().mean())


def _rng_state(np_rng):
    return {'torch': torch.get_rng_state(), 'numpy': np_rng.bit_generator.state}


def save_checkpoint(path, model, opt, sched, step, np_rng, cfg, extra=None):
    tmp = Path(str(path) + '.tmp')
    torch.save({'config': model.config, 'state_dict': model.state_dict(), 'optimizer': opt.state_dict(),
                'scheduler': sched.state_dict(), 'step': step, 'rng': _rng_state(np_rng),
                'train_config': cfg, **(extra or {})}, tmp)
    tmp.replace(path)


def train(cfg: dict, out_dir, resume: bool = False, log=print, max_steps=None):
    """Run (or resume) training as configured. Returns the run directory."""
    tcfg = merge(DEFAULT_TRAIN, cfg.get('train'), 'train')
    dcfg = merge(DEFAULT_DATA, cfg.get('data'), 'data')
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(tcfg['threads']))
    cache = Path(dcfg['cache'])
    if not (cache / 'meta.json').is_file():
        log(f'generating {dcfg["n"]} scenes into {cache} ...')
        generate_cache(cache, dcfg['n'], dcfg['height'], dcfg['width'], dcfg['max_disparity'], dcfg['seed'],
                       workers=int(tcfg['threads']), progress=log)
    load_cache(cache)
    model = FFSSmall(cfg.get('model'))
    ds = CropDataset(cache, tcfg['crop'], model.max_disp)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg['lr'], weight_decay=tcfg['weight_decay'])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=tcfg['lr'], total_steps=int(tcfg['steps']),
                                                pct_start=tcfg['pct_start'], anneal_strategy='cos')
    np_rng = np.random.default_rng(tcfg['seed'])
    torch.manual_seed(tcfg['seed'])
    step = 0
    latest = out / 'latest.pt'
    if resume:
        if not latest.is_file():
            raise FileNotFoundError(f'--resume: no {latest}; start without --resume')
        ck = torch.load(latest, map_location='cpu', weights_only=False)
        model.load_state_dict(ck['state_dict'])
        opt.load_state_dict(ck['optimizer'])
        sched.load_state_dict(ck['scheduler'])
        if sched.total_steps != int(tcfg['steps']):  # schedule length changed in the config: re-plan phases
            fresh = torch.optim.lr_scheduler.OneCycleLR(
                torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=tcfg['lr']), max_lr=tcfg['lr'],
                total_steps=int(tcfg['steps']), pct_start=tcfg['pct_start'], anneal_strategy='cos')
            sched.total_steps = fresh.total_steps
            sched._schedule_phases = fresh._schedule_phases
            log(f'one-cycle schedule re-planned to {tcfg["steps"]} steps')
        step = int(ck['step'])
        torch.set_rng_state(ck['rng']['torch'])
        np_rng.bit_generator.state = ck['rng']['numpy']
        log(f'resumed from {latest} at step {step}')
    (out / 'config.json').write_text(json.dumps({'model': model.config, 'train': tcfg, 'data': dcfg}, indent=1))
    log(f'model parameters: {count_parameters(model)}; steps {step} -> {tcfg["steps"]}')
    stop = {'flag': False}

    def _stop(signum, frame):  # noqa: ARG001
        stop['flag'] = True
    old = {s: signal.signal(s, _stop) for s in (signal.SIGTERM, signal.SIGINT)}
    model.train()
    iters = int(model.config['train_iters'])
    t_last, steps_since = time.time(), 0
    end = int(tcfg['steps']) if max_steps is None else min(int(tcfg['steps']), step + int(max_steps))
    try:
        with open(out / 'log.jsonl', 'a') as logf:
            while step < end and not stop['flag']:
                b = ds.batch(np_rng.integers(0, len(ds), tcfg['batch']), np_rng)
                f = model.features(b['left'], b['right'])
                vol = model.gwc(f['features_left_04'], f['features_right_04'])
                o = model.post(**f, gwc_volume=vol, iters=iters, return_all=True)
                loss = sequence_loss(o, b['disp'], b['valid'], tcfg['iter_gamma'], tcfg['init_weight'])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg['grad_clip'])
                opt.step()
                sched.step()
                step += 1
                steps_since += 1
                if step % tcfg['log_every'] == 0 or step == end:
                    with torch.no_grad():
                        epe, bad3 = metrics(o['final'], b['disp'], b['valid'])
                        epe0, _ = metrics(o['init'], b['disp'], b['valid'])
                    now = time.time()
                    rec = {'step': step, 'loss': round(float(loss), 4), 'epe': round(epe, 3),
                           'bad3': round(bad3, 4), 'epe_init': round(epe0, 3),
                           'lr': float(sched.get_last_lr()[0]), 's_per_step': round((now - t_last) / steps_since, 3),
                           'time': now}
                    logf.write(json.dumps(rec) + '\n')
                    logf.flush()
                    log(json.dumps(rec))
                    t_last, steps_since = now, 0
                if step % tcfg['ckpt_every'] == 0:
                    save_checkpoint(latest, model, opt, sched, step, np_rng, tcfg)
                    if tcfg['keep_every'] and step % tcfg['keep_every'] == 0:
                        torch.save({'config': model.config, 'state_dict': model.state_dict(), 'step': step},
                                   out / f'model_{step:06d}.pt')
    finally:
        save_checkpoint(latest, model, opt, sched, step, np_rng, tcfg)
        for s, h in old.items():
            signal.signal(s, h)
    torch.save({'config': model.config, 'state_dict': model.state_dict(), 'step': step}, out / 'final.pt')
    log(f'stopped at step {step}; checkpoint {latest}')
    return out
