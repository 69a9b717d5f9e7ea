"""Training data: a pre-generated cache of synthetic scenes and a random-crop dataset over it.

Generating scenes up front is much faster on a small CPU than generating them while training (both
compete
for the same cores). The cache is a directory of memory-mapped .npy arrays:
    left.npy, right.npy  uint8  [N, H, W, 3]   RGB
    disp.npy             float32 [N, H, W]     left-referenced disparity (exact)
    occ.npy              bool   [N, H, W]      occluded in the right view
    meta.json            {n, height, width, max_disparity, seed, scene_opts}
Scene i is rendered from np.random.default_rng([seed, i]), so a cache is reproducible and any
index range
can be regenerated; held-out evaluation scenes use a different seed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..synth import render_scene

DEFAULT_TRAIN_SEED = 1  # training caches; evaluation uses other seeds
_FILES = ('left', 'right', 'disp', 'occ')


def scene(seed: int, index: int, height: int, width: int, max_disparity: float, **opts):
    """Scene `index` of the family `seed` (a StereoSample)."""
    return render_scene(np.random.default_rng([seed, index]), height, width, max_disparity, **opts)


def _fill(out_dir, start, stop, meta):
    arrs = {k: np.load(Path(out_dir) / f'{k}.npy', mmap_mode='r+') for k in _FILES}
    for i in range(start, stop):
        s = scene(
            meta['seed'],
            i,
            meta['height'],
            meta['width'],
            meta['max_disparity'],
            **meta.get('scene_opts', {}),
        )
        arrs['left'][i] = s.left
        arrs['right'][i] = s.right
        arrs['disp'][i] = s.disparity
        arrs['occ'][i] = s.occluded
    for a in arrs.values():
        a.flush()


def generate_cache(
    out_dir,
    n: int,
    height: int = 192,
    width: int = 320,
    max_disparity: float = 96.0,
    seed: int = 1,
    workers: int = 1,
    progress=print,
    scene_opts=None,
) -> Path:
    """Render `n` scenes into `out_dir` (see module doc). Returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        'n': int(n),
        'height': int(height),
        'width': int(width),
        'max_disparity': float(max_disparity),
        'seed': int(seed),
        'scene_opts': dict(scene_opts or {}),
    }
    shapes = {
        'left': ((n, height, width, 3), np.uint8),
        'right': ((n, height, width, 3), np.uint8),
        'disp': ((n, height, width), np.float32),
        'occ': ((n, height, width), np.bool_),
    }
    for k, (shape, dt) in shapes.items():
        np.lib.format.open_memmap(out / f'{k}.npy', mode='w+', dtype=dt, shape=shape).flush()
    chunk = 100
    ranges = [(i, min(n, i + chunk)) for i in range(0, n, chunk)]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as ex:
            futs = [ex.submit(_fill, str(out), a, b, meta) for a, b in ranges]
            for k, f in enumerate(futs):
                f.result()
                if progress:
                    progress(f'scenes {ranges[k][1]}/{n}')
    else:
        for a, b in ranges:
            _fill(out, a, b, meta)
            if progress:
                progress(f'scenes {b}/{n}')
    (out / 'meta.json').write_text(json.dumps(meta))
    return out


def load_cache(cache_dir):
    """Open a cache (memory-mapped). Raises FileNotFoundError naming how to create it."""
    d = Path(cache_dir)
    if not (d / 'meta.json').is_file():
        raise FileNotFoundError(
            f'{d} is not a finished scene cache (no meta.json); create it with '
            f'`ffs-ros train --config ...` (data.cache) or ffs_ros.training.data.generate_cache'
        )
    meta = json.loads((d / 'meta.json').read_text())
    arrs = {k: np.load(d / f'{k}.npy', mmap_mode='r') for k in _FILES}
    return meta, arrs


def teacher_cache_file(cache_dir, teacher_path, iters) -> Path:
    """Return where the teacher's disparities for the scenes of `cache_dir` are kept.

    The name carries the teacher file's name, size and modification time and its iterations, so
    another (or a retrained) teacher gets its own file.
    """
    t = Path(teacher_path)
    st = t.stat()
    tag = f'{t.stem}-{st.st_size}-{int(st.st_mtime)}-{"ckpt" if iters is None else iters}it'
    return Path(cache_dir) / f'teacher-{tag}.npy'


def build_teacher_cache(cache_dir, teacher, teacher_path, iters=None, batch=4, progress=print):
    """Run `teacher` once on every whole scene of a cache; return the float16 [N,H,W] file.

    Resumable: scenes done so far are recorded beside the file (`<file>.done`), so an interrupted
    run continues where it stopped. The teacher sees whole scenes (more context than a crop).
    """
    import torch

    meta, arrs = load_cache(cache_dir)
    path = teacher_cache_file(cache_dir, teacher_path, iters)
    done_file = Path(str(path) + '.done')
    n, h, w = meta['n'], meta['height'], meta['width']
    if path.is_file() and not done_file.exists():
        return path  # finished earlier
    start = int(done_file.read_text()) if done_file.exists() else 0
    if start == 0:
        np.lib.format.open_memmap(path, mode='w+', dtype=np.float16, shape=(n, h, w)).flush()
        done_file.write_text('0')
    out = np.load(path, mmap_mode='r+')
    device = next(teacher.parameters()).device
    for a in range(start, n, batch):
        b = min(n, a + batch)
        lr = [
            torch.from_numpy(np.asarray(arrs[k][a:b], np.float32)).permute(0, 3, 1, 2).to(device)
            for k in ('left', 'right')
        ]
        with torch.no_grad():
            d = teacher(*lr, iters=iters)
        out[a:b] = d[:, 0].cpu().numpy().astype(np.float16)
        if b % (25 * batch) == 0 or b == n:
            out.flush()
            done_file.write_text(str(b))
            if progress:
                progress(f'teacher on {Path(cache_dir).name}: {b}/{n} scenes')
    out.flush()
    done_file.unlink()
    return path


class CropDataset:
    """Random crops of cached scenes -> dict of float tensors.

    The tensors: left/right [3,h,w] 0..255, disp [1,h,w], valid [1,h,w], weight [1,h,w]. `valid`
    excludes occluded pixels and disparities >= max_disp (the pixels metrics are computed on);
    `weight` is the per-pixel loss weight: 1 on valid pixels, `occluded_weight` on occluded ones
    inside the disparity range (their disparity is exact in rendered scenes, so the network can
    learn to fill occlusions from the background, as real ground truth such as Middlebury's scores
    them), 0 else. `cache_dir` may be a list of caches (same scene size): indices run over their
    concatenation. `teacher`: one teacher-cache file per cache (build_teacher_cache): every crop
    then also has 'teacher' [1,h,w], the teacher's disparity cut the same way.
    """

    def __init__(
        self,
        cache_dir,
        crop=(160, 288),
        max_disp=128,
        vflip=0.5,
        occluded_weight=0.0,
        teacher=None,
    ):
        dirs = [cache_dir] if isinstance(cache_dir, (str, os.PathLike)) else list(cache_dir)
        self.parts = [load_cache(d) for d in dirs]
        self.teacher = None if teacher is None else [np.load(t, mmap_mode='r') for t in teacher]
        if self.teacher is not None and len(self.teacher) != len(self.parts):
            raise ValueError('one teacher cache per scene cache')
        self.meta = self.parts[0][0]
        self.offsets = np.cumsum([0] + [m['n'] for m, _ in self.parts])
        self.crop = tuple(crop)
        self.max_disp = max_disp
        self.vflip = vflip
        self.occluded_weight = float(occluded_weight)
        for m, _ in self.parts:
            if self.crop[0] > m['height'] or self.crop[1] > m['width']:
                raise ValueError(
                    f'crop {self.crop} larger than cached scenes {m["height"]}x{m["width"]}'
                )

    def __len__(self):
        return int(self.offsets[-1])

    def sample(self, index, rng: np.random.Generator):
        import torch

        part = int(np.searchsorted(self.offsets, index, side='right') - 1)
        meta, arrs = self.parts[part]
        index = index - int(self.offsets[part])
        ch, cw = self.crop
        h, w = meta['height'], meta['width']
        y0 = int(rng.integers(0, h - ch + 1))
        x0 = int(rng.integers(0, w - cw + 1))
        sl = (index, slice(y0, y0 + ch), slice(x0, x0 + cw))
        left = np.asarray(arrs['left'][sl], np.float32)
        right = np.asarray(arrs['right'][sl], np.float32)
        disp = np.array(
            arrs['disp'][sl], np.float32
        )  # a copy: the cache is a read-only memory map
        occ = np.asarray(arrs['occ'][sl])
        teacher = None if self.teacher is None else np.asarray(self.teacher[part][sl], np.float32)
        if rng.random() < self.vflip:
            left, right, disp, occ = left[::-1], right[::-1], disp[::-1], occ[::-1]
            teacher = None if teacher is None else teacher[::-1]
        in_range = (disp < self.max_disp) & (disp >= 0)
        valid = ~occ & in_range
        weight = valid.astype(np.float32)
        if self.occluded_weight > 0:
            weight[occ & in_range] = self.occluded_weight
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
        item = {
            'left': t(left).permute(2, 0, 1),
            'right': t(right).permute(2, 0, 1),
            'disp': t(disp)[None],
            'valid': t(valid)[None],
            'weight': t(weight)[None],
        }
        if teacher is not None:
            item['teacher'] = t(teacher)[None]
        return item

    def batch(self, indices, rng):
        import torch

        items = [self.sample(int(i), rng) for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def default_workers() -> int:
    return max(1, min(2, os.cpu_count() or 1))
