"""Initializing large models: initwise next to a raw fill, torch and transformers, side by side.

    python benchmarks/bench_scale.py [--size 100m|1b|all] [--device cpu|cuda] [--dtype float32]
                                     [--threads 1] [--repeats 1] [--part all|models|streams|planning]

``models``: for a Llama-like transformers config and a plain stack of ``nn.Linear`` of ~100M
and ~1B parameters, each measured in its own subprocess (clean peak RSS), one after the other:

* ``raw normal_``: ``torch.empty(shape).normal_()`` for every parameter shape (the floor);
* ``torch build``: building the model with PyTorch's default init (for Llama: transformers'
  constructor with its ``_init_weights`` switched off, so only the layers' ``reset_parameters``);
* ``from_config``: ``AutoModelForCausalLM.from_config`` (Llama: torch's init, then transformers');
* ``build + init``: the build above, then ``initwise.plan`` and ``Plan.apply`` (timed apart);
* ``meta one-pass``: build under ``torch.device("meta")``, plan, ``apply(device=...)``.

Time (s) and peak memory beyond the process's start (RSS high-water mark on the CPU,
``torch.cuda.max_memory_allocated`` on a GPU), as a multiple of the parameter bytes. initwise's
standard plan keeps the custom ``LlamaRMSNorm`` weights (not a torch norm class); the
benchmark sets them to 1 in the plan, as their module does, so that the meta path can fill them.

``streams``: ns per element of the stream draws (normal, uniform, truncated normal) next to a raw
``normal_`` of the same float32 tensor, and of the counter-based alternative the streams module
was measured against. ``planning``: time of ``initwise.plan`` for 100/1000-layer MLPs and
16/64/96-block transformers.

Results go to ``benchmarks/results/scale/scale_<device>.json`` and ``.md`` (written atomically).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # this checkout's initwise, also when another one is installed
OUT = os.path.join(HERE, "results", "scale")
SIZES = ("100m", "1b")
# Llama-like configs (~97M and ~0.95B parameters) and Linear stacks (~101M and ~1.0B)
LLAMA = {"100m": dict(vocab_size=8192, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=12, num_key_value_heads=12),
         "1b": dict(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                    num_attention_heads=16, num_key_value_heads=16)}
STACK = {"100m": (24, 2048), "1b": (60, 4096)}
METHODS = ("raw_normal", "torch_build", "from_config", "build_init", "meta_init")
LABELS = {"raw_normal": "raw normal_", "torch_build": "torch build", "from_config": "from_config",
          "build_init": "build + init", "meta_init": "meta one-pass"}


# ============================================================================= one measurement
def _rss(field: str = "VmRSS") -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _builder(model: str, size: str, dtype, device: str):
    """A function building the model (under the current device context) with torch's defaults."""
    from torch import nn

    if model == "stack":
        depth, width = STACK[size]
        return lambda: nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(width, width, dtype=dtype),
                                                                          nn.ReLU())])
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(max_position_embeddings=2048, **LLAMA[size])
    return lambda: AutoModelForCausalLM.from_config(cfg, dtype=dtype)


def _plan(model, example):
    import initwise

    plan = initwise.plan(model, example)
    for e in plan:  # LlamaRMSNorm weights start at 1 (their module's own value)
        if e.scheme == "keep" and e.name.endswith("norm.weight"):
            e.scheme, e.params = "constant", {"value": 1.0}
    return plan


def worker(method: str, model: str, size: str, device: str, dtype_name: str, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    dtype = getattr(torch, dtype_name)
    build = _builder(model, size, dtype, device)
    with torch.device("meta"):
        shapes = [tuple(p.shape) for p in build().parameters()]  # unique tensors (tied once)
    numel = sum(math.prod(s) for s in shapes)
    example = torch.zeros(2, 8, dtype=torch.long) if model == "llama" else None
    out = {"params": numel, "param_bytes": numel * torch.empty((), dtype=dtype).element_size()}
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss()
    t0 = time.perf_counter()
    if method == "raw_normal":
        tensors = [torch.empty(s, dtype=dtype, device=device) for s in shapes]
        for t in tensors:
            t.normal_()
        _sync(device)
        out["total_s"] = time.perf_counter() - t0
    elif method in ("torch_build", "from_config"):
        if model == "stack" and method == "from_config":
            return {"skipped": "transformers only"}
        if model == "llama" and method == "torch_build":
            from transformers import LlamaPreTrainedModel

            LlamaPreTrainedModel._init_weights = lambda self, module: None  # torch's reset_parameters only
        with torch.device(device):
            m = build()
        _sync(device)
        out["total_s"] = time.perf_counter() - t0
    else:
        if method == "build_init":
            with torch.device(device):
                m = build()
        else:
            with torch.device("meta"):
                m = build()
        _sync(device)
        t1 = time.perf_counter()
        plan = _plan(m, None if example is None else example.to("meta" if method == "meta_init" else device))
        t2 = time.perf_counter()
        plan.apply(m, seed=0, device=device if method == "meta_init" else None)
        _sync(device)
        t3 = time.perf_counter()
        out.update(build_s=t1 - t0, plan_s=t2 - t1, apply_s=t3 - t2, total_s=t3 - t0)
    if device.startswith("cuda"):
        out["peak_bytes"] = torch.cuda.max_memory_allocated() - base
    else:
        out["peak_bytes"] = _rss("VmHWM") - base
    return out


def run_worker(method: str, model: str, size: str, args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", method, model, size, "--device", args.device,
           "--dtype", args.dtype, "--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                          timeout=3600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ============================================================================= streams
def counter_normal_(t, key: int = 0x1234567) -> None:
    """The measured alternative: murmur3's 64-bit finalizer on int64 counters in torch ops, two
    24-bit uniforms per hash, Box-Muller (12 tensor passes per pair of samples)."""
    import torch

    c, n = 1 << 16, t.numel()
    ar = torch.arange(c // 2, dtype=torch.int64)
    z, tmp = torch.empty(c // 2, dtype=torch.int64), torch.empty(c // 2, dtype=torch.int64)
    u1, u2 = torch.empty(c // 2), torch.empty(c // 2)
    for j in range(0, n, c):
        torch.add(ar, key + j // 2, out=z)
        for mult in (-49064778989728563, -4265267296055464877, None):
            torch.bitwise_right_shift(z, 33, out=tmp)
            z.bitwise_xor_(tmp.bitwise_and_((1 << 31) - 1))
            if mult is not None:
                z.mul_(mult)
        torch.bitwise_right_shift(z, 40, out=tmp)
        u1.copy_(tmp.bitwise_and_((1 << 24) - 1)).add_(1).mul_(2.0 ** -24)
        torch.bitwise_and(z, (1 << 24) - 1, out=tmp)
        u2.copy_(tmp).mul_(2 * math.pi * 2.0 ** -24)
        r = u1.log_().mul_(-2).sqrt_()
        o = t[j:j + c]
        h = o.numel() // 2
        torch.cos(u2[:h], out=o[:h]).mul_(r[:h])
        torch.sin(u2[:o.numel() - h], out=o[h:]).mul_(r[:o.numel() - h])


def streams_speed(device: str, threads: int, repeats: int) -> dict:
    import torch

    from initwise import streams

    torch.set_num_threads(threads)
    n = 1 << 24
    t = torch.empty(n, device=device)
    cases = {"raw normal_": lambda: t.normal_()}
    for d in streams.DISTRIBUTIONS:
        cases[f"stream {d}"] = (lambda d=d: streams.fill_(t, 0, "w", distribution=d, std=0.02))
    if device == "cpu":
        cases["counter-based normal (torch int ops)"] = lambda: counter_normal_(t)
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(max(3, repeats)):
        for k, f in cases.items():  # alternate, so that drift hits every case alike
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append((time.perf_counter() - t0) * 1e9 / n)
    raw = min(times["raw normal_"])
    return {k: {"ns_min": min(v), "ns_max": max(v), "ratio": min(v) / raw} for k, v in times.items()}


# ============================================================================= planning
def planning_speed() -> dict:
    import torch
    from torch import nn

    import initwise

    torch.set_num_threads(1)

    class Block(nn.Module):
        def __init__(self, d: int = 32):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, 4, batch_first=True)
            self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            h = self.ln1(x)
            x = x + self.attn(h, h, h, need_weights=False)[0]
            return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.ln2(x))))

    out = {}
    for depth in (100, 1000):
        model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(32, 32), nn.ReLU())])
        t0 = time.perf_counter()
        initwise.plan(model)
        out[f"mlp {depth} layers"] = time.perf_counter() - t0
    for blocks in (16, 64, 96):
        model = nn.Sequential(*[Block() for _ in range(blocks)])
        t0 = time.perf_counter()
        initwise.plan(model, torch.zeros(2, 8, 32))
        out[f"transformer {blocks} blocks"] = time.perf_counter() - t0
    return out


# ============================================================================= report
def _fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.0f} MiB"


def report(results: dict) -> str:
    lines = [f"# bench_scale ({results['device']}, {results['dtype']}, {results['threads']} thread(s), "
             f"torch {results['torch']})", ""]
    for key, rows in results.get("models", {}).items():
        model, size = key.split("/")
        raw = rows.get("raw_normal", {}).get("total_s")
        hf = rows.get("from_config", {}).get("total_s")
        params = next((r["params"] for r in rows.values() if "params" in r), 0)
        pbytes = next((r["param_bytes"] for r in rows.values() if "param_bytes" in r), 1)
        lines += [f"## {model} {size}: {params / 1e6:.0f}M parameters ({_fmt_bytes(pbytes)})", "",
                  "| method | time s | x raw normal_ | x from_config | build / plan / apply s | peak / params |",
                  "|---|---|---|---|---|---|"]
        for m in METHODS:
            r = rows.get(m, {})
            if "total_s" not in r:
                lines.append(f"| {LABELS[m]} | {r.get('skipped') or r.get('error', '-')} | | | | |")
                continue
            parts = (f"{r['build_s']:.2f} / {r['plan_s']:.2f} / {r['apply_s']:.2f}" if "apply_s" in r else "")
            xr = f"{r['total_s'] / raw:.2f}" if raw else "-"
            xh = f"{r['total_s'] / hf:.2f}" if hf else "-"
            lines.append(f"| {LABELS[m]} | {r['total_s']:.2f} | {xr} | {xh} | {parts} | "
                         f"{r['peak_bytes'] / pbytes:.2f} |")
        lines.append("")
    if "streams" in results:
        lines += ["## stream draws (16M float32 elements)", "", "| draw | ns/element (min-max) | x raw normal_ |",
                  "|---|---|---|"]
        for k, v in results["streams"].items():
            lines.append(f"| {k} | {v['ns_min']:.2f}-{v['ns_max']:.2f} | {v['ratio']:.2f} |")
        lines.append("")
    if "planning" in results:
        p = results["planning"]
        lines += ["## planning time (s)", "", "| model | s |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" for k, v in p.items()]
        if p.get("mlp 100 layers"):
            lines.append(f"\nMLP 100 -> 1000 layers: x{p['mlp 1000 layers'] / p['mlp 100 layers']:.1f}; "
                         f"transformer 16 -> 96 blocks: x{p['transformer 96 blocks'] / p['transformer 16 blocks']:.1f}")
    return "\n".join(lines) + "\n"


def write_atomic(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=(*SIZES, "all"), default="all")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each model measurement (min kept)")
    parser.add_argument("--part", choices=("all", "models", "streams", "planning"), default="all")
    parser.add_argument("--worker", nargs=3, metavar=("METHOD", "MODEL", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.device, args.dtype, args.threads)))
        return
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_scale: --device cuda needs a CUDA GPU; none is available here, nothing measured")
        return
    results: dict = {"device": args.device, "dtype": args.dtype, "threads": args.threads, "torch": torch.__version__}
    if args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name()
    if args.part in ("all", "models"):
        results["models"] = {}
        for size in (SIZES if args.size == "all" else (args.size,)):
            for model in ("llama", "stack"):
                rows = {}
                for method in METHODS:
                    runs = [run_worker(method, model, size, args) for _ in range(args.repeats)]
                    ok = [r for r in runs if "total_s" in r]
                    rows[method] = min(ok, key=lambda r: r["total_s"]) if ok else runs[0]
                    print(f"{model} {size} {LABELS[method]}: {rows[method]}", flush=True)
                results["models"][f"{model}/{size}"] = rows
    if args.part in ("all", "streams"):
        results["streams"] = streams_speed(args.device, args.threads, 5)
    if args.part in ("all", "planning"):
        results["planning"] = planning_speed()
    text = report(results)
    print(text)
    name = f"scale_{args.device.split(':')[0]}"
    write_atomic(os.path.join(OUT, name + ".json"), json.dumps(results, indent=2) + "\n")
    write_atomic(os.path.join(OUT, name + ".md"), text)


if __name__ == "__main__":
    main()
