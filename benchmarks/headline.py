"""Time the README's main job (`initwise demo`) and refresh the committed headline image.

    python benchmarks/headline.py            # writes benchmarks/results/headline/ + docs/headline.png

Runs exactly the demo's comparison (30-layer ReLU MLP on digits, 8 schemes x 3 seeds x 500 SGD
steps, 1 torch thread), prints the wall time of the whole command (data loading, training,
report writing) and copies the learning-curve plot to docs/headline.png.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time

from initwise.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("benchmarks", "results", "headline"),
                        help="report folder (default benchmarks/results/headline)")
    parser.add_argument("--image", default=os.path.join("docs", "headline.png"),
                        help="where to copy the plot (default docs/headline.png)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    code = cli_main(["demo", "--no-profile", "--out", args.out])
    wall = time.perf_counter() - start
    os.makedirs(os.path.dirname(args.image) or ".", exist_ok=True)
    shutil.copyfile(os.path.join(args.out, "curves.png"), args.image)
    print(f"initwise demo (without the depth profile): {wall:.0f} s wall time; "
          f"plot copied to {args.image}")
    return code


if __name__ == "__main__":
    sys.exit(main())
