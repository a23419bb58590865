"""The evidence subcommands: ``demo`` (the headline comparison), ``compare`` (one model per
scheme and seed on real data), ``sweep`` (the comparison across depths) and ``claim`` (the fixed
experiment behind one claim), with the ``_ev_*`` helpers they share (training options, their
checks, the comparison table)."""
from __future__ import annotations

import argparse
import os

from .common import (
    BATCH,
    DEPTH,
    SEED,
    SEEDS,
    STEPS,
    THREADS,
    WIDTH,
    mlp_size,
    progress_bar,
    set_threads,
)
from .options import CLIError, float_range, int_range, reject


# ---------------------------------------------------------------------------- demo
def add_demo(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--seeds", type=SEEDS, default=3, help="seeds per scheme, 1 to 100 (default 3)")
    p.add_argument("--steps", type=STEPS, default=500, help="training steps per run (default 500)")
    p.add_argument("--threads", type=THREADS, default=1,
                   help="torch CPU threads (default 1: small matmuls gain nothing from more)")
    p.add_argument("--profile", action="store_true",
                   help="only print the depth profile (no training)")
    p.add_argument("--no-profile", action="store_true", help="skip the depth profile")
    p.add_argument("--depth", type=DEPTH, default=50,
                   help="depth-profile MLP: number of Linear layers, 1 to 1000 (default 50)")
    p.add_argument("--width", type=WIDTH, default=256,
                   help="depth-profile MLP: units per layer, 1 to 8192 (default 256)")
    p.add_argument("--batch", type=BATCH, default=512,
                   help="depth-profile batch size, 2 to 65536 (default 512)")
    p.add_argument("--seed", type=SEED, default=0, help="depth-profile random seed (default 0)")
    p.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.profile and args.no_profile:
        raise CLIError("--profile and --no-profile exclude each other")
    if args.no_profile:
        reject(args, ("depth", "width", "batch", "seed"), "with --no-profile (they set the depth profile)")
    if args.profile:
        reject(args, ("out", "seeds", "steps"), "with --profile (it trains nothing)")
    mlp_size(args.depth, args.width, args.batch, f"--depth {args.depth} --width {args.width} --batch {args.batch}")
    set_threads(args.threads)
    if not args.no_profile:
        from ..depthprofile import DEMO_SCHEMES, depth_profile, format_profile

        for activation in ("relu", "tanh"):
            rows = depth_profile(
                activation, DEMO_SCHEMES, depth=args.depth, width=args.width,
                batch=args.batch, seed=args.seed,
            )
            print(format_profile(rows, activation, depth=args.depth, width=args.width))
            print()
    if args.profile:
        return 0
    from ..experiments.compare import DEFAULT_SCHEMES, compare, total_steps
    from ..experiments.training import TrainConfig

    set_threads(args.threads)
    _ev_counts(args)
    config = TrainConfig(steps=args.steps)
    print(f"Headline: 30-layer ReLU MLP (width 128) on digits, {args.seeds} seed(s) x "
          f"{len(DEFAULT_SCHEMES)} schemes, {config.optimizer.upper()} momentum {config.momentum} "
          f"lr {config.lr}, batch {config.batch_size}, {config.steps} steps each")
    with progress_bar(total_steps(len(DEFAULT_SCHEMES), args.seeds, args.steps)) as progress:
        comp = compare("digits", "mlp", depth=30, width=128, activation="relu",
                       schemes=DEFAULT_SCHEMES, seeds=args.seeds, config=config,
                       progress=progress)
    _ev_print_comparison(comp)
    paths = comp.write(args.out)
    print(f"wrote {', '.join(paths.values())} ({comp.wall_time:.0f} s of training)")
    return 0


# ---------------------------------------------------------------------------- evidence helpers
def _ev_csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CLIError(f"{what} is empty; give a comma-separated list")
    return items


def _ev_ints(text: str, what: str, lo: int = 1, hi: int = 1000) -> list[int]:
    try:
        return [DEPTH(t) if (lo, hi) == (1, 1000) else int_range(lo, hi)(t) for t in _ev_csv(text, what)]
    except argparse.ArgumentTypeError as exc:
        raise CLIError(f"{what} must be comma-separated integers from {lo} to {hi}, got {text!r} ({exc})") from None


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
    from ..experiments.compare import check_config

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
    p.add_argument("--width", type=WIDTH, default=None,
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
    p.add_argument("--seeds", type=SEEDS, default=seeds,
                   help=f"number of seeds 0..N-1 per scheme, 1 to 100 (default {seeds})")
    p.add_argument("--steps", type=STEPS, default=500, help="training steps per run (default 500)")
    p.add_argument("--batch-size", type=int_range(1, 65536), default=64, help="mini-batch size (default 64)")
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"],
                   help="optimizer (default sgd)")
    p.add_argument("--lr", type=float_range(0, 1e6, lo_open=True), default=0.001,
                   help="learning rate, > 0 (default 0.001)")
    p.add_argument("--momentum", type=float_range(0, 1, hi_open=True), default=0.9,
                   help="SGD momentum, in [0, 1) (default 0.9)")
    p.add_argument("--clip", type=float_range(0, 1e30, lo_open=True), default=None,
                   help="clip the gradient norm to this value (default: no clipping)")
    p.add_argument("--eval-every", type=STEPS, default=25,
                   help="measure test accuracy every N steps (default 25)")
    p.add_argument("--seq-mode", default="pixel", choices=["pixel", "row"],
                   help="recurrent archs: one pixel per step (64 steps on digits) or one row "
                   "per step (8 steps) (default pixel)")
    p.add_argument("--threads", type=THREADS, default=1, help="torch CPU threads (default 1)")
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
    from ..experiments.training import TrainConfig

    return TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                       momentum=args.momentum, optimizer=args.optimizer, clip=args.clip,
                       eval_every=args.eval_every)


# ---------------------------------------------------------------------------- compare
def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="train one model per init scheme and seed on real data and compare them",
        description="Train the same model from each initialization scheme, with the same data "
        "order, optimizer, learning rate and budget per seed; print test accuracy (mean ± std "
        "over seeds), final loss, steps to 90% of the best accuracy and diverged runs.",
    )
    p.add_argument("--depth", type=DEPTH, default=None,
                   help="weight layers including the classifier, 1 to 1000 (default 30 for mlp, 10 for "
                   "cnn, 2 (one recurrent layer) for rnn/lstm/gru)")
    _ev_add_training_args(p, schemes="torch,zeros,small,xavier,he,lecun,orthogonal,auto",
                          seeds=3)
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from ..experiments.compare import compare, total_steps

    _ev_reject(args)
    depth0, width0 = _EV_ARCH_DEFAULTS[args.arch]
    depth = args.depth if args.depth is not None else depth0
    width = args.width if args.width is not None else width0
    if args.arch == "mlp":
        mlp_size(depth, width, args.batch_size, f"--depth {depth} --width {width}")
    set_threads(args.threads)
    schemes = _ev_check(args, [depth], width, _ev_csv(args.schemes, "--schemes"))
    config = _ev_config(args)
    with progress_bar(total_steps(len(schemes), args.seeds, args.steps)) as progress:
        comp = compare(args.dataset, args.arch, depth=depth, width=width,
                       activation=_ev_activation(args), schemes=schemes, seeds=args.seeds,
                       config=config, seq_mode=args.seq_mode, progress=progress)
    _ev_print_comparison(comp)
    if args.out:
        paths = comp.write(args.out)
        print(f"wrote {', '.join(paths.values())}")
    return 0


# ---------------------------------------------------------------------------- sweep
def add_sweep(sub: argparse._SubParsersAction) -> None:
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
    from ..experiments.compare import sweep, total_steps

    _ev_reject(args)
    depths = _ev_ints(args.depths, "--depths")
    width = args.width if args.width is not None else _EV_ARCH_DEFAULTS[args.arch][1]
    if args.arch == "mlp":
        mlp_size(max(depths), width, args.batch_size, f"--depths {args.depths} --width {width}")
    set_threads(args.threads)
    schemes = _ev_check(args, depths, width, _ev_csv(args.schemes, "--schemes"))
    total = total_steps(len(schemes), args.seeds, args.steps, len(depths))
    with progress_bar(total) as progress:
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
def add_claim(sub: argparse._SubParsersAction) -> None:
    from ..experiments.claims import CLAIMS

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
    p.add_argument("--seeds", type=SEEDS, default=3, help="seeds per scheme, 1 to 100 (default 3)")
    p.add_argument("--steps", type=STEPS, default=None,
                   help="training steps per run (default: the claim's own budget)")
    p.add_argument("--threads", type=THREADS, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write the report files (one subfolder per claim) to DIR")
    p.set_defaults(func=_cmd_claim)


def _cmd_claim(args: argparse.Namespace) -> int:
    from ..experiments.claims import CLAIM_STEPS, CLAIMS, UNTRAINED, run_claim
    from ..experiments.compare import total_steps

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
    set_threads(args.threads)
    status = 0
    for name in names:
        n_schemes, default_steps = CLAIM_STEPS[name]
        steps = None if name in UNTRAINED else args.steps
        total = total_steps(n_schemes, args.seeds, steps or default_steps)
        with progress_bar(total) as progress:
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
