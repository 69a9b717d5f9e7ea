"""The group-wise correlation volume against a float64 reference of the contract formula."""

import numpy as np
import pytest
import torch

from ffs_ros.contract.gwc import EPS, gwc_volume_into, gwc_volume_numpy, gwc_volume_torch


def reference(left, right, groups, max_disp, normalize):
    """Return V[b,g,d,h,w] = sum_c L*R(w-d) (/ (|L||R| + eps)), 0 where w < d.

    In float64, written independently.
    """
    b, c, h, w = left.shape
    cg = c // groups
    out = np.zeros((b, groups, max_disp, h, w))
    L = left.astype(np.float64)
    R = right.astype(np.float64)
    for g in range(groups):
        lg, rg = L[:, g * cg: (g + 1) * cg], R[:, g * cg: (g + 1) * cg]
        for d in range(max_disp):
            for x in range(d, w):
                dot = (lg[..., x] * rg[..., x - d]).sum(1)
                if normalize:
                    dot = dot / (
                        np.linalg.norm(lg[..., x], axis=1) * np.linalg.norm(rg[..., x - d], axis=1)
                        + EPS
                    )
                out[:, g, d,:, x] = dot
    return out


@pytest.fixture(scope='module')
def feats():
    rng = np.random.default_rng(0)
    left = rng.normal(size=(1, 48, 5, 23)).astype(np.float32)
    right = rng.normal(size=(1, 48, 5, 23)).astype(np.float32)
    left[..., 2, 4] = 0  # a zero feature vector: the eps keeps the cosine finite (0)
    return left, right


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize('threads', [1, 2])
def test_numpy_volume_matches_float64_reference(feats, normalize, threads):
    left, right = feats
    ref = reference(left, right, 8, 12, normalize)
    vol = gwc_volume_numpy(left, right, 8, 12, normalize, threads=threads)
    assert vol.dtype == np.float32 and vol.shape == (1, 8, 12, 5, 23)
    assert np.abs(vol - ref).max() <= 1e-3
    assert np.all(vol[:,:, 5,:,:5] == 0)


@pytest.mark.parametrize('normalize', [True, False])
def test_torch_volume_matches_float64_reference(feats, normalize):
    left, right = feats
    ref = reference(left, right, 8, 12, normalize)
    vol = gwc_volume_torch(
        torch.from_numpy(left), torch.from_numpy(right), 8, 12, normalize
    ).numpy()
    assert np.abs(vol - ref).max() <= 1e-3


def test_fp16_output_buffer_is_the_rounded_volume(feats):
    left, right = feats
    ref = reference(left, right, 8, 12, True)
    out = np.empty((1, 8, 12, 5, 23), np.float16)
    vol = gwc_volume_numpy(left, right, 8, 12, True, out=out)
    assert vol is out
    # cosines are <= 1 in magnitude, so fp16 rounding stays within 2.5e-4 of the exact value
    assert np.abs(vol.astype(np.float64) - ref).max() <= 2.5e-4


def test_more_disparities_than_width_are_zero(feats):
    left, right = feats
    vol = gwc_volume_numpy(left[...,:6], right[...,:6], 8, 10, True)
    ref = reference(left[...,:6], right[...,:6], 8, 10, True)
    assert np.abs(vol - ref).max() <= 1e-3 and np.all(vol[:,:, 6:] == 0)


def test_bad_group_count_and_buffer_are_refused(feats):
    left, right = feats
    with pytest.raises(ValueError, match='cannot be split into 7 groups'):
        gwc_volume_numpy(left, right, 7, 4)
    with pytest.raises(ValueError, match='out has shape'):
        gwc_volume_numpy(left, right, 8, 4, out=np.empty((1, 8, 5, 5, 23), np.float32))


def test_tensor_dispatch_on_cpu_matches_reference(feats):
    from ffs_ros.contract.gwc import gwc_volume_tensor

    left, right = feats
    vol = gwc_volume_tensor(torch.from_numpy(left), torch.from_numpy(right), 8, 12, True)
    assert isinstance(vol, torch.Tensor) and vol.dtype == torch.float32
    assert np.abs(vol.numpy() - reference(left, right, 8, 12, True)).max() <= 1e-3


@pytest.mark.parametrize('normalize', [True, False])
@pytest.mark.parametrize(
    'max_elements', [1 << 26, 300]
)  # one chunk, and chunks that split image rows
def test_one_pass_device_volume_matches_float64_reference(feats, normalize, max_elements):
    """Defect 13: the device volume is one batched pass, exact to the reference.

    One pass: no loop over disparities.
    """
    left, right = feats
    ref = reference(left, right, 8, 12, normalize)
    vol = gwc_volume_into(
        torch.from_numpy(left),
        torch.from_numpy(right),
        8,
        12,
        normalize,
        max_elements=max_elements,
    )
    assert vol.dtype == torch.float32 and tuple(vol.shape) == (1, 8, 12, 5, 23)
    assert np.abs(vol.numpy() - ref).max() <= 1e-5


def test_one_pass_volume_is_written_in_the_buffer_dtype(feats):
    """Written directly into the post graph's fp16 input: no fp32 volume and second copy."""
    left, right = feats
    out = torch.full((1, 8, 12, 5, 23), float('nan'), dtype=torch.float16)
    vol = gwc_volume_into(
        torch.from_numpy(left).half(), torch.from_numpy(right).half(), 8, 12, True, out=out
    )
    assert vol is out
    ref = reference(
        left.astype(np.float16).astype(np.float32),
        right.astype(np.float16).astype(np.float32),
        8,
        12,
        True,
    )
    assert np.abs(out.double().numpy() - ref).max() <= 2.5e-4
    with pytest.raises(ValueError, match='out has shape'):
        gwc_volume_into(
            torch.from_numpy(left),
            torch.from_numpy(right),
            8,
            12,
            True,
            out=torch.empty(1, 8, 11, 5, 23),
        )
