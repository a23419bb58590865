"""Cost of ``initwise.diagnose`` against a plain forward + backward pass of the same model.

Both are timed side by side in one run, on the same model and batch, alternating, several
repetitions. ``diagnose`` does one forward and one backward pass too, plus the hooks, the
per-layer statistics (spread across the batch, dead/saturated units, duplicate units, a
histogram sample) and the gradients w.r.t. every layer output. We print the median time of
each and their ratio, and the ratio of the fastest runs (less sensitive to other processes
sharing the CPU).

The zoo models of ``tests/zoo_real.py`` (transformers from small configs, the no-norm residual
nets, the 48-block pre-norm LM) are timed the same way, their baseline being their own training
loss forward + backward on their natural input. Memory: ``--memory`` runs each MLP/CNN case in
a fresh process twice (plain pass, diagnose) and prints the growth of the peak resident memory
over the process's state after building the model and the batch.

Run:  python benchmarks/bench_diagnose.py [--reps 9] [--threads 1] [--no-zoo] [--memory]

torch runs single-threaded by default (``torch.set_num_threads(1)``) so that the figures are
less disturbed by other work on the machine; the ratio is what matters.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch
from torch import nn

from initwise.diagnose import diagnose


def mlp(depth: int = 50, width: int = 256) -> nn.Sequential:
    """``depth`` Linear layers, ReLU between them (PyTorch's default init)."""
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, width))
    return nn.Sequential(*layers)


def cnn(channels: int = 32, blocks: int = 6, classes: int = 10) -> nn.Sequential:
    """A small VGG-like CNN: ``blocks`` x (Conv3x3 -> BatchNorm -> ReLU), pooling, Linear."""
    layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels),
                               nn.ReLU()]
    for i in range(blocks - 1):
        layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels),
                   nn.ReLU()]
        if i % 2 == 1:
            layers.append(nn.MaxPool2d(2))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, classes)]
    return nn.Sequential(*layers)


def plain(model: nn.Module, x: torch.Tensor) -> None:
    """The baseline: forward, the same default loss (mean of squared outputs), backward."""
    model.zero_grad(set_to_none=True)
    model(x).square().mean().backward()


def bench(name: str, model: nn.Module, x: torch.Tensor, reps: int, baseline=None) -> float:
    baseline = baseline or (lambda: plain(model, x))
    baseline()  # warm-up both
    diagnose(model, x)
    t_plain, t_diag = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        baseline()
        t1 = time.perf_counter()
        diagnose(model, x)
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_diag.append(t2 - t1)
    p, d = statistics.median(t_plain), statistics.median(t_diag)
    ratio_best = min(t_diag) / min(t_plain)
    print(f"{name:<46} {p * 1e3:>9.1f} {d * 1e3:>11.1f} {d / p:>8.2f}x {ratio_best:>8.2f}x")
    return d / p


CASES = {
    "mlp256": ("MLP 50 x Linear(256) + ReLU, batch 256", lambda: (mlp(50, 256), torch.randn(256, 256))),
    "mlp128": ("MLP 50 x Linear(128) + ReLU, batch 128", lambda: (mlp(50, 128), torch.randn(128, 128))),
    "cnn": ("CNN 6 x Conv(32)+BN+ReLU, 3x32x32, batch 64", lambda: (cnn(), torch.randn(64, 3, 32, 32))),
}


def peak_growth(case: str, what: str) -> float:
    """MiB the peak resident memory grows by during one pass (``plain`` or ``diagnose``), in a
    fresh process, over its resident memory after building the model and batch (Linux: the
    peak is reset through /proc/self/clear_refs and read as VmHWM)."""
    code = (f"import sys, torch; sys.path.insert(0, {os.path.dirname(__file__)!r}); "
            f"import bench_diagnose as b; torch.manual_seed(0); m, x = b.CASES[{case!r}][1](); "
            "kib = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]); "
            "open('/proc/self/clear_refs', 'w').write('5'); r0 = kib('VmRSS'); "
            f"(b.plain(m, x) if {what!r} == 'plain' else b.diagnose(m, x)); "
            "print((kib('VmHWM') - r0) / 1024)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def zoo(reps: int) -> list[float]:
    """The zoo models, each against its own training loss forward + backward."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    try:
        from tests.zoo_real import REAL_ZOO
    except ImportError as exc:  # transformers missing: the hand-written models still run
        print(f"(zoo skipped: {exc})")
        return []
    ratios = []
    for name, builder in REAL_ZOO.items():
        try:
            rm = builder()
        except Exception as exc:  # noqa: BLE001 - a model that needs transformers
            print(f"{'zoo ' + name:<46} skipped ({type(exc).__name__}: {exc})")
            continue

        def own(rm=rm) -> None:
            rm.model.zero_grad(set_to_none=True)
            rm.loss(rm.model, rm.example_input).backward()
        ratios.append(bench(f"zoo {name}", rm.model, rm.example_input, reps, own))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions (default 9)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-zoo", action="store_true", help="leave out the zoo models")
    parser.add_argument("--memory", action="store_true", help="also measure peak memory growth (subprocesses)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.reps} alternating reps")
    print(f"{'model':<46} {'fwd+bwd':>9} {'diagnose':>11} {'ratio':>9} {'(best)':>9}")
    print(f"{'':<46} {'ms (med)':>9} {'ms (med)':>11} {'(median)':>9} {'':>9}")
    for label, make in CASES.values():
        bench(label, *make(), args.reps)
    if not args.no_zoo:
        ratios = zoo(args.reps)
        if ratios:
            print(f"zoo: diagnose / (forward + backward) from {min(ratios):.2f}x to {max(ratios):.2f}x "
                  f"(median {statistics.median(ratios):.2f}x) over {len(ratios)} models")
    if args.memory:
        print(f"\n{'peak memory growth of one pass (MiB)':<46} {'fwd+bwd':>9} {'diagnose':>11} {'ratio':>9}")
        for case, (label, _) in CASES.items():
            a, b = peak_growth(case, "plain"), peak_growth(case, "diagnose")
            print(f"{label:<46} {a:>9.1f} {b:>11.1f} {b / a if a > 0 else float('nan'):>8.2f}x")


if __name__ == "__main__":
    main()
