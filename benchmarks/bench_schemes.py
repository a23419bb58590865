"""Speed of initwise's schemes next to torch.nn.init's, measured side by side in one run.

    python benchmarks/bench_schemes.py [--threads 1] [--repeats 7]

For each pair, both functions fill the same shape alternately; the table gives the median time
of each and the ratio initwise / torch. initwise draws in float32 and copies (to keep dtype and
support every distribution with a generator), so a ratio a little above 1 is expected.
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

import initwise

PAIRS = [
    ("xavier_normal (4096x4096)", (4096, 4096),
     lambda t: initwise.xavier_normal_(t), lambda t: torch.nn.init.xavier_normal_(t)),
    ("kaiming_uniform (4096x4096)", (4096, 4096),
     lambda t: initwise.kaiming_uniform_(t, nonlinearity="relu"),
     lambda t: torch.nn.init.kaiming_uniform_(t, nonlinearity="relu")),
    ("truncated normal (4096x4096)", (4096, 4096),
     lambda t: initwise.xavier_truncated_normal_(t),
     lambda t: torch.nn.init.trunc_normal_(t, std=math.sqrt(2 / 8192) / 0.87962566103423978,
                                           a=-2 * math.sqrt(2 / 8192) / 0.87962566103423978,
                                           b=2 * math.sqrt(2 / 8192) / 0.87962566103423978)),
    ("orthogonal (1024x1024)", (1024, 1024),
     lambda t: initwise.orthogonal_(t), lambda t: torch.nn.init.orthogonal_(t)),
    ("conv kaiming_normal (256x256x3x3)", (256, 256, 3, 3),
     lambda t: initwise.kaiming_normal_(t), lambda t: torch.nn.init.kaiming_normal_(t)),
]


def _median_time(fn, t: torch.Tensor, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(t)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=7, help="timed repetitions (default 7)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats}")
    print(f"{'scheme':<36}{'initwise ms':>12}{'torch ms':>10}{'ratio':>8}")
    for label, shape, ours, theirs in PAIRS:
        t = torch.empty(shape)
        ours(t), theirs(t)  # warm up
        a, b = [], []
        for _ in range(args.repeats):  # alternate so drift hits both alike
            a.append(_median_time(ours, t, 1))
            b.append(_median_time(theirs, t, 1))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{label:<36}{ma * 1e3:>12.1f}{mb * 1e3:>10.1f}{ma / mb:>8.2f}")


if __name__ == "__main__":
    main()
