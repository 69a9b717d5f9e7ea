"""Point clouds as binary PLY files.

What `ffs-ros demo` and `ffs-ros infer` write; MeshLab/CloudCompare read them.
"""

from __future__ import annotations

import numpy as np


def write_ply(path, xyz: np.ndarray, rgb: np.ndarray, comment: str = '') -> int:
    """Binary little-endian PLY of N points: float x y z, uchar red green blue. Returns N."""
    xyz = np.asarray(xyz, np.float32).reshape(-1, 3)
    rgb = np.asarray(rgb, np.uint8).reshape(-1, 3)
    if len(xyz) != len(rgb):
        raise ValueError(f'{len(xyz)} points but {len(rgb)} colours')
    rec = np.empty(
        len(xyz),
        dtype=[('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('r', 'u1'), ('g', 'u1'), ('b', 'u1')],
    )
    rec['x'], rec['y'], rec['z'] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rec['r'], rec['g'], rec['b'] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        'ply\nformat binary_little_endian 1.0\n'
        + (f'comment {comment}\n' if comment else '')
        + f'element vertex {len(rec)}\n'
        'property float x\nproperty float y\nproperty float z\n'
        'property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n'
    )
    with open(path, 'wb') as f:
        f.write(header.encode('ascii'))
        f.write(rec.tobytes())
    return len(rec)
