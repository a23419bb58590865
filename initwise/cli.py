"""The ``initwise`` command line: a thin layer that parses arguments and calls the library.

Each subcommand is a pair of functions: ``_add_<name>(subparsers)`` declares its arguments and
``_cmd_<name>(args)`` runs it and returns an exit code. Errors the user can fix (bad names, bad
shapes, a TARGET that does not load) are printed as one line on stderr, with exit code 2,
unless ``--debug`` is given, which shows the full traceback (the user's own frames included).
Every option is checked before any work (:mod:`initwise.cliopts`: numbers in range, options
that do not apply, outputs that would overwrite an input); Ctrl-C exits 130 with one line, and
files are written atomically, so an interrupted command leaves no partial output.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .cliopts import (MAX_SEED, CLIError, check_paths, check_size, float_range, given_options, int_range,
                      parse_shape, reject, target_file)
from .discover import one_line

# ranges of the numeric options (checked by argparse, before anything runs)
_DEPTH = int_range(1, 1000)
_WIDTH = int_range(1, 8192)
_SEEDS = int_range(1, 100)
_STEPS = int_range(1, 10**6)
_THREADS = int_range(1, 1024)
_SEED = int_range(0, MAX_SEED)
_BATCH = int_range(2, 65536)


# ---------------------------------------------------------------------------- shared helpers
def _input_shape(text: str) -> tuple[int, ...]:
    """Parse ``--input-shape``: comma-separated positive integers, e.g. ``1,3,32,32`` (ASCII
    digits, each at most 2^31 - 1, 2^28 elements in all)."""
    return parse_shape(text)


def _mlp_size(depth: int, width: int, batch: int, what: str) -> None:
    """A built-in MLP's weights and one batch of activations per layer must fit the limit."""
    check_size(depth * width * (width + 1) + 3 * depth * batch * width, what, "an MLP of")


def _check_input(model, x, text: str) -> None:
    """Run one forward pass of ``model`` on ``x`` without gradients, so that an --input-shape
    the model does not accept is reported as one line."""
    import torch

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's model: one line
        raise CLIError(f"--input-shape {text}: the forward pass of {type(model).__name__} fails "
                       f"with an input of shape {tuple(x.shape)}: {type(exc).__name__}: "
                       f"{one_line(exc, 200)}") from exc
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------- demo
def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="headline comparison: train a 30-layer ReLU MLP on digits from each init",
        description="Print the activation-std depth profile of deep MLPs under each scheme "
        "(one second), then train a 30-layer ReLU MLP on the digits data from each "
        "initialization scheme (torch, zeros, small, xavier, he, lecun, orthogonal, auto) with "
        "the same data order, optimizer and budget, print the table and write the report "
        "folder (results.json, results.csv, curves.png, summary.md). A few minutes on 2 cores.",
    )
    p.add_argument("--out", default="initwise-demo", metavar="DIR",
                   help="report folder to write (default ./initwise-demo)")
    p.add_argument("--seeds", type=_SEEDS, default=3, help="seeds per scheme, 1 to 100 (default 3)")
    p.add_argument("--steps", type=_STEPS, default=500, help="training steps per run (default 500)")
    p.add_argument("--threads", type=_THREADS, default=1,
                   help="torch CPU threads (default 1: small matmuls gain nothing from more)")
    p.add_argument("--profile", action="store_true",
                   help="only print the depth profile (no training)")
    p.add_argument("--no-profile", action="store_true", help="skip the depth profile")
    p.add_argument("--depth", type=_DEPTH, default=50,
                   help="depth-profile MLP: number of Linear layers, 1 to 1000 (default 50)")
    p.add_argument("--width", type=_WIDTH, default=256,
                   help="depth-profile MLP: units per layer, 1 to 8192 (default 256)")
    p.add_argument("--batch", type=_BATCH, default=512,
                   help="depth-profile batch size, 2 to 65536 (default 512)")
    p.add_argument("--seed", type=_SEED, default=0, help="depth-profile random seed (default 0)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.profile and args.no_profile:
        raise CLIError("--profile and --no-profile exclude each other")
    if args.no_profile:
        reject(args, ("depth", "width", "batch", "seed"), "with --no-profile (they set the depth profile)")
    if args.profile:
        reject(args, ("out", "seeds", "steps"), "with --profile (it trains nothing)")
    _mlp_size(args.depth, args.width, args.batch, f"--depth {args.depth} --width {args.width} --batch {args.batch}")
    _ev_threads(args.threads)
    if not args.no_profile:
        from .depthprofile import DEMO_SCHEMES, depth_profile, format_profile

        for activation in ("relu", "tanh"):
            rows = depth_profile(
                activation, DEMO_SCHEMES, depth=args.depth, width=args.width,
                batch=args.batch, seed=args.seed,
            )
            print(format_profile(rows, activation, depth=args.depth, width=args.width))
            print()
    if args.profile:
        return 0
    from .experiments.compare import DEFAULT_SCHEMES, compare, total_steps
    from .experiments.training import TrainConfig

    _ev_threads(args.threads)
    _ev_counts(args)
    config = TrainConfig(steps=args.steps)
    print(f"Headline: 30-layer ReLU MLP (width 128) on digits, {args.seeds} seed(s) x "
          f"{len(DEFAULT_SCHEMES)} schemes, {config.optimizer.upper()} momentum {config.momentum} "
          f"lr {config.lr}, batch {config.batch_size}, {config.steps} steps each")
    with _ev_progress(total_steps(len(DEFAULT_SCHEMES), args.seeds, args.steps)) as progress:
        comp = compare("digits", "mlp", depth=30, width=128, activation="relu",
                       schemes=DEFAULT_SCHEMES, seeds=args.seeds, config=config,
                       progress=progress)
    _ev_print_comparison(comp)
    paths = comp.write(args.out)
    print(f"wrote {', '.join(paths.values())} ({comp.wall_time:.0f} s of training)")
    return 0


# ---------------------------------------------------------------------------- evidence helpers
def _ev_threads(n: int) -> None:
    import torch

    if n < 1:
        raise CLIError(f"--threads must be >= 1, got {n}")
    torch.set_num_threads(n)


def _ev_csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CLIError(f"{what} is empty; give a comma-separated list")
    return items


def _ev_ints(text: str, what: str, lo: int = 1, hi: int = 1000) -> list[int]:
    try:
        return [_DEPTH(t) if (lo, hi) == (1, 1000) else int_range(lo, hi)(t) for t in _ev_csv(text, what)]
    except argparse.ArgumentTypeError as exc:
        raise CLIError(f"{what} must be comma-separated integers from {lo} to {hi}, got {text!r} ({exc})") from None


class _ev_progress:
    """A rich progress bar over ``total`` training steps; yields progress(advance, label).
    Without rich (or total 0) it yields None."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.bar = None

    def __enter__(self):
        try:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)
        except ImportError:  # pragma: no cover - rich is optional
            return None
        self.bar = Progress(TextColumn("{task.description:<28}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            transient=False)
        self.bar.__enter__()
        task = self.bar.add_task("training", total=self.total)

        def progress(advance: int, label: str) -> None:
            self.bar.update(task, advance=advance, description=label)

        return progress

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _ev_counts(args: argparse.Namespace) -> None:
    """--seeds and --steps must be >= 1 (checked before any data is loaded)."""
    for option in ("seeds", "steps"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise CLIError(f"--{option} must be >= 1, got {value}")


def _ev_check(args: argparse.Namespace, depths: list[int], width: int,
              schemes: list[str]) -> list[str]:
    """Validate every compare/sweep option before any data is loaded or a progress bar starts,
    with the library's own checks (experiments.compare.check_config); return the schemes."""
    from .experiments.compare import check_config

    _ev_counts(args)
    _ev_config(args)  # TrainConfig validates --batch-size, --lr, --clip, --eval-every
    names, _ = check_config(args.dataset, args.arch, depths=depths, width=width,
                            activation=_ev_activation(args), schemes=schemes, seeds=args.seeds,
                            seq_mode=args.seq_mode)
    return names


def _ev_print_comparison(comp) -> None:
    rows = comp.summary()
    target = comp.target_accuracy()
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is optional
        print(comp.title())
        print(comp.to_markdown())
        return
    table = Table(title=comp.title())
    for col in ("scheme", "test acc (mean ± std)", "final loss",
                f"steps to {target:.2f} acc", "diverged"):
        table.add_column(col, justify="left" if col == "scheme" else "right")
    for row in rows:
        if row["reached_target"] == 0:
            steps = "never"
        else:
            steps = f"{row['steps_to_target']:.0f}"
            if row["reached_target"] < row["runs"]:
                steps += f" ({row['reached_target']}/{row['runs']})"
        loss = row["final_loss"]
        table.add_row(row["scheme"], f"{row['test_acc_mean']:.3f} ± {row['test_acc_std']:.3f}",
                      "-" if loss != loss else f"{loss:.3f}", steps,
                      f"{row['diverged']}/{row['runs']}")
    Console().print(table)


_EV_ARCH_DEFAULTS = {"mlp": (30, 128), "cnn": (10, 16), "rnn": (2, 64), "lstm": (2, 64),
                     "gru": (2, 64)}


def _ev_add_training_args(p: argparse.ArgumentParser, *, schemes: str, seeds: int) -> None:
    from_list = "digits, breast_cancer, wine, mnist1d"
    p.add_argument("--dataset", default="digits", help=f"data set: {from_list} (default digits)")
    p.add_argument("--arch", default="mlp", choices=list(_EV_ARCH_DEFAULTS),
                   help="model: plain MLP, plain CNN (image data), or a recurrent net over the "
                   "inputs as a sequence (default mlp)")
    p.add_argument("--width", type=_WIDTH, default=None,
                   help="units per hidden layer / CNN channels / recurrent hidden size, 1 to 8192 "
                   "(default 128 / 16 / 64)")
    p.add_argument("--activation", default=None,
                   help="activation: relu, leaky_relu, tanh, sigmoid, selu, elu, gelu, silu, "
                   "identity (rnn: tanh or relu; not for lstm/gru) (default relu, rnn tanh)")
    p.add_argument("--schemes", default=schemes,
                   help="comma-separated schemes: torch (as built), auto (initwise.init), large "
                   "(N(0,1)), orthogonal_hh (as built, only the recurrent weight_hh made "
                   "orthogonal; rnn/lstm/gru only) or any initializer name: zeros, small, xavier, "
                   f"he, lecun, orthogonal, ... (default {schemes})")
    p.add_argument("--seeds", type=_SEEDS, default=seeds,
                   help=f"number of seeds 0..N-1 per scheme, 1 to 100 (default {seeds})")
    p.add_argument("--steps", type=_STEPS, default=500, help="training steps per run (default 500)")
    p.add_argument("--batch-size", type=int_range(1, 65536), default=64, help="mini-batch size (default 64)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="optimizer (default sgd)")
    p.add_argument("--lr", type=float_range(0, 1e6, lo_open=True), default=0.001,
                   help="learning rate, > 0 (default 0.001)")
    p.add_argument("--momentum", type=float_range(0, 1, hi_open=True), default=0.9,
                   help="SGD momentum, in [0, 1) (default 0.9)")
    p.add_argument("--clip", type=float_range(0, 1e30, lo_open=True), default=None,
                   help="clip the gradient norm to this value (default: no clipping)")
    p.add_argument("--eval-every", type=_STEPS, default=25,
                   help="measure test accuracy every N steps (default 25)")
    p.add_argument("--seq-mode", default="pixel", choices=["pixel", "row"],
                   help="recurrent archs: one pixel per step (64 steps on digits) or one row "
                   "per step (8 steps) (default pixel)")
    p.add_argument("--threads", type=_THREADS, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write results.json, results.csv, the plot and summary.md to DIR")


def _ev_reject(args: argparse.Namespace) -> None:
    """Training options that do not apply to the chosen arch or optimizer are errors."""
    if args.arch not in ("rnn", "lstm", "gru"):
        reject(args, ("seq_mode",), f"to --arch {args.arch} (only to rnn, lstm and gru)")
    if args.arch in ("lstm", "gru"):
        reject(args, ("activation",), f"to --arch {args.arch} (its gates fix the activations)")
    if args.optimizer != "sgd":
        reject(args, ("momentum",), f"to --optimizer {args.optimizer} (only to sgd)")


def _ev_activation(args: argparse.Namespace) -> str:
    if args.activation:
        return args.activation
    return "tanh" if args.arch in ("rnn", "lstm", "gru") else "relu"


def _ev_config(args: argparse.Namespace):
    from .experiments.training import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, optimizer=args.optimizer, clip=args.clip,
                       eval_every=args.eval_every)


# ---------------------------------------------------------------------------- compare
def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train one model per init scheme and seed on real data and compare them",
        description="Train the same model from each initialization scheme, with the same data "
        "order, optimizer, learning rate and budget per seed; print test accuracy (mean ± std "
        "over seeds), final loss, steps to 90% of the best accuracy and diverged runs.",
    )
    p.add_argument("--depth", type=_DEPTH, default=None,
                   help="weight layers including the classifier, 1 to 1000 (default 30 for mlp, 10 for "
                   "cnn, 2 (one recurrent layer) for rnn/lstm/gru)")
    _ev_add_training_args(p, schemes="torch,zeros,small,xavier,he,lecun,orthogonal,auto",
                          seeds=3)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .experiments.compare import compare, total_steps

    _ev_reject(args)
    depth0, width0 = _EV_ARCH_DEFAULTS[args.arch]
    depth = args.depth if args.depth is not None else depth0
    width = args.width if args.width is not None else width0
    if args.arch == "mlp":
        _mlp_size(depth, width, args.batch_size, f"--depth {depth} --width {width}")
    _ev_threads(args.threads)
    schemes = _ev_check(args, [depth], width, _ev_csv(args.schemes, "--schemes"))
    config = _ev_config(args)
    with _ev_progress(total_steps(len(schemes), args.seeds, args.steps)) as progress:
        comp = compare(args.dataset, args.arch, depth=depth, width=width,
                       activation=_ev_activation(args), schemes=schemes, seeds=args.seeds,
                       config=config, seq_mode=args.seq_mode, progress=progress)
    _ev_print_comparison(comp)
    if args.out:
        paths = comp.write(args.out)
        print(f"wrote {', '.join(paths.values())}")
    return 0


# ---------------------------------------------------------------------------- sweep
def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="compare schemes across depths and plot test accuracy against depth",
        description="Run the comparison of `initwise compare` at every depth and plot the "
        "final test accuracy against depth per scheme (the trainable-depth picture).",
    )
    p.add_argument("--depths", default="5,10,20,50,100",
                   help="comma-separated depths (weight layers) (default 5,10,20,50,100)")
    _ev_add_training_args(p, schemes="torch,xavier,he,auto", seeds=2)
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .experiments.compare import sweep, total_steps

    _ev_reject(args)
    depths = _ev_ints(args.depths, "--depths")
    width = args.width if args.width is not None else _EV_ARCH_DEFAULTS[args.arch][1]
    if args.arch == "mlp":
        _mlp_size(max(depths), width, args.batch_size, f"--depths {args.depths} --width {width}")
    _ev_threads(args.threads)
    schemes = _ev_check(args, depths, width, _ev_csv(args.schemes, "--schemes"))
    total = total_steps(len(schemes), args.seeds, args.steps, len(depths))
    with _ev_progress(total) as progress:
        result = sweep(args.dataset, args.arch, depths=depths, width=width,
                       activation=_ev_activation(args), schemes=schemes, seeds=args.seeds,
                       config=_ev_config(args), seq_mode=args.seq_mode, progress=progress)
    print(result.title())
    print(result.to_markdown())
    if args.out:
        paths = result.write(args.out)
        print(f"wrote {', '.join(paths.values())}")
    return 0


# ---------------------------------------------------------------------------- claim
def _add_claim(sub: argparse._SubParsersAction) -> None:
    from .experiments.claims import CLAIMS

    p = sub.add_parser(
        "claim",
        help="reproduce one claim behind initwise by training (or 'all', or --list)",
        description="Run the fixed experiment behind one claim (zero init symmetry, small "
        "weights vanish, large weights saturate, He for deep ReLU, Xavier for deep tanh, "
        "LeCun+SELU self-normalizes, orthogonal RNN, a 100-block residual MLP, a 24-block "
        "pre-norm LM, Saxe's deep linear nets, LSUV, the edge of chaos, dynamical isometry, a "
        "200-layer delta-orthogonal CNN, the residual recipes side by side), print the measured "
        "figure and whether it reproduces (exit status 1 if it does not). The recipe is fixed; "
        "it is not tuned to make a claim pass.",
    )
    p.add_argument("name", nargs="?", default=None,
                   help=f"claim to run: {', '.join(CLAIMS)}, or all")
    p.add_argument("--list", action="store_true", help="list the claims and exit")
    p.add_argument("--seeds", type=_SEEDS, default=3, help="seeds per scheme, 1 to 100 (default 3)")
    p.add_argument("--steps", type=_STEPS, default=None,
                   help="training steps per run (default: the claim's own budget)")
    p.add_argument("--threads", type=_THREADS, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the report files (one subfolder per claim) to DIR")
    p.set_defaults(func=_cmd_claim)


def _cmd_claim(args: argparse.Namespace) -> int:
    from .experiments.claims import CLAIM_STEPS, CLAIMS, UNTRAINED, run_claim
    from .experiments.compare import total_steps

    if args.list or not args.name:
        reject(args, ("name",), "with --list")
        reject(args, ("seeds", "steps", "threads", "out"), "to listing the claims (give a claim name)")
        for name, fn in CLAIMS.items():
            summary = " ".join((fn.__doc__ or "").split("\n\n")[0].split())
            print(f"{name:<22} {summary}")
        return 0
    names = list(CLAIMS) if args.name == "all" else [args.name.strip().lower().replace("-", "_")]
    for name in names:
        if name not in CLAIMS:
            raise CLIError(f"unknown claim {args.name!r}; choose one of {', '.join(CLAIMS)}, all")
    if len(names) == 1 and names[0] in UNTRAINED and args.steps is not None:
        raise CLIError(f"claim {names[0]!r} measures at initialization and takes no --steps")
    _ev_counts(args)
    _ev_threads(args.threads)
    status = 0
    for name in names:
        n_schemes, default_steps = CLAIM_STEPS[name]
        steps = None if name in UNTRAINED else args.steps
        total = total_steps(n_schemes, args.seeds, steps or default_steps)
        with _ev_progress(total) as progress:
            result = run_claim(name, seeds=args.seeds, steps=steps, progress=progress)
        if result.comparison is not None:
            _ev_print_comparison(result.comparison)
        else:
            print(result.body())
        verdict = "reproduced" if result.reproduced else "NOT reproduced"
        print(f"{name}: {verdict}. {result.figure}")
        print(f"  criterion: {result.criterion}")
        if args.out:
            folder = os.path.join(args.out, name) if len(names) > 1 else args.out
            paths = result.write(folder)
            print(f"  wrote {', '.join(paths.values())}")
        status = status or (0 if result.reproduced else 1)
    return status


# ---------------------------------------------------------------------------- diagnose
def _add_diagnose(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--mlp", type=_DEPTH, metavar="DEPTH",
                   help="diagnose a built-in plain MLP with DEPTH Linear layers (1 to 1000) instead "
                   "of a TARGET")
    p.add_argument("--width", type=_WIDTH, default=256,
                   help="--mlp: units per layer, also the input size, 1 to 8192 (default 256)")
    p.add_argument("--activation", default="relu",
                   help="--mlp: activation after every hidden layer: relu, leaky_relu, tanh, "
                   "sigmoid, selu, elu, gelu, silu, identity (default relu)")
    p.add_argument("--batch", type=_BATCH, default=256, help="--mlp: batch size, 2 to 65536 (default 256)")
    p.add_argument("--scheme", action="append", metavar="NAME",
                   help="initialization to diagnose: torch (the model as built or loaded), auto "
                   "(initwise.init) or any scheme name (xavier_normal, he, lecun, orthogonal, "
                   "zeros, small, ...); repeat or comma-separate to compare (default torch)")
    p.add_argument("--seed", type=_SEED, default=0, help="seed for the weights and the batch (default 0)")
    p.add_argument("--plot", metavar="PNG",
                   help="write a plot (png, pdf, svg, ... by the file's extension): activation "
                   "and gradient std per layer, activation histograms")
    p.add_argument("--json", metavar="PATH", help="write the reports as JSON ({scheme: report})")
    p.add_argument("--threads", type=_THREADS, default=1,
                   help="torch CPU threads (default 1: small layers gain nothing from more)")
    p.set_defaults(func=_cmd_diagnose)


def _dg_shape(text: str) -> tuple[int, ...]:
    """--input-shape for diagnose: the shared parser, plus a batch of at least 2 (spreads are
    measured across the batch)."""
    shape = _input_shape(text)
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
    from .policies import normalize_policy

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

    from .api import load_target
    from .diagnose import Comparison, compare_schemes

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
        _mlp_size(args.mlp, args.width, args.batch, f"--mlp {args.mlp} --width {args.width} --batch {args.batch}")
        from .experiments.models import make_activation, mlp

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
        _check_input(loaded, x, args.input_shape)

        def factory() -> torch.nn.Module:
            return copy.deepcopy(loaded)

        title = f"{args.target}, input {'x'.join(map(str, shape))}"
    else:
        raise CLIError("nothing to diagnose: give a TARGET with --input-shape, or --mlp DEPTH")

    _ev_threads(args.threads)
    if args.mlp is not None:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(args.seed))
    reports = {}
    with _ev_progress(len(schemes)) as progress:
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
        from .atomic import write_text

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


# ---------------------------------------------------------------------------- auto-plan: recommend, plan, init
_AP_FORMULAS = {
    "xavier": "std = gain * sqrt(2 / (fan_in + fan_out)), gain 1  (Glorot & Bengio 2010)",
    "he": "std = gain / sqrt(fan_in)  (He et al. 2015)",
    "lecun": "std = 1 / sqrt(fan_in)  (LeCun 1998; Klambauer et al. 2017 for SELU)",
}


def _add_recommend(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "recommend",
        help="the scheme, gains (both conventions) and formula for a layer feeding ACTIVATION",
        description="Show what initwise's standard policy gives a weight whose output feeds "
        "ACTIVATION: the scheme, the gain in the initwise convention (1/sqrt(E[phi(z)^2])) and in "
        "torch's calculate_gain convention, the formula, and the std for the given fans.",
    )
    p.add_argument("activation", metavar="ACTIVATION",
                   help="activation name: relu, leaky_relu, tanh, sigmoid, selu, gelu, silu, elu, "
                        "mish, softmax, none, ...")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="activation parameter, e.g. --param negative_slope=0.2 (repeatable)")
    p.add_argument("--fan-in", type=float_range(1, 1e12), default=256, help="fan-in for the example std, 1 to 1e12 (default 256; "
                   "may be fractional, as for a strided ConvTranspose)")
    p.add_argument("--fan-out", type=float_range(1, 1e12), default=256,
                   help="fan-out for the example std, 1 to 1e12 (default 256)")
    p.set_defaults(func=_cmd_recommend)


def _ap_params(activation: str, items: list[str]) -> dict:
    """Parse --param KEY=VALUE for ``activation``: the key must be one of the activation's
    parameters, the value a number (or, for a string parameter such as gelu's approximate, a
    string the activation accepts; the library checks it)."""
    from .gains import activation_params

    try:
        defaults = activation_params(activation)
    except ValueError:
        defaults = {}  # unknown names fail in recommend(), with the list of known ones
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise CLIError(f"--param must look like KEY=VALUE (e.g. negative_slope=0.2), got {item!r}")
        if key not in defaults:
            known = ", ".join(defaults) if defaults else "none"
            raise CLIError(f"--param {item!r}: activation {activation!r} has no parameter {key!r} "
                           f"(its parameters: {known})")
        if isinstance(defaults[key], str):
            out[key] = value
            continue
        try:
            out[key] = float_range(-1e30, 1e30)(value)
        except argparse.ArgumentTypeError as exc:
            raise CLIError(f"--param {item!r}: {key} {exc}") from None
    return out


def _cmd_recommend(args: argparse.Namespace) -> int:
    from .gains import gain
    from .policies.table import recommend

    params = _ap_params(args.activation, args.param)
    try:
        entry = recommend(args.activation, fan_in=args.fan_in, fan_out=args.fan_out, **params)
    except ValueError as exc:
        if not params or "bad parameters" not in str(exc):
            raise
        raise CLIError(f"--param {' '.join(args.param)}: {one_line(exc, 200)}") from None
    name = args.activation.strip().lower()
    lookup = "identity" if name in ("none", "linear") else name
    g_initwise = gain(lookup, **params)
    try:
        g_torch = f"{gain(lookup, convention='torch', **params):.6g}  (torch.nn.init.calculate_gain)"
    except ValueError:
        g_torch = "n/a  (torch.nn.init.calculate_gain has no value for it)"
    rows = [
        ("activation", entry.activation),
        ("scheme", f"{entry.scheme}  (family {entry.family})"),
        ("formula", _AP_FORMULAS[entry.family]),
        ("gain initwise", f"{g_initwise:.6g}  (1/sqrt(E[phi(z)^2]), z ~ N(0,1))"),
        ("gain torch", g_torch),
        ("gain used", f"{entry.gain:.6g}"),
        ("std", f"{entry.std:.6g}  for fan_in={entry.fan_in}, fan_out={entry.fan_out}"),
        ("why", entry.reason),
    ]
    for key, value in rows:
        print(f"{key:<14} {value}")
    return 0


def _ap_rules(items: list[str]) -> dict | None:
    from torch import nn

    rules: dict = {}
    for item in items:
        key, sep, value = item.rpartition("=")
        if not sep or not key.strip() or not value.strip():
            raise CLIError(f"--rule must look like KEY=SCHEME (e.g. 'head.*=zeros', 'type:LSTM=orthogonal', "
                           f"'activation:tanh=xavier_uniform'), got {item!r}")
        key = key.strip()
        if key.lower().startswith("type:"):
            cls = getattr(nn, key.split(":", 1)[1].strip(), None)
            if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
                raise CLIError(f"--rule {item!r}: {key.split(':', 1)[1]!r} is not a torch.nn layer type")
            key = cls
        rules[key] = value.strip()
    return rules or None


def _ap_add_plan_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", metavar="TARGET",
                   help="path/to/file.py:factory or package.module:factory returning an nn.Module")
    p.add_argument("--input-shape", metavar="SHAPE",
                   help="example input shape, comma-separated, e.g. 1,3,32,32: the forward pass is "
                        "recorded with it (default: the model's dummy_inputs, else an input guessed "
                        "from its first layers)")
    p.add_argument("--input-dtype", choices=("float", "long"), default="float",
                   help="dtype of the example input: float (randn) or long (token ids 0) (default float)")
    p.add_argument("--policy", default=None,
                   help="standard (per layer, from its activation), torch (PyTorch defaults), a recipe "
                        "(gpt2, torchtitan, olmo_mitchell, t_fixup, deepnorm, fixup, skipinit) or a "
                        "scheme name for every weight, e.g. he_normal (default standard)")
    p.add_argument("--distribution", default=None, choices=("normal", "uniform", "truncated_normal"),
                   help="distribution of the standard policy's choices (default normal)")
    p.add_argument("--residual", default=None, choices=("scaled", "zero", "none"),
                   help="residual branches of the standard policy: scaled so each stream at most doubles "
                        "in variance, zero (each block starts as the identity) or none (default scaled)")
    p.add_argument("--include-frozen", action="store_true",
                   help="also initialize tensors with requires_grad=False (kept by default)")
    p.add_argument("--rule", action="append", default=[], metavar="KEY=SCHEME",
                   help="override: 'GLOB=SCHEME', 'type:LSTM=SCHEME' or 'activation:NAME=SCHEME'; "
                        "SCHEME may be keep (repeatable)")
    p.add_argument("--json", metavar="PATH", help="also write the plan as JSON to PATH")
    p.add_argument("--plain", action="store_true", help="plain-text table (no rich formatting)")


def _ap_example(args: argparse.Namespace, model):
    """The example input of --input-shape (None without it), checked by one forward pass."""
    if args.input_shape is None:
        return None
    import torch

    shape = _input_shape(args.input_shape)
    if args.input_dtype == "long":
        x = torch.zeros(shape, dtype=torch.long)
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    _check_input(model, x, args.input_shape)
    return x


def _ap_print_plan(plan, plain: bool) -> None:
    if not sys.stdout.isatty():
        plain = True
    if not plain:
        try:
            from rich.console import Console
        except ImportError:
            plain = True
    if plain:
        print(plan.table(), end="")
    else:
        Console().print(plan)


def _add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plan",
        help="show the initialization plan of a model: scheme and reason for every parameter",
        description="Load TARGET, record its forward pass (with --input-shape, else its dummy_inputs or "
        "a guessed input, else module order), propagate the signal through it and print the plan: "
        "scheme, fans, gain, std and the reason for every parameter. Nothing is written.",
    )
    _ap_add_plan_args(p)
    p.set_defaults(func=_cmd_plan)


def _ap_reject(args: argparse.Namespace) -> None:
    if args.input_shape is None:
        reject(args, ("input_dtype",), "without --input-shape")
    else:
        _input_shape(args.input_shape)


def _cmd_plan(args: argparse.Namespace) -> int:
    from .api import load_target, plan

    _ap_reject(args)
    rules = _ap_rules(args.rule)
    model = load_target(args.target)
    p = plan(model, _ap_example(args, model), rules=rules, policy=args.policy or "standard",
             distribution=args.distribution or "normal", residual=args.residual or "scaled",
             include_frozen=args.include_frozen)
    _ap_print_plan(p, args.plain)
    if args.json:
        p.to_json(args.json)
        print(f"plan written to {args.json}")
    return 0


def _add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="initialize a model by its plan and save the weights (a state_dict)",
        description="Load TARGET, build its plan (or read one with --from-plan), initialize every "
        "parameter with --seed (all or nothing) and save the state_dict with torch.save.",
    )
    _ap_add_plan_args(p)
    p.add_argument("--save", metavar="PATH", required=True, help="where to write the state_dict (.pt)")
    p.add_argument("--seed", type=_SEED, default=None,
                   help="seed of the weights (default: the seed --from-plan's plan records, else 0)")
    p.add_argument("--from-plan", metavar="JSON",
                   help="apply this saved plan (plan --json) instead of building one; it fixes "
                        "every scheme, so --policy, --rule and --distribution cannot be combined "
                        "with it")
    p.add_argument("--quiet", action="store_true", help="do not print the plan")
    p.add_argument("--lsuv", action="store_true",
                   help="then LSUV (Mishkin & Matas 2016): rescale each layer, in data-flow order, to output "
                        "variance 1 +- 0.1 on the --input-shape batch (needs --input-shape)")
    p.set_defaults(func=_cmd_init)


def _ap_read_plan(path: str):
    """Read --from-plan JSON; a missing or invalid file is one line naming the option."""
    from .plan import Plan

    if not os.path.isfile(path):
        raise CLIError(f"--from-plan {path!r}: no such file (write one with "
                       "'initwise plan TARGET --json PATH')")
    try:
        return Plan.from_json(path)
    except Exception as exc:  # noqa: BLE001 - bad JSON, wrong keys, unreadable file
        raise CLIError(f"--from-plan {path!r} is not a plan written by 'initwise plan --json': "
                       f"{type(exc).__name__}: {one_line(exc, 200)}") from None


def _cmd_init(args: argparse.Namespace) -> int:
    from .api import finish, load_target, plan
    from .atomic import torch_save

    _ap_reject(args)
    if args.lsuv and args.input_shape is None:
        raise CLIError("--lsuv measures each layer's output on a batch: give --input-shape, batch first, e.g. "
                       "--input-shape 256,3,32,32")
    if args.from_plan:
        given = [opt for opt, used in (("--policy", args.policy is not None),
                                       ("--rule", bool(args.rule)),
                                       ("--distribution", args.distribution is not None),
                                       ("--residual", args.residual is not None),
                                       ("--include-frozen", args.include_frozen)) if used]
        if given:
            raise CLIError(f"--from-plan fixes the plan; drop {', '.join(given)} (or drop "
                           "--from-plan to build a new plan)")
        p = _ap_read_plan(args.from_plan)
        if p.seed is not None and args.seed is not None and args.seed != p.seed:
            raise CLIError(f"--seed {args.seed}: the plan {args.from_plan!r} records seed {p.seed}; drop "
                           "--seed to apply it with its own seed, or set \"seed\" in the file")
        seed = args.seed if args.seed is not None else (p.seed if p.seed is not None else 0)
        rules = None
    else:
        rules = _ap_rules(args.rule)
        seed = 0 if args.seed is None else args.seed
    model = load_target(args.target)
    example = _ap_example(args, model)
    if not args.from_plan:
        p = plan(model, example, rules=rules, policy=args.policy or "standard",
                 distribution=args.distribution or "normal", residual=args.residual or "scaled",
                 include_frozen=args.include_frozen)
    else:
        try:
            p.validate(model)
        except ValueError as exc:
            raise CLIError(f"--from-plan {args.from_plan!r} does not fit {args.target}: {one_line(exc, 300)}") from None
    if args.lsuv:
        from .lsuv import lsuv

        p = lsuv(model, example, plan=p, seed=seed)
    else:
        p = finish(model, p, example, seed=seed)
    if not args.quiet:
        _ap_print_plan(p, args.plain)
    if args.json:
        p.to_json(args.json)
    torch_save(model.state_dict(), args.save)
    written = sum(1 for e in p if e.scheme != "keep")
    print(f"initialized {written} of {len(p)} tensors (seed {seed}); state_dict written to {args.save}")
    return 0


# ------------------------------------------------------------------- subcommands end
# (add new subcommands above this line: an _add_<name> and a _cmd_<name>, then list
#  _add_<name> in _ADDERS below)

# in the order of the help text: choose, then measure, then show the evidence
_ADDERS = [_add_recommend, _add_plan, _add_init, _add_diagnose, _add_demo, _add_compare, _add_sweep,
           _add_claim]


def _version() -> str:
    import platform

    import torch

    from . import __version__

    return f"initwise {__version__} (torch {torch.__version__}, Python {platform.python_version()})"


class _UsageError(Exception):
    """An argparse error (unknown option, a number out of range), raised instead of exiting so
    that main() prints it as one line like every other error."""

    def __init__(self, prog: str, message: str):
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise _UsageError(self.prog, message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="initwise",
        description="The right initial weights for every layer of a PyTorch network.",
    )
    parser.add_argument("--version", action="version", version=_version(),
                        help="print the versions of initwise, torch and Python and exit")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _ADDERS:
        add(sub)
    # --debug is accepted after the subcommand too; default SUPPRESS so that a subcommand
    # without it does not reset the value given before the subcommand
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
    return parser


# Output options checked before any work starts: files must go into an existing folder and
# never replace an input (the TARGET's file, --from-plan) or another output; a report folder
# must be creatable (it is written whole, at the end).
_OUTPUT_FILES = ("save", "json", "plot")
_OUTPUT_DIRS = ("out",)


def _check_outputs(args: argparse.Namespace) -> None:
    inputs = {}
    source = target_file(getattr(args, "target", None))
    if source:
        inputs[f"the TARGET's file ({source})"] = source
    if isinstance(getattr(args, "from_plan", None), str):
        inputs["the --from-plan input"] = args.from_plan
    check_paths(args, _OUTPUT_FILES, _OUTPUT_DIRS, inputs)


_EXTRAS = ("rich", "matplotlib", "sklearn", "mnist1d")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status:
    0, 1 (a failure, e.g. of the user's model, or a claim not reproduced), 2 (an error in the
    arguments or a TARGET that does not load) or 130 (interrupted with Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = "initwise"
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        command = f"initwise {args.command}"
        args.given = given_options(build_parser, argv)
        return _run(args)
    except _UsageError as exc:
        print(f"{exc.prog}: error: {exc} (see '{exc.prog} --help')", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted (Ctrl-C); no file was written or changed", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except SystemExit as exc:  # raised by the user's code (argparse exits before this point)
        if args.debug:
            raise
        print(f"initwise {args.command}: error: the model's code called sys.exit({exc.code!r}) "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1
    except (CLIError, ValueError, TypeError, OSError, ImportError) as exc:
        if args.debug:
            raise
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name in _EXTRAS:
            hint = " (it comes with the extras: pip install 'initwise[full]')"
        print(f"initwise {args.command}: error: {one_line(exc, 300)}{hint}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - anything else (e.g. a model's RuntimeError): one line too
        if args.debug:
            raise
        print(f"initwise {args.command}: error: {type(exc).__name__}: {one_line(exc, 300)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
