#!/usr/bin/env python3
"""`make gpu-check`: every GPU claim of ffs_ros checked in one command.

Runs on any machine with CUDA and PyTorch, in a few minutes, and needs no ROS and no package index
(what needs rclpy or the ROS messages runs where they import and is reported as skipped otherwise).
Writes one JSON (``--out``, default out/gpu-check.json) and prints a table. Sections:

* ``env``          -- GPU, torch / CUDA / ONNX Runtime / TensorRT versions;
* ``torch_model``  -- the shipped model through the torch backend at 640x480: fp32, fp16, fp16 +
  CUDA graph (p50/p95 ms per pair, stage times from CUDA events, disparity difference to ONNX
  Runtime on the CPU);
* ``gwc``          -- the one-pass device correlation volume against a float64 reference, and its
  time;
* ``pipeline``     -- the whole device pipeline of the TensorRT backend with its engines simulated
  by the model's torch modules (test/trt_standin.py): own non-default stream, device selection,
  buffer sharing, CUDA-graph capture, same result with and without the graph;
* ``pcie``         -- host<->device copies of one frame (torch profiler): only the image pair up,
  the disparity down;
* ``node_path``    -- the node's processing path (StereoPipeline) on the GPU and its host overhead
  (needs the ROS message packages);
* ``tensorrt``     -- real TensorRT engine builds and runs, when ``tensorrt`` is importable.

Goals reported (H100-class GPU): shipped model at 640x480 <= 10 ms p50 with fp16 + CUDA graph;
everything outside the network <= 10 % of the network's time; across PCIe only the image pair up
and the outputs down. Without CUDA it says so and exits 0; ``--allow-cpu`` runs the same checks on
the CPU at a small size (that is how the script itself is tested without a GPU).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import platform
import sys
import tempfile
import time
import traceback

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / 'test'):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

GOAL_P50_MS = 10.0
GOAL_OUTSIDE_SHARE = 0.10


def stats(values) -> dict:
    v = np.asarray(values, np.float64)
    return {
        'p50': round(float(np.percentile(v, 50)), 3),
        'p95': round(float(np.percentile(v, 95)), 3),
        'n': int(v.size),
    }


def run_timed(matcher, left, right, iters: int, warmup: int) -> tuple:
    """Return wall ms per match and per-stage p50 (events).

    Wall time covers upload + network + download (the host waits for the result).
    """
    for _ in range(warmup):
        out = matcher.match(left, right)
    walls, stages = [], {}
    for _ in range(iters):
        t0 = time.perf_counter()
        out = matcher.match(left, right)
        walls.append((time.perf_counter() - t0) * 1e3)
        for k, v in matcher.last_timings.items():
            stages.setdefault(k, []).append(v)
    return out, stats(walls), {k: round(float(np.median(v)), 3) for k, v in stages.items()}


def disparity_diff(a: np.ndarray, b: np.ndarray) -> dict:
    both = np.isfinite(a) & np.isfinite(b)
    if not both.any():
        return {'valid_both': 0.0}
    d = np.abs(a[both] - b[both])
    return {
        'max_abs_px': round(float(d.max()), 4),
        'mean_abs_px': round(float(d.mean()), 4),
        'share_over_1px': round(float((d > 1).mean()), 5),
        'valid_both': round(float(both.mean()), 4),
    }


class Check:
    """Collects sections.

    A section that raises is recorded with its traceback and the run goes on.
    """

    def __init__(self) -> None:
        self.results: dict = {}

    def section(self, name: str, fn, *args):
        t0 = time.perf_counter()
        try:
            res = fn(*args)
        except Skip as s:
            res = {'status': 'skipped', 'reason': str(s)}
        except Exception as exc:  # noqa: BLE001 - report and continue
            res = {
                'status': 'error',
                'error': f'{type(exc).__name__}: {exc}',
                'traceback': traceback.format_exc(),
            }
        res.setdefault('status', 'ok')
        res['seconds'] = round(time.perf_counter() - t0, 2)
        self.results[name] = res
        print(f'[{name}] {res["status"]} ({res["seconds"]} s)', flush=True)
        return res


class Skip(Exception):
    pass


# -------------------------------------------------------------------------------------------------


def env_section(device) -> dict:
    import torch

    out = {
        'python': platform.python_version(),
        'torch': torch.__version__,
        'cuda': torch.version.cuda,
        'device': str(device),
    }
    if device.type == 'cuda':
        idx = device.index or 0
        out.update(
            gpu=torch.cuda.get_device_name(idx),
            capability=list(torch.cuda.get_device_capability(idx)),
            cudnn=torch.backends.cudnn.version(),
            memory_gib=round(torch.cuda.get_device_properties(idx).total_memory / 2**30, 1),
        )
    else:
        out['gpu'] = 'none (CPU run)'
    for mod in ('onnxruntime', 'tensorrt', 'cv2'):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001
            out[mod] = None
    return out


def scene(h: int, w: int):
    from ffs_ros.synth import render_scene

    return render_scene(np.random.default_rng(7), h, w, max_disparity=min(96.0, w / 6))


def torch_model_section(model_dir, device, size, iters, warmup, reference) -> dict:
    from ffs_ros.inference import load_matcher

    h, w = size
    s = scene(h, w)
    variants = [('fp32', {'fp16': False})]
    if device.type == 'cuda':
        variants += [
            ('fp16', {'fp16': True}),
            ('fp16+cuda_graph', {'fp16': True, 'cuda_graph': True}),
        ]
    out = {'size': f'{w}x{h}'}
    for name, opts in variants:
        m = load_matcher(model_dir, 'torch', device=str(device), **opts)
        disp, wall, stages = run_timed(m, s.left, s.right, iters, warmup)
        row = {
            'wall_ms': wall,
            'stages_ms': stages,
            'vs_onnxruntime_cpu': disparity_diff(disp, reference(s)),
        }
        if opts.get('cuda_graph'):
            row['graph_captured'] = m._captured.get(m.last_plan.net_hw) is not None
        net = sum(stages.get(k, 0.0) for k in ('feature', 'gwc', 'post', 'network'))
        outside = stages.get('preprocess', 0.0) + stages.get('postprocess', 0.0)
        row['outside_network_share'] = round(outside / net, 4) if net else None
        row['host_overhead_ms'] = round(wall['p50'] - sum(stages.values()), 3)
        out[name] = row
        m.close()
    best = out.get('fp16+cuda_graph', out['fp32'])
    split = out.get('fp16', out['fp32'])
    out['goals'] = {
        'p50_ms<=10 (fp16+cuda_graph, H100 class)': best['wall_ms']['p50'] <= GOAL_P50_MS,
        'outside_network<=10%': (split['outside_network_share'] or 1.0) <= GOAL_OUTSIDE_SHARE,
    }
    return out


def gwc_section(device) -> dict:
    import torch

    from ffs_ros.contract.gwc import EPS, gwc_volume_into, gwc_volume_torch

    g, d = 8, 32
    rng = torch.Generator().manual_seed(0)
    left = torch.randn(1, 96, 30, 41, generator=rng).to(device)
    right = torch.randn(1, 96, 30, 41, generator=rng).to(device)

    def reference(normalize):
        lf, rf = left.double().view(1, g, 12, 30, 41), right.double().view(1, g, 12, 30, 41)
        vol = torch.zeros(1, g, d, 30, 41, dtype=torch.float64, device=device)
        for k in range(d):
            dot = (lf[..., k:] * rf[...,: 41 - k]).sum(2)
            if normalize:
                dot = dot / (lf[..., k:].norm(dim=2) * rf[...,: 41 - k].norm(dim=2) + EPS)
            vol[:,:, k,:, k:] = dot
        return vol

    out = {}
    for normalize in (True, False):
        ref = reference(normalize)
        v32 = gwc_volume_into(left, right, g, d, normalize)
        v16 = gwc_volume_into(
            left,
            right,
            g,
            d,
            normalize,
            out=torch.empty(1, g, d, 30, 41, dtype=torch.float16, device=device),
        )
        out[f'normalize={normalize}'] = {
            'fp32_max_abs': float((v32.double() - ref).abs().max()),
            'fp16_max_abs': float((v16.double() - ref).abs().max()),
        }
    # time at the shipped model's 640x480 shape: [1, 96?, 120, 160] -> C from a real feature map
    # is not needed
    big_l = torch.randn(1, 96, 120, 160, device=device)
    big_r = torch.randn(1, 96, 120, 160, device=device)
    buf = torch.empty(1, g, d, 120, 160, dtype=torch.float16, device=device)

    def time_it(fn, n=20):
        for _ in range(3):
            fn()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)
        t = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            if device.type == 'cuda':
                torch.cuda.synchronize(device)
            t.append((time.perf_counter() - t0) * 1e3)
        return stats(t)

    out['one_pass_ms_640x480'] = time_it(
        lambda: gwc_volume_into(big_l, big_r, g, d, True, out=buf)
    )
    out['old_loop_plus_copy_ms_640x480'] = time_it(
        lambda: buf.copy_(gwc_volume_torch(big_l, big_r, g, d, True))
    )
    worst = max(max(v['fp32_max_abs'] for k, v in out.items() if k.startswith('normalize')), 0.0)
    out['goals'] = {'fp32 within 1e-4 of float64': worst <= 1e-4}
    return out


def _view_factory(device):
    """Return a function: raw device address -> torch tensor view.

    CUDA: __cuda_array_interface__; CPU: the stand-in's reader.
    """
    import torch
    from trt_standin import _read

    typestr = {np.dtype(np.float32): '<f4', np.dtype(np.float16): '<f2'}

    class _CAI:
        def __init__(self, ptr, shape, dtype):
            self.__cuda_array_interface__ = {
                'shape': tuple(int(s) for s in shape),
                'typestr': typestr[dtype],
                'data': (int(ptr), False),
                'version': 2,
                'strides': None,
            }

    def view(ptr, shape, dtype):
        dtype = np.dtype(dtype)
        if device.type == 'cuda':
            return torch.as_tensor(_CAI(ptr, shape, dtype), device=device)
        return torch.from_numpy(_read(ptr, tuple(shape), dtype))

    return view


def torch_engine_executor(model, device, seen: list):
    """Return the stand-in engines' computation.

    The model's own stages, on the stream and device TensorRT was given.
    """
    import torch

    view = _view_factory(device)

    def execute(ctx, stream_handle) -> bool:
        if device.type == 'cuda':
            seen.append(
                {
                    'stream_ok': torch.cuda.current_stream().cuda_stream == stream_handle != 0,
                    'device_ok': torch.cuda.current_device() == (device.index or 0),
                }
            )
        g = ctx.engine.graph
        t = {
            s.name: view(ctx.addr[s.name], ctx.shapes.get(s.name, s.shape), s.dtype)
            for s in g.inputs
        }
        outs = {
            s.name: view(ctx.addr[s.name], ctx.get_output_shape(s.name), s.dtype)
            for s in g.outputs
        }
        with torch.inference_mode():
            if 'gwc_volume' in t:
                outs['disp'].copy_(model.post(**t).float())
            else:
                for name, v in model.features(t['left'], t['right']).items():
                    outs[name].copy_(v)
        return True

    return execute


def pipeline_section(model_dir, device, size, iters, warmup) -> dict:
    import torch
    from trt_standin import FakeStream, make_trt

    from ffs_ros.contract import detect_model
    from ffs_ros.inference import load_matcher
    from ffs_ros.inference import tensorrt_build as tb
    from ffs_ros.inference import tensorrt_run as tr
    from ffs_ros.inference.network import NetworkMatcher

    h, w = size
    s = scene(h, w)
    src = detect_model(model_dir)
    own = load_matcher(model_dir, 'torch', device=str(device), fp16=False)
    model = own.graphs.model
    seen: list = []
    trt = make_trt('10.3.0', executor=torch_engine_executor(model, device, seen))
    cpu = device.type != 'cuda'
    if cpu:  # the CPU rehearsal: a stand-in stream handle, a made-up GPU identity
        tr._require_cuda = lambda dev: None
        tb.gpu_identity = lambda device=None: ('CPU rehearsal', (0, 0))
    out = {'size': f'{w}x{h}'}
    with tempfile.TemporaryDirectory() as cache:
        results = {}
        for graph in (False, True) if not cpu else (False,):
            graphs = tr.tensorrt_graphs(
                src,
                device=str(device),
                trt=trt,
                precision='fp32',
                engine_cache_dir=cache,
                stream=FakeStream() if cpu else None,
            )
            m = NetworkMatcher(src, graphs, cuda_graph=graph)
            disp, wall, stages = run_timed(m, s.left, s.right, iters, warmup)
            key = 'cuda_graph' if graph else 'plain'
            net_hw = m.last_plan.net_hw
            feature, post = graphs.graphs['feature'], graphs.graphs['post']
            f_bufs, p_bufs = feature._sized[net_hw][1], post._sized[net_hw][1]
            shared = [n for n in p_bufs if n in f_bufs and p_bufs[n] is f_bufs[n]]
            results[key] = disp
            out[key] = {
                'wall_ms': wall,
                'stages_ms': stages,
                'shared_feature_buffers': len(shared),
                'volume_in_post_buffer': m._sized[net_hw].volume is p_bufs['gwc_volume'],
                'volume_dtype': str(p_bufs['gwc_volume'].dtype),
            }
            if graph:
                out[key]['graph_captured'] = m._captured.get(net_hw) is not None
        streams = {e[1] for e in trt.rec['executions']}
        scopes_ok = all(d is not None and str(d) == str(device) for _, d in trt.rec['scopes'])
        ref = own.match(s.left, s.right)
        out['checks'] = {
            'enqueued_on_own_stream_only': bool(streams)
            and 0 not in streams
            and len(streams) == (1 if cpu else 2),
            'every_engine_call_in_device_scope': scopes_ok,
            'executor_saw_current_stream_and_device': all(
                x['stream_ok'] and x['device_ok'] for x in seen
            )
            if seen
            else None,
            'plain_vs_torch_backend': disparity_diff(results['plain'], ref),
        }
        if 'cuda_graph' in results:
            out['checks']['graph_vs_plain'] = disparity_diff(
                results['cuda_graph'], results['plain']
            )
    own.close()
    torch.cuda.empty_cache() if device.type == 'cuda' else None
    return out


def pcie_section(model_dir, device, size) -> dict:
    if device.type != 'cuda':
        raise Skip('needs CUDA')
    import torch
    from torch.profiler import ProfilerActivity, profile

    from ffs_ros.inference import load_matcher

    h, w = size
    s = scene(h, w)
    m = load_matcher(model_dir, 'torch', device=str(device), fp16=True)
    for _ in range(3):
        m.match(s.left, s.right)
    torch.cuda.synchronize(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        m.match(s.left, s.right)
    with tempfile.NamedTemporaryFile(suffix='.json') as f:
        prof.export_chrome_trace(f.name)
        trace = json.loads(Path(f.name).read_text())
    copies = {'HtoD': [], 'DtoH': [], 'DtoD': []}
    for ev in trace.get('traceEvents', []):
        name = str(ev.get('name', ''))
        if ev.get('cat') == 'gpu_memcpy' or name.startswith('Memcpy'):
            kind = next((k for k in copies if k in name), None)
            if kind:
                copies[kind].append(int((ev.get('args') or {}).get('bytes', -1)))
    want_up, want_down = 2 * h * w * 3, h * w * 4
    return {
        'HtoD_bytes': copies['HtoD'],
        'DtoH_bytes': copies['DtoH'],
        'expected_up': want_up,
        'expected_down': want_down,
        'goals': {
            'only the pair up and the disparity down': copies['HtoD'] == [want_up]
            and copies['DtoH'] == [want_down]
        },
    }


def node_path_section(model_dir, device, size, iters) -> dict:
    try:
        from std_msgs.msg import Header

        from ffs_ros.convert import make_camera_infos, numpy_to_image
        from ffs_ros.pipeline import PipelineConfig, StereoPipeline, Wanted
    except ImportError as exc:
        raise Skip(f'ROS message packages not importable here ({exc})')
    from ffs_ros.inference import load_matcher

    h, w = size
    s = scene(h, w)
    pipe = StereoPipeline(
        load_matcher(
            model_dir,
            'torch',
            device=str(device),
            **({'fp16': True, 'cuda_graph': True} if device.type == 'cuda' else {}),
        ),
        PipelineConfig(),
    )
    hdr = Header(frame_id='left_optical')
    li, ri = make_camera_infos(w, h, 0.8 * w, 0.12)
    left, right = numpy_to_image(s.left, 'rgb8', hdr), numpy_to_image(s.right, 'rgb8', hdr)
    rows = []
    for i in range(iters + 3):
        out = pipe.process(left, right, li, ri, Wanted(disparity=True, depth=True, cloud=True))
        if i >= 3:
            rows.append(out.timings)
    med = {
        k: round(float(np.median([r.get(k, 0.0) for r in rows])), 3)
        for k in rows[0]
        if '/' not in k
    }
    overhead = sum(v for k, v in med.items() if k != 'match')
    return {
        'stages_ms': med,
        'host_overhead_ms': round(overhead, 3),
        'overhead_share_of_match': round(overhead / med['match'], 3) if med.get('match') else None,
    }


def tensorrt_section(model_dir, device, size, iters, warmup) -> dict:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        raise Skip('tensorrt is not importable here')
    if device.type != 'cuda':
        raise Skip('needs CUDA')
    from ffs_ros.inference import load_matcher

    h, w = size
    s = scene(h, w)
    ref = load_matcher(model_dir, 'torch', device=str(device), fp16=False).match(s.left, s.right)
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, opts in (
            ('fp32', {'precision': 'fp32'}),
            ('fp16', {'precision': 'fp16'}),
            ('fp16+cuda_graph', {'precision': 'fp16', 'cuda_graph': True}),
        ):
            t0 = time.perf_counter()
            m = load_matcher(
                model_dir, 'tensorrt', device=str(device), engine_cache_dir=cache, **opts
            )
            m.prepare((h, w))
            build_s = time.perf_counter() - t0
            disp, wall, stages = run_timed(m, s.left, s.right, iters, warmup)
            out[name] = {
                'build_or_load_s': round(build_s, 1),
                'wall_ms': wall,
                'stages_ms': stages,
                'vs_torch_fp32': disparity_diff(disp, ref),
            }
            m.close()
    return out


# -------------------------------------------------------------------------------------------------


def print_table(res: dict) -> None:
    env = res.get('env', {})
    print(
        f'\nffs_ros gpu-check: {env.get("gpu")}  torch {env.get("torch")}  CUDA '
        f'{env.get("cuda")}  '
        f'TensorRT {env.get("tensorrt")}'
    )
    print(f'{"check":44s} {"p50 ms":>9s} {"p95 ms":>9s}  notes')
    tm = res.get('torch_model', {})
    for k in ('fp32', 'fp16', 'fp16+cuda_graph'):
        if k in tm:
            r = tm[k]
            print(
                f'{"torch backend " + k + " " + tm["size"]:44s} {r["wall_ms"]["p50"]:9.2f} '
                f'{r["wall_ms"]["p95"]:9.2f}'
                f'  vs ORT CPU mean {r["vs_onnxruntime_cpu"].get("mean_abs_px")} px, '
                'outside-network '
                f'{r["outside_network_share"]}'
            )
    pl = res.get('pipeline', {})
    for k in ('plain', 'cuda_graph'):
        if k in pl:
            r = pl[k]
            print(
                f'{"TRT path, torch-module engines, " + k:44s} {r["wall_ms"]["p50"]:9.2f} '
                f'{r["wall_ms"]["p95"]:9.2f}'
                f'  shared buffers {r["shared_feature_buffers"]}, volume {r["volume_dtype"]}'
            )
    trt = res.get('tensorrt', {})
    for k in ('fp32', 'fp16', 'fp16+cuda_graph'):
        if isinstance(trt.get(k), dict):
            r = trt[k]
            print(
                f'{"TensorRT " + k:44s} {r["wall_ms"]["p50"]:9.2f} {r["wall_ms"]["p95"]:9.2f}'
                f'  vs torch fp32 mean {r["vs_torch_fp32"].get("mean_abs_px")} px'
            )
    g = res.get('gwc', {})
    if 'one_pass_ms_640x480' in g:
        print(
            f'{"GWC volume one pass (fp16 out) 640x480":44s} '
            f'{g["one_pass_ms_640x480"]["p50"]:9.2f} '
            f'{g["one_pass_ms_640x480"]["p95"]:9.2f}  old loop+copy '
            f'{g["old_loop_plus_copy_ms_640x480"]["p50"]} ms'
        )
    print(
        '\nsections: '
        + ', '.join(
            f'{k} {v.get("status")}'
            for k, v in res.items()
            if isinstance(v, dict) and 'status' in v
        )
    )
    goals = {
        f'{k}: {g}': v
        for k, sec in res.items()
        if isinstance(sec, dict)
        for g, v in (sec.get('goals') or {}).items()
    }
    goals.update(
        {
            f'pipeline: {k}': v
            for k, v in res.get('pipeline', {}).get('checks', {}).items()
            if isinstance(v, bool)
        }
    )
    for name, ok in goals.items():
        print(f'  {"PASS" if ok else "FAIL"}  {name}')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--model',
        default=str(REPO / 'models' / 'ffs_small'),
        help='model directory (default: the shipped model)',
    )
    p.add_argument('--device', default='cuda', help='cuda or cuda:N')
    p.add_argument('--size', default=None, help='WxH (default 640x480; 160x128 with --allow-cpu)')
    p.add_argument(
        '--iters',
        type=int,
        default=None,
        help='timed iterations per variant (default 50; 2 on CPU)',
    )
    p.add_argument('--out', default=str(REPO / 'out' / 'gpu-check.json'))
    p.add_argument(
        '--allow-cpu', action='store_true', help='rehearse every check on the CPU at a small size'
    )
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        print(
            f'gpu-check: no CUDA GPU visible to torch {torch.__version__}; nothing to check here '
            '(exit 0). '
            f'Run it on a machine with a CUDA GPU (or --allow-cpu to rehearse on this CPU).'
        )
        return 0
    device = torch.device(args.device if torch.cuda.is_available() else 'cpu')
    if device.type == 'cuda' and device.index is None:
        device = torch.device('cuda', 0)
    cpu = device.type != 'cuda'
    w, h = (int(v) for v in (args.size or ('160x128' if cpu else '640x480')).lower().split('x'))
    iters = args.iters or (2 if cpu else 50)
    warmup = 1 if cpu else 5
    from ffs_ros.inference import load_matcher

    ort_ref = load_matcher(args.model, 'onnxruntime', device='cpu')

    def reference(sample):
        return ort_ref.match(sample.left, sample.right)

    c = Check()
    c.section('env', env_section, device)
    c.section(
        'torch_model', torch_model_section, args.model, device, (h, w), iters, warmup, reference
    )
    c.section('gwc', gwc_section, device)
    c.section('pipeline', pipeline_section, args.model, device, (h, w), max(2, iters // 2), warmup)
    c.section('pcie', pcie_section, args.model, device, (h, w))
    c.section('node_path', node_path_section, args.model, device, (h, w), max(2, iters // 2))
    c.section('tensorrt', tensorrt_section, args.model, device, (h, w), iters, warmup)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(c.results, indent=1, default=str) + '\n')
    print_table(c.results)
    print(f'\nwrote {out}')
    return 1 if any(v.get('status') == 'error' for v in c.results.values()) else 0


if __name__ == '__main__':
    raise SystemExit(main())
