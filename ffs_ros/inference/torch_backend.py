"""PyTorch backend: our own checkpoint (``ffs_ros.model.load_model``) on CUDA or CPU.

The model exposes ``.features(left, right) -> dict`` (upstream feature names), ``.post(**features, gwc_volume=...)``
-> disp [B,1,H,W], and attributes ``max_disp``, ``cv_group``, ``normalize``; inputs are float32 RGB 0..255 at a
multiple of 32. The volume is built between the two calls with :func:`gwc_volume_tensor` (torch on CUDA, the BLAS
path on CPU), exactly as for the two-stage ONNX contract, so this path and the export agree. On CUDA, fp16 autocast
(default on) and optional CUDA graphs.
"""
from __future__ import annotations

from .contracts import GWC_SOURCES, ModelSource
from .device_pipeline import DevicePipelineMatcher
from .gwc import gwc_volume_tensor


def load_own_model(checkpoint, device):
    """Load our checkpoint through the model package's API, with a clear error when that is unavailable."""
    try:
        from ffs_ros.model import load_model
    except ImportError as exc:
        raise RuntimeError(f'cannot load {checkpoint}: ffs_ros.model.load_model is not available ({exc}); use the '
                           f'ONNX export with backend onnxruntime') from exc
    model = load_model(checkpoint, device)
    return model.eval()


class TorchMatcher(DevicePipelineMatcher):
    """Our own model in PyTorch, the whole pipeline on `device`."""

    def __init__(self, source: ModelSource, device=None, fp16: bool | None = None, model=None, threads=None,
                 **options) -> None:
        super().__init__(source, device=device, **options)
        if threads is not None:
            # process-wide torch setting; on a busy CPU fewer threads can be much faster (README)
            self.torch.set_num_threads(int(threads))
        if source.checkpoint is None and model is None:
            raise ValueError(f'backend torch runs ffs_ros checkpoints (*.pt); {source.describe()} has none. Use '
                             f'backend onnxruntime or tensorrt for ONNX exports')
        self.model = model if model is not None else load_own_model(source.checkpoint, self.device)
        self.model.to(self.device)
        self.fp16 = (self.device.type == 'cuda') if fp16 is None else bool(fp16)
        if self.fp16 and self.device.type != 'cuda':
            raise ValueError('fp16 autocast is for CUDA; on CPU leave fp16 off')
        self.max_disp = int(getattr(self.model, 'max_disp', source.config.max_disp or 192))
        self.cv_group = int(getattr(self.model, 'cv_group', source.config.cv_group))
        self.normalize = bool(getattr(self.model, 'normalize', source.config.normalize))
        self._backend = 'torch'

    def _describe(self) -> dict:
        return {'normalize': self.normalize, 'num_groups': self.cv_group, 'max_disp': self.max_disp,
                'fp16': self.fp16, 'checkpoint': str(self.source.checkpoint)}

    def _model_text(self) -> str:
        return f'torch checkpoint {self.source.checkpoint} (max_disp {self.max_disp}, G={self.cv_group})'

    def _stages(self, left, right, timings):
        torch = self.torch
        autocast = torch.autocast('cuda', dtype=torch.float16, enabled=self.fp16) if self.device.type == 'cuda' \
            else torch.autocast('cpu', enabled=False)
        with autocast:
            with self.stage(timings, 'feature'):
                feats = self.model.features(left, right)
            with self.stage(timings, 'gwc'):
                vol = gwc_volume_tensor(feats[GWC_SOURCES[0]], feats[GWC_SOURCES[1]], self.cv_group,
                                       self.max_disp // 4, self.normalize)
                if self.fp16:
                    vol = vol.half()
            with self.stage(timings, 'post'):
                disp = self.model.post(**feats, gwc_volume=vol)
        return disp.float()
