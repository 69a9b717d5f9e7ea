"""PyTorch: how our own checkpoint's two stages run (``ffs_ros.model.load_model``), on CUDA or CPU.

The model exposes ``.features(left, right) -> dict`` (upstream feature names), ``.post(**features,
gwc_volume=...)``
-> disp [B,1,H,W], and attributes ``max_disp``, ``cv_group``, ``normalize``; inputs are float32
RGB 0..255 at a
multiple of 32. The volume is built between the two calls by :class:`~.network.NetworkMatcher`
exactly as for the
two-stage ONNX contract, so this path and the export agree. On CUDA, fp16 autocast (default on)
and optional CUDA
graphs.
"""

from __future__ import annotations

import numpy as np

from ..contract import ModelSource, StagePlan
from ..contract.wiring import check_net_size
from .device import Device
from .network import Graphs


def load_own_model(checkpoint, device):
    """Load our checkpoint through the model package's API.

    Raises a clear error when that API is unavailable.
    """
    try:
        from ffs_ros.model import load_model
    except ImportError as exc:
        raise RuntimeError(
            f'cannot load {checkpoint}: ffs_ros.model.load_model is not available ({exc}); use '
            'the '
            f'ONNX export with backend onnxruntime'
        ) from exc
    model = load_model(checkpoint, device)
    return model.eval()


class _Stage:
    """One of the model's two stages as a device graph.

    It takes any tensor and has no buffers of its own.
    """

    def __init__(self, fn, fp16: bool, device: Device) -> None:
        self.fn, self.fp16, self.device = fn, fp16, device

    def prepare(self, net_hw, shared: dict) -> dict:
        return {}

    def run(self, feeds: dict, net_hw) -> dict:
        torch = self.device.torch
        if self.device.is_cuda:
            with torch.autocast('cuda', dtype=torch.float16, enabled=self.fp16):
                return self.fn(**feeds)
        return self.fn(**feeds)


def torch_graphs(
    source: ModelSource, device=None, fp16: bool | None = None, model=None, threads=None
) -> Graphs:
    """Our checkpoint's feature and post stages as graphs on `device`."""
    if source.checkpoint is None and model is None:
        raise ValueError(
            f'backend torch runs ffs_ros checkpoints (*.pt); {source.describe()} has none. Use '
            f'backend onnxruntime or tensorrt for ONNX exports'
        )
    dev = Device(device)
    if threads is not None:
        # process-wide torch setting; on a busy CPU fewer threads can be much faster (README)
        dev.torch.set_num_threads(int(threads))
    fp16 = dev.is_cuda if fp16 is None else bool(fp16)
    if fp16 and not dev.is_cuda:
        raise ValueError('fp16 autocast is for CUDA; on CPU leave fp16 off')
    with dev.scope():
        net = model if model is not None else load_own_model(source.checkpoint, dev.device)
        net.to(dev.device)
    max_disp = int(getattr(net, 'max_disp', source.config.max_disp or 192))
    cv_group = int(getattr(net, 'cv_group', source.config.cv_group))
    normalize = bool(getattr(net, 'normalize', source.config.normalize))
    gwc_dtype = np.dtype(np.float16 if fp16 else np.float32)

    def plan(net_hw) -> StagePlan:
        h, w = check_net_size(net_hw)
        d = max_disp // 4
        return StagePlan(
            (h, w),
            None,
            'disp',
            cv_group,
            d,
            normalize,
            gwc_dtype,
            (1, cv_group, d, h // 4, w // 4),
            confidence_output='confidence',
        )

    def post(**feeds):
        disp, conf = net.post(**feeds, with_confidence=True)
        return {'disp': disp.float(), 'confidence': conf.float()}

    graphs = {
        'feature': _Stage(lambda left, right: net.features(left, right), fp16, dev),
        'post': _Stage(post, fp16, dev),
    }
    details = {
        'normalize': normalize,
        'num_groups': cv_group,
        'max_disp': float(max_disp),
        'fp16': fp16,
        'checkpoint': str(source.checkpoint),
    }
    g = Graphs('torch', graphs, device=dev, details=details, plan=plan)
    g.model = net
    return g
