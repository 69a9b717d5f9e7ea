"""Stereo matching backends behind one interface: `load_matcher(...)` -> StereoMatcher."""
from __future__ import annotations

from .base import MatcherInfo, StereoMatcher

BACKENDS = ('auto', 'sgbm', 'onnxruntime', 'torch', 'tensorrt')


def load_matcher(model=None, backend: str = 'auto', device=None, **options) -> StereoMatcher:
    """Return a StereoMatcher for `model` on `backend`.

    model=None means the shipped default model. backend 'sgbm' needs no model.
    Raises ValueError with a message naming what to change when the request cannot be met.
    """
    if backend not in BACKENDS:
        raise ValueError(f'unknown backend {backend!r}; choose one of {", ".join(BACKENDS)}')
    if backend == 'sgbm':
        from .sgbm import SGBMMatcher
        kwargs = {k: options[k] for k in ('max_disparity', 'block_size') if k in options}
        return SGBMMatcher(**kwargs)
    raise ValueError(f'backend {backend!r} is not available yet; use backend sgbm')


__all__ = ['BACKENDS', 'MatcherInfo', 'StereoMatcher', 'load_matcher']
