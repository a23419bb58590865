"""How much of a difference in benchmarks/peers.py's table is noise: train each (case, method,
seed) again after scaling the model's last weight by (1 +- eps), eps = 1e-7 by default.

    python benchmarks/noise_floor.py                                 # relu30 gelu30 resnet_conv
    python benchmarks/noise_floor.py --cases relu30 --methods initwise lsuv --eps 1e-6

A deep net trained with a fixed recipe can be chaotic: a change of the initial weights in the
7th digit (or another number of torch threads, which changes the order of a matmul's sums) moves
the final test accuracy by a few points. The runs here share everything with peers.py (models,
data, loop, seeds, init batch: its ``run_one``) except that perturbation, so the spread of one
seed's three runs (eps 0, +eps, -eps) is the floor under which two methods' means cannot be told
apart with this many seeds. Output: ``benchmarks/results/noise_floor/noise_floor.{json,md}``
(atomic writes).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import peers

DEFAULT_OUT = os.path.join("benchmarks", "results", "noise_floor")
DEFAULT_CASES = ("relu30", "gelu30", "resnet_conv")
DEFAULT_METHODS = ("initwise", "lsuv", "anyinit")


def perturbed(init: peers.InitFn, eps: float) -> peers.InitFn:
    """``init``, then the model's last parameter of 2+ dims (its output layer's weight) times
    ``1 + eps`` (``eps = 0``: the method itself, bit for bit)."""
    def run(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
        init(model, batch, seed)
        if eps:
            last = [p for p in model.parameters() if p.dim() >= 2][-1]
            with torch.no_grad():
                last.mul_(1.0 + eps)
    return run


def measure(cases: list[peers.Case], methods: list[str], seeds: list[int], eps: float,
            log=print) -> list[dict]:
    """One row per (case, method): the metric of every (seed, perturbation) run, the mean of
    the unperturbed runs (peers.py's cell), the mean of all runs, and each seed's range."""
    rows = []
    for case in cases:
        data = case.data()
        for name in methods:
            per_seed = []
            try:
                for seed in seeds:
                    vals = []
                    for e in (0.0, eps, -eps):
                        r = peers.run_one(case, name, seed, data, init=perturbed(peers.METHODS[name], e))
                        if r["status"] != "ok":
                            raise peers.Unavailable(r["error"])
                        vals.append(r["metric"])
                    per_seed.append(vals)
            except peers.Unavailable as exc:
                log(f"skip {case.name} {name}: {exc}")
                continue
            ranges = [max(v) - min(v) for v in per_seed]
            row = {"case": case.name, "method": name, "runs": per_seed,
                   "mean_unperturbed": statistics.fmean(v[0] for v in per_seed),
                   "mean_all": statistics.fmean(x for v in per_seed for x in v),
                   "range_mean": statistics.fmean(ranges), "range_max": max(ranges)}
            rows.append(row)
            log(f"{case.name:<12} {name:<10} eps 0: {row['mean_unperturbed']:.4g}  all {len(seeds) * 3} runs: "
                f"{row['mean_all']:.4g}  range within a seed: mean {row['range_mean']:.3g}, max {row['range_max']:.3g}")
    return rows


def to_markdown(rows: list[dict], eps: float, seeds: list[int], command: str, wall: float) -> str:
    lines = ["# Noise floor of benchmarks/peers.py", "",
             f"Command: `{command}`  ",
             (f"Seeds {seeds}; each seed trained 3 times: as initialized, and with the output layer's weight "
              f"x (1 + {eps:g}) and x (1 - {eps:g}); wall time {wall:.0f} s."), "",
             ("| case | method | mean, as initialized (peers.py's cell) | mean of all runs | "
              "range within one seed: mean, max |"), "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['method']} | {r['mean_unperturbed']:.4g} | {r['mean_all']:.4g} | "
                     f"{r['range_mean']:.3g}, {r['range_max']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Spread of peers.py's metrics under a perturbation "
                                                 "of the initial weights in the 7th digit.")
    parser.add_argument("--cases", nargs="+", default=list(DEFAULT_CASES), metavar="CASE",
                        help=f"peers.py cases (default {' '.join(DEFAULT_CASES)}): {', '.join(peers.CASES)}")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), metavar="METHOD",
                        help=f"peers.py methods (default {' '.join(DEFAULT_METHODS)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--eps", type=float, default=1e-7, help="relative perturbation (default 1e-7)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as peers.py)")
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    bad = [c for c in args.cases if c not in peers.CASES] + [m for m in args.methods if m not in peers.METHODS]
    if bad:
        parser.error(f"unknown case/method {', '.join(bad)}; cases: {', '.join(peers.CASES)}; "
                     f"methods: {', '.join(peers.METHODS)}")
    if args.seeds < 1 or args.threads < 1:
        parser.error("--seeds and --threads must be >= 1")
    if not 0 < args.eps < 0.1:
        parser.error(f"--eps must be in (0, 0.1), got {args.eps}")
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seeds))
    start = time.perf_counter()
    rows = measure([peers.CASES[c] for c in args.cases], args.methods, seeds, args.eps)
    wall = time.perf_counter() - start
    command = "python benchmarks/noise_floor.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = to_markdown(rows, args.eps, seeds, command.strip(), wall)
    print()
    print(md)
    peers.write_atomic(os.path.join(args.out, "noise_floor.md"), md)
    peers.write_atomic(os.path.join(args.out, "noise_floor.json"), json.dumps(
        {"command": command.strip(), "eps": args.eps, "seeds": seeds, "threads": args.threads,
         "wall_time_s": round(wall, 1), "versions": peers._versions(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
