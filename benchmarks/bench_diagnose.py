"""Cost of ``initwise.diagnose`` against a plain forward + backward pass of the same model.

Both are timed side by side in one run, on the same model and batch, alternating, several
repetitions. ``diagnose`` does one forward and one backward pass too, plus the hooks, the
per-layer statistics (spread across the batch, dead/saturated units, duplicate units, a
histogram sample) and the gradients w.r.t. every layer output. We print the median time of
each and their ratio, and the ratio of the fastest runs (less sensitive to other processes
sharing the CPU).

Run:  python benchmarks/bench_diagnose.py [--reps 9] [--threads 1]

torch runs single-threaded by default (``torch.set_num_threads(1)``) so that the figures are
less disturbed by other work on the machine; the ratio is what matters.
"""
from __future__ import annotations

import argparse
import statistics
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


def bench(name: str, model: nn.Module, x: torch.Tensor, reps: int) -> float:
    plain(model, x)  # warm-up both
    diagnose(model, x)
    t_plain, t_diag = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        plain(model, x)
        t1 = time.perf_counter()
        diagnose(model, x)
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_diag.append(t2 - t1)
    p, d = statistics.median(t_plain), statistics.median(t_diag)
    ratio_best = min(t_diag) / min(t_plain)
    print(f"{name:<46} {p * 1e3:>9.1f} {d * 1e3:>11.1f} {d / p:>8.2f}x {ratio_best:>8.2f}x")
    return d / p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=9, help="timed repetitions (default 9)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.reps} alternating reps")
    print(f"{'model':<46} {'fwd+bwd':>9} {'diagnose':>11} {'ratio':>9} {'(best)':>9}")
    print(f"{'':<46} {'ms (med)':>9} {'ms (med)':>11} {'(median)':>9} {'':>9}")
    bench("MLP 50 x Linear(256) + ReLU, batch 256", mlp(50, 256), torch.randn(256, 256), args.reps)
    bench("MLP 50 x Linear(128) + ReLU, batch 128", mlp(50, 128), torch.randn(128, 128), args.reps)
    bench("CNN 6 x Conv(32)+BN+ReLU, 3x32x32, batch 64", cnn(), torch.randn(64, 3, 32, 32),
          args.reps)


if __name__ == "__main__":
    main()
