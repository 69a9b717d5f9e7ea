"""Structured pruning: remove whole inner channels, the least important first.

Importance of an output channel of the first convolution of an inner width (model/widths.py): the
L1 norm of its filter times the scale its batch norm gives it (|gamma| / sqrt(running var + eps);
1 without batch norm). A channel with a zero filter (or a zero gamma) contributes a constant, so
removing it changes nothing but that constant's share; the fine-tune that follows (`ffs-ros train
--init PRUNED.pt`, with distillation) recovers the rest. Pruning keeps the export contract: only
widths inside the network change.
"""

from __future__ import annotations

import torch

from ..model.widths import conv_and_norm, prunable_pairs, shrink, width_of


def channel_importance(model, first: str) -> torch.Tensor:
    """Return the importance of every output channel of the inner width at `first`."""
    conv, bn = conv_and_norm(model.get_submodule(first))
    score = conv.weight.detach().abs().flatten(1).sum(1)
    if bn is not None:
        score = score * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps))
    return score


def prune(model, keep: float, only=None) -> dict:
    """Prune every inner width (or those named in `only`) to round(keep x width) channels.

    Records the widths in model.config['pruned'] (so checkpoints rebuild the pruned network) and
    returns {first path: (width before, width after)}.
    """
    if not 0 < keep <= 1:
        raise ValueError(f'keep must be in (0, 1], got {keep}')
    pairs = prunable_pairs(model)
    names = list(pairs) if only is None else list(only)
    unknown = [n for n in names if n not in pairs]
    if unknown:
        raise ValueError(f'not inner widths of this model: {unknown}; prunable: {list(pairs)}')
    report = {}
    for first in names:
        before = width_of(model, first)
        k = max(1, int(round(keep * before)))
        idx = torch.sort(torch.topk(channel_importance(model, first), k).indices).values
        shrink(model, {first: k}, keep={first: idx})
        report[first] = (before, k)
    widths = dict(model.config.get('pruned', {}))
    widths.update({n: after for n, (_, after) in report.items()})
    model.config['pruned'] = widths
    return report
