"""`make gpu-check` rehearsed on this CPU.

Every section runs (or says why it is skipped) and its checks hold, so the script is right the
first time it meets a GPU.
"""

import json
from pathlib import Path
import subprocess
import sys

import torch

REPO = Path(__file__).resolve().parent.parent


def test_gpu_check_rehearsal_on_the_cpu(tmp_path):
    out = tmp_path / 'gpu-check.json'
    p = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'gpu_check.py'), '--allow-cpu', '--out', str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads(out.read_text())
    status = {k: v['status'] for k, v in res.items()}
    assert status['env'] == status['torch_model'] == status['gwc'] == status['pipeline'] == 'ok', (
        status
    )
    assert status['pcie'] == 'skipped' and res['pcie']['reason'] == 'needs CUDA'
    assert status['tensorrt'] == 'skipped'
    assert status['node_path'] in ('ok', 'skipped') and 'error' not in status.values()
    assert res['gwc']['goals'] == {'fp32 within 1e-4 of float64': True}
    checks = res['pipeline']['checks']
    assert checks['enqueued_on_own_stream_only'] and checks['every_engine_call_in_device_scope']
    assert (
        checks['plain_vs_torch_backend']['mean_abs_px'] < 1e-3
    )  # engines = the model's own modules
    assert res['pipeline']['plain']['shared_feature_buffers'] == 6
    assert res['pipeline']['plain']['volume_in_post_buffer'] is True
    assert res['torch_model']['fp32']['vs_onnxruntime_cpu']['mean_abs_px'] < 0.01
    assert 'PASS  pipeline: enqueued_on_own_stream_only' in p.stdout


def test_gpu_check_without_cuda_says_so_and_exits_0(tmp_path):
    if torch.cuda.is_available():
        return  # this machine has a GPU: the real check applies (make gpu-check)
    p = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'gpu_check.py'), '--out', str(tmp_path / 'x.json')],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and 'no CUDA GPU visible' in p.stdout
    assert not (tmp_path / 'x.json').exists()
