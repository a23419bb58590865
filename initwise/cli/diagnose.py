"""The ``diagnose`` subcommand: signal and gradient flow at initialization, layer by layer, of
a TARGET or a built-in MLP under one or more schemes, with its ``_dg_*`` helpers (input batch,
scheme and plot checks, the printed report)."""
from __future__ import annotations

import argparse
import os

from ..discover import one_line
from .common import (
    BATCH,
    DEPTH,
    SEED,
    THREADS,
    WIDTH,
    check_input,
    mlp_size,
    progress_bar,
    set_threads,
)
from .options import CLIError, parse_shape, reject


def add_diagnose(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose",
        help="measure signal and gradient flow at initialization, layer by layer",
        description="Run one forward and one backward pass on a random N(0, 1) batch and "
        "report, per layer: activation std across the batch, post-activation std, dead and "
        "saturated units, gradient std and duplicate units, with verdicts in words (vanishing, "
        "exploding, saturation, symmetry, healthy). Diagnose a TARGET model (with "
        "--input-shape) or a built-in plain MLP (--mlp DEPTH). Several --scheme values are "
        "compared side by side and overlaid in one plot.",
    )
    p.add_argument("target", nargs="?", metavar="TARGET",
                   help="the model to diagnose, in the form initwise's load_target accepts "
                   "(e.g. path/to/model.py:factory or package.module:Class)")
    p.add_argument("--input-shape", metavar="SHAPE",
                   help="shape of the random input batch, batch first, e.g. 128,3,32,32 "
                   "(required with TARGET)")
    p.add_argument("--input-dtype", choices=("float", "long"), default="float",
                   help="TARGET: dtype of the input batch: float (N(0, 1)) or long (token ids drawn "
                   "uniformly below the smallest nn.Embedding's num_embeddings) (default float)")
    p.add_argument("--mlp", type=DEPTH, metavar="DEPTH",
                   help="diagnose a built-in plain MLP with DEPTH Linear layers (1 to 1000) instead "
                   "of a TARGET")
    p.add_argument("--width", type=WIDTH, default=256,
                   help="--mlp: units per layer, also the input size, 1 to 8192 (default 256)")
    p.add_argument("--activation", default="relu",
                   help="--mlp: activation after every hidden layer: relu, leaky_relu, tanh, "
                   "sigmoid, selu, elu, gelu, silu, identity (default relu)")
    p.add_argument("--batch", type=BATCH, default=256, help="--mlp: batch size, 2 to 65536 (default 256)")
    p.add_argument("--scheme", action="append", metavar="NAME",
                   help="initialization to diagnose: torch (the model as built or loaded), auto "
                   "(initwise.init) or any scheme name (xavier_normal, he, lecun, orthogonal, "
                   "zeros, small, ...); repeat or comma-separate to compare (default torch)")
    p.add_argument("--seed", type=SEED, default=0, help="seed for the weights and the batch (default 0)")
    p.add_argument("--plot", metavar="PNG",
                   help="write a plot (png, pdf, svg, ... by the file's extension): activation "
                   "and gradient std per layer, activation histograms")
    p.add_argument("--json", metavar="PATH", help="write the reports as JSON ({scheme: report})")
    p.add_argument("--threads", type=THREADS, default=1,
                   help="torch CPU threads (default 1: small layers gain nothing from more)")
    p.set_defaults(func=_cmd_diagnose)


def _dg_shape(text: str) -> tuple[int, ...]:
    """--input-shape for diagnose: the shared parser, plus a batch of at least 2 (spreads are
    measured across the batch)."""
    shape = parse_shape(text)
    if len(shape) < 2 or shape[0] < 2:
        raise CLIError(f"--input-shape must be batch first with a batch of at least 2, e.g. "
                       f"128,3,32,32; got {text!r}")
    return shape


def _dg_input(model, shape: tuple[int, ...], args: argparse.Namespace):
    """The batch: N(0, 1) floats, or (--input-dtype long) token ids drawn uniformly from the
    vocabulary of the model's smallest embedding (all-equal ids would make every sample alike
    and the spreads across the batch 0)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(args.seed)
    if args.input_dtype == "float":
        return torch.randn(shape, generator=g)
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))]
    if not sizes:
        raise CLIError(f"--input-dtype long: {type(model).__name__} has no nn.Embedding to tell the "
                       "vocabulary size; token ids need one")
    return torch.randint(0, min(sizes), shape, generator=g)


def _dg_check_scheme(scheme: str) -> None:
    """A diagnose scheme is torch, auto or a whole-model policy name, checked by the function
    initwise.plan itself uses (so e.g. 'constant', which needs a value, fails here)."""
    from ..policies import normalize_policy

    if scheme in ("torch", "auto", "standard"):
        return
    try:
        normalize_policy(scheme)
    except (KeyError, ValueError, TypeError) as exc:
        raise CLIError(f"unknown --scheme {scheme!r}: use torch, auto or a scheme name for every "
                       f"weight ({one_line(exc, 200)})") from None


def _dg_check_plot(path: str | None) -> None:
    """--plot must end in an extension matplotlib can write (png, pdf, svg, ...)."""
    if not path:
        return
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    ext = os.path.splitext(path)[1].lstrip(".").lower()
    if ext not in formats:
        raise CLIError(f"--plot {path!r}: the file name must end in a format matplotlib writes: "
                       f"{', '.join('.' + f for f in sorted(formats))}")


def _cmd_diagnose(args: argparse.Namespace) -> int:
    import copy

    import torch

    from ..api import load_target
    from ..diagnose import Comparison, compare_schemes

    schemes = [s.strip().lower() for value in (args.scheme or ["torch"])
               for s in value.split(",") if s.strip()]
    if not schemes:
        raise CLIError("--scheme is empty; give a scheme name such as torch, auto or he")
    for scheme in schemes:
        _dg_check_scheme(scheme)
    _dg_check_plot(args.plot)
    if args.mlp is not None and args.target:
        raise CLIError("give either a TARGET or --mlp DEPTH, not both")
    if args.mlp is not None:
        reject(args, ("input_shape", "input_dtype"), "to --mlp (its input is --batch x --width)")
        mlp_size(args.mlp, args.width, args.batch, f"--mlp {args.mlp} --width {args.width} --batch {args.batch}")
        from ..experiments.models import make_activation, mlp

        make_activation(args.activation)  # unknown names fail here, before any work
        depth, width, act = args.mlp, args.width, args.activation

        def factory() -> torch.nn.Module:
            return mlp(width, width, depth=depth, width=width, activation=act)

        shape: tuple[int, ...] = (args.batch, width)
        title = f"{depth}-layer {act} MLP, width {width}, batch {args.batch}"
    elif args.target:
        reject(args, ("width", "activation", "batch"), "to a TARGET (they set the built-in --mlp)")
        if not args.input_shape:
            raise CLIError("TARGET needs --input-shape, batch first, e.g. --input-shape 128,3,32,32")
        shape = _dg_shape(args.input_shape)
        loaded = load_target(args.target)
        x = _dg_input(loaded, shape, args)
        check_input(loaded, x, args.input_shape)

        def factory() -> torch.nn.Module:
            return copy.deepcopy(loaded)

        title = f"{args.target}, input {'x'.join(map(str, shape))}"
    else:
        raise CLIError("nothing to diagnose: give a TARGET with --input-shape, or --mlp DEPTH")

    set_threads(args.threads)
    if args.mlp is not None:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    reports = {}
    with progress_bar(len(schemes)) as progress:
        for scheme in schemes:
            if progress:
                progress(0, f"diagnose {scheme}")
            reports.update(compare_schemes(factory, x, [scheme], seed=args.seed))
            if progress:
                progress(1, f"diagnose {scheme}")
    comparison = Comparison(reports)
    _dg_print(comparison, title)
    if args.plot:
        comparison.plot(args.plot, title=f"initwise diagnose: {title}")
        print(f"wrote {args.plot}")
    if args.json:
        from ..atomic import write_text

        write_text(args.json, comparison.to_json())
        print(f"wrote {args.json}")
    return 0


def _dg_print(comparison, title: str) -> None:
    try:
        from rich.console import Console
        from rich.markup import escape
    except ImportError:  # pragma: no cover - rich is optional
        for key, report in comparison.items():
            print(f"{title}: {key}")
            for line in report.verdicts:
                print(f"  - {line}")
        return
    console = Console()
    if not console.is_terminal:  # pipes and files: do not squeeze the table into 80 columns
        console = Console(width=160)
    from dataclasses import replace

    if len(comparison) == 1:  # the verdicts follow, in colour: the tables without them
        key, report = next(iter(comparison.items()))
        console.print(replace(report.table(title=f"{title}: {key}"), notes=[]))
        if report.streams:
            console.print(report.stream_table())
    else:
        console.print(replace(comparison.table(), notes=[]))
    for key, report in comparison.items():
        console.print(f"[bold]{escape(key)}[/bold]", highlight=False)
        for line in report.verdicts:
            style = "green" if line.startswith("healthy") else ("yellow" if line.startswith("not judged") else "red")
            console.print(f"  - [{style}]{escape(line)}[/{style}]", highlight=False)
        if report.unused:
            console.print(f"  (not run in the forward pass: {escape(', '.join(report.unused))})",
                          highlight=False)
