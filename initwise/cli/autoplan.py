"""The auto-plan subcommands: ``recommend`` (the scheme and gains for one activation), ``plan``
(a model's initialization plan) and ``init`` (apply it and save the weights), with their
``_ap_*`` helpers (activation parameters, rules, the example input, reading a saved plan)."""
from __future__ import annotations

import argparse
import os
import sys

from ..discover import one_line
from .common import SEED, check_input
from .options import CLIError, float_range, parse_shape, reject

_AP_FORMULAS = {
    "xavier": "std = gain * sqrt(2 / (fan_in + fan_out)), gain 1  (Glorot & Bengio 2010)",
    "he": "std = gain / sqrt(fan_in)  (He et al. 2015)",
    "lecun": "std = 1 / sqrt(fan_in)  (LeCun 1998; Klambauer et al. 2017 for SELU)",
}


def add_recommend(sub: argparse._SubParsersAction) -> None:
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
    from ..gains import activation_params

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
    from ..gains import gain
    from ..policies.table import recommend

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

    shape = parse_shape(args.input_shape)
    if args.input_dtype == "long":
        x = torch.zeros(shape, dtype=torch.long)
    else:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    check_input(model, x, args.input_shape)
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


def add_plan(sub: argparse._SubParsersAction) -> None:
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
        parse_shape(args.input_shape)


def _cmd_plan(args: argparse.Namespace) -> int:
    from ..api import load_target, plan

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


def add_init(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "init",
        help="initialize a model by its plan and save the weights (a state_dict)",
        description="Load TARGET, build its plan (or read one with --from-plan), initialize every "
        "parameter with --seed (all or nothing) and save the state_dict with torch.save.",
    )
    _ap_add_plan_args(p)
    p.add_argument("--save", metavar="PATH", required=True, help="where to write the state_dict (.pt)")
    p.add_argument("--seed", type=SEED, default=None,
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
    from ..plan import Plan

    if not os.path.isfile(path):
        raise CLIError(f"--from-plan {path!r}: no such file (write one with "
                       "'initwise plan TARGET --json PATH')")
    try:
        return Plan.from_json(path)
    except Exception as exc:  # noqa: BLE001 - bad JSON, wrong keys, unreadable file
        raise CLIError(f"--from-plan {path!r} is not a plan written by 'initwise plan --json': "
                       f"{type(exc).__name__}: {one_line(exc, 200)}") from None


def _cmd_init(args: argparse.Namespace) -> int:
    from ..api import finish, load_target, plan
    from ..atomic import torch_save

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
        from ..lsuv import lsuv

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
