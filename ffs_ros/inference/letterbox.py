"""Resolution handling: fit camera images to a network size and map the disparity back.

``letterbox`` (default): one uniform scale s (never above 1 unless ``allow_upscale``) so the image
fits the network, pad right/bottom (edge-replicated), run, crop the valid region, resize the
disparity back to the camera resolution and multiply it by 1/s. ``stretch``: scale x and y
independently to the network size (for engines built for another aspect ratio); disparity is
divided by the horizontal scale. For graphs with symbolic spatial axes the network size is the
input size rounded up to a multiple of 32 (scale 1, padding only).

The plan is pure (:func:`plan_resize`); :func:`to_network` / :func:`from_network` apply it to
numpy arrays and
:func:`to_network_torch` / :func:`from_network_torch` to torch tensors on any device.
"""

from __future__ import annotations

from dataclasses import dataclass
import functools

import numpy as np

RESIZE_MODES = ('letterbox', 'stretch')


@dataclass(frozen=True)
class ResizePlan:
    """How an input of size `in_hw` maps onto a network input of size `net_hw`."""

    in_hw: tuple[int, int]
    net_hw: tuple[int, int]
    scaled_hw: tuple[
        int, int
    ]  # size of the resized image inside the network input (the valid region)
    scale_x: float  # scaled_w / in_w
    scale_y: float  # scaled_h / in_h
    mode: str

    @property
    def valid_window(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) of the valid region in network pixels (exclusive end)."""
        return 0, 0, self.scaled_hw[1], self.scaled_hw[0]

    @property
    def identity(self) -> bool:
        return self.scaled_hw == self.in_hw

    @property
    def padded(self) -> bool:
        return self.scaled_hw != self.net_hw


def round_up(x: int, multiple: int) -> int:
    return -(-int(x) // multiple) * multiple


def plan_resize(
    in_hw, net_hw=None, mode: str = 'letterbox', multiple: int = 32, allow_upscale: bool = False
) -> ResizePlan:
    """Plan for an image of size `in_hw` (H, W) on a network of size `net_hw`.

    `net_hw` None = dynamic, any multiple.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f'resize_mode must be one of {", ".join(RESIZE_MODES)}, got {mode!r}')
    h, w = int(in_hw[0]), int(in_hw[1])
    if h < 1 or w < 1:
        raise ValueError(f'image size must be positive, got {h}x{w}')
    if net_hw is None:
        net = (round_up(h, multiple), round_up(w, multiple))
        return ResizePlan((h, w), net, (h, w), 1.0, 1.0, mode)
    nh, nw = int(net_hw[0]), int(net_hw[1])
    if mode == 'stretch':
        return ResizePlan((h, w), (nh, nw), (nh, nw), nw / w, nh / h, mode)
    s = min(nh / h, nw / w)
    if not allow_upscale:
        s = min(s, 1.0)
    sh = min(nh, max(1, int(round(h * s))))
    sw = min(nw, max(1, int(round(w * s))))
    return ResizePlan((h, w), (nh, nw), (sh, sw), sw / w, sh / h, mode)


@functools.lru_cache(maxsize=64)
def _cached_plan(in_hw, net_hw, mode, allow_upscale) -> ResizePlan:
    return plan_resize(in_hw, net_hw, mode, allow_upscale=allow_upscale)


def plan_for_input(in_hw, net_hw, mode: str, allow_upscale: bool = False) -> ResizePlan:
    """Return plan_resize, memoised for the per-frame path.

    Plans are immutable; a camera keeps one size.
    """
    net = None if net_hw is None else (int(net_hw[0]), int(net_hw[1]))
    return _cached_plan((int(in_hw[0]), int(in_hw[1])), net, mode, bool(allow_upscale))


def to_network(image: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """HxWxC image -> net_h x net_w x C (resized into the top-left, edge-replicated padding)."""
    import cv2

    sh, sw = plan.scaled_hw
    out = image
    if not plan.identity:
        interp = (
            cv2.INTER_AREA if (sh < plan.in_hw[0] and sw < plan.in_hw[1]) else cv2.INTER_LINEAR
        )
        out = cv2.resize(image, (sw, sh), interpolation=interp)
    nh, nw = plan.net_hw
    if (sh, sw) != (nh, nw):
        out = cv2.copyMakeBorder(out, 0, nh - sh, 0, nw - sw, cv2.BORDER_REPLICATE)
    return out


def from_network(disp: np.ndarray, plan: ResizePlan, scale_values: bool = True) -> np.ndarray:
    """Map a net_h x net_w disparity to an in_h x in_w disparity in input pixels.

    Crop, resize, divide by scale_x (scale_values=False: a map that is not in pixels, e.g. a
    confidence, keeps its values).
    """
    import cv2

    sh, sw = plan.scaled_hw
    out = disp[:sh,:sw]
    if not plan.identity:
        out = cv2.resize(
            np.ascontiguousarray(out, dtype=np.float32),
            (plan.in_hw[1], plan.in_hw[0]),
            interpolation=cv2.INTER_LINEAR,
        )
        if scale_values:
            out *= np.float32(1.0 / plan.scale_x)
    return np.ascontiguousarray(out, dtype=np.float32)


def to_network_torch(image, plan: ResizePlan):
    """Map a [B,C,H,W] float tensor to [B,C,net_h,net_w].

    Bilinear resize, replicate padding right/bottom.
    """
    import torch.nn.functional as F

    sh, sw = plan.scaled_hw
    out = image
    if not plan.identity:
        down = sh < plan.in_hw[0] and sw < plan.in_hw[1]
        out = F.interpolate(
            out, size=(sh, sw), mode='bilinear', align_corners=False, antialias=down
        )
    nh, nw = plan.net_hw
    if (sh, sw) != (nh, nw):
        out = F.pad(out, (0, nw - sw, 0, nh - sh), mode='replicate')
    return out


def from_network_torch(disp, plan: ResizePlan, scale_values: bool = True):
    """[B,1,net_h,net_w] disparity -> [B,1,in_h,in_w] in input pixels (see from_network)."""
    import torch.nn.functional as F

    sh, sw = plan.scaled_hw
    out = disp[...,:sh,:sw]
    if not plan.identity:
        out = F.interpolate(out.float(), size=plan.in_hw, mode='bilinear', align_corners=False)
        if scale_values:
            out = out * (1.0 / plan.scale_x)
    return out


def invalidate(disp: np.ndarray, remove_invisible: bool = True) -> np.ndarray:
    """Set NaN where the disparity cannot be a match.

    That is: non-finite, <= 0, or (remove_invisible) x - d < 0.
    """
    bad = ~np.isfinite(disp) | (disp <= 0)
    if remove_invisible:
        xs = np.arange(disp.shape[-1], dtype=np.float32)
        bad |= (xs - disp) < 0
    disp[bad] = np.nan
    return disp
