"""Reproduce every claim behind initwise by training (long: minutes per claim on 1 core).

    python benchmarks/claims.py                      # all claims, 3 seeds
    python benchmarks/claims.py --claims he_relu_30,orthogonal_rnn --seeds 5

Each claim's report folder (results.json/csv, curves.png, summary.md, claim.json, claim.md) is
written to OUT/<claim>/, and OUT/claims.md / OUT/claims.json collect the measured figures,
verdicts, the exact command and the wall time of each claim. Running some claims replaces only
their entries in an existing OUT/claims.json (the others are kept as they were measured). The recipes are fixed in
initwise/experiments/claims.py and are not tuned to make a claim pass.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's initwise

from initwise.atomic import write_text
from initwise.experiments.claims import CLAIMS, UNTRAINED, run_claim
from initwise.experiments.compare import json_safe


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--claims", default="all",
                        help=f"comma-separated claims or 'all' ({', '.join(CLAIMS)})")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per scheme (default 3)")
    parser.add_argument("--steps", type=int, default=None,
                        help="override every claim's training budget (default: the claim's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "claims"),
                        help="output folder (default benchmarks/results/claims)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(CLAIMS) if args.claims == "all" else [c.strip() for c in args.claims.split(",")]
    os.makedirs(args.out, exist_ok=True)
    records = _previous(args.out)
    for name in names:
        start = time.perf_counter()
        result = run_claim(name, seeds=args.seeds, steps=None if name in UNTRAINED else args.steps)
        wall = time.perf_counter() - start
        result.write(os.path.join(args.out, name))
        verdict = "reproduced" if result.reproduced else "NOT reproduced"
        print(f"{name}: {verdict} ({wall:.0f} s). {result.figure}", flush=True)
        records[result.name] = {**result.to_dict(), "wall_time": wall}
        _write_index(args.out, [records[n] for n in CLAIMS if n in records])
    return 0


def _previous(out: str) -> dict[str, dict]:
    """The records of an existing OUT/claims.json by claim name ({} if there is none)."""
    path = os.path.join(out, "claims.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return {r["name"]: r for r in json.load(f) if r.get("name") in CLAIMS}


def _write_index(out: str, records: list[dict]) -> None:
    env = (f"torch {torch.__version__}, Python {platform.python_version()}, "
           f"{torch.get_num_threads()} torch thread(s), {os.cpu_count()} CPU(s)")
    lines = [f"# Claims, measured ({env})", "",
             "| claim | verdict | measured | command | wall time |", "|---|---|---|---|---|"]
    for r in records:
        verdict = "reproduced" if r["reproduced"] else "**not reproduced**"
        lines.append(f"| {r['name']} | {verdict} | {r['figure']} | `{r['command']}` | "
                     f"{r['wall_time']:.0f} s |")
    write_text(os.path.join(out, "claims.md"), "\n".join(lines) + "\n")
    write_text(os.path.join(out, "claims.json"), json.dumps(json_safe(records), indent=1, allow_nan=False))


if __name__ == "__main__":
    sys.exit(main())
