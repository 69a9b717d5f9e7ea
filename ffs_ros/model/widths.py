"""Inner channel widths that structured pruning may shrink, and shrinking them.

An *inner* width is the output of one convolution that feeds exactly one other convolution and
nothing else (no residual sum, no concatenation, no contract tensor), so its channels can be
removed from the first convolution's outputs and the second's inputs without touching anything
else: the inside of a residual block, a decoder stage between its join and its 3x3 conv, the
coarsest 2D-aggregation stage, the upsampler heads.

A pruned model records its widths in the model config (``pruned``: {first conv path: width});
the network is built as usual and then shrunk to them (:func:`shrink`), so a pruned checkpoint
loads like any other.
"""

from __future__ import annotations

import torch
from torch import nn


def conv_and_norm(m):
    """Return (conv, batch norm or None) of a conv2d() block or a bare convolution."""
    if isinstance(m, nn.Conv2d):
        return m, None
    conv = m[0]
    bn = m[1] if len(m) > 1 and isinstance(m[1], nn.BatchNorm2d) else None
    return conv, bn


def prunable_pairs(model) -> dict:
    """Return {first path: second path} of every inner width of `model` (see module doc)."""
    from .aggregate2d import Aggregation2d
    from .backbone import Decoder
    from .layers import ResBlock2d
    from .upsample import ConvexUpsampler
    from .upsample4 import Convex4Upsampler

    pairs = {}
    for name, m in model.named_modules():
        p = f'{name}.' if name else ''
        if isinstance(m, ResBlock2d):
            pairs[f'{p}c1'] = f'{p}c2'
        elif isinstance(m, Decoder):
            for stage in ('p16', 'p8', 'p4'):
                pairs[f'{p}{stage}.0'] = f'{p}{stage}.1'
        elif isinstance(m, Aggregation2d):
            pairs[f'{p}body16.0'] = f'{p}body16.1'
        elif isinstance(m, Convex4Upsampler):
            pairs[f'{p}head.1'] = f'{p}head.3'
        elif isinstance(m, ConvexUpsampler):
            pairs[f'{p}head.0'] = f'{p}head.2'
    return pairs


def width_of(model, first: str) -> int:
    return conv_and_norm(model.get_submodule(first))[0].out_channels


def _replace(model, path, new):
    parent, _, leaf = path.rpartition('.')
    owner = model.get_submodule(parent) if parent else model
    if isinstance(owner, nn.Sequential):
        owner[int(leaf)] = new
    else:
        setattr(owner, leaf, new)


def _sliced_conv(conv, out_idx=None, in_idx=None):
    w = conv.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(
        w.shape[1],
        w.shape[0],
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        bias=conv.bias is not None,
    )
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            new.bias.copy_(conv.bias.detach() if out_idx is None else conv.bias.detach()[out_idx])
    return new.to(conv.weight.device).train(conv.training)


def _sliced_bn(bn, idx):
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum).train(bn.training)
    with torch.no_grad():
        for k in ('weight', 'bias', 'running_mean', 'running_var'):
            getattr(new, k).copy_(getattr(bn, k).detach()[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.to(bn.weight.device)


def shrink(model, widths: dict, keep: dict | None = None) -> None:
    """Shrink inner widths in place: {first conv path: new width}.

    keep: {first path: channel indices to keep} (pruning); default the first `width` channels
    (building a pruned model before its weights are loaded).
    """
    pairs = prunable_pairs(model)
    for first, width in widths.items():
        if first not in pairs:
            raise ValueError(
                f'pruned width {first!r} is not an inner width of this model; '
                f'prunable: {", ".join(pairs)}'
            )
        idx = (keep or {}).get(first)
        idx = torch.arange(int(width)) if idx is None else torch.as_tensor(idx).cpu()
        if not 0 < len(idx) <= width_of(model, first):
            raise ValueError(f'pruned width of {first}: {len(idx)} channels, cannot be')
        block = model.get_submodule(first)
        conv, bn = conv_and_norm(block)
        new_conv = _sliced_conv(conv, out_idx=idx)
        if isinstance(block, nn.Conv2d):
            _replace(model, first, new_conv)
        else:
            block[0] = new_conv
            if bn is not None:
                block[1] = _sliced_bn(bn, idx)
        second = model.get_submodule(pairs[first])
        conv2, _ = conv_and_norm(second)
        new2 = _sliced_conv(conv2, in_idx=idx)
        if isinstance(second, nn.Conv2d):
            _replace(model, pairs[first], new2)
        else:
            second[0] = new2
