"""Head-to-head: initwise against torch's default, AnyInit and lsuv, side by side.

    python benchmarks/peers.py                      # every case x every method x 3 seeds
    python benchmarks/peers.py --quick              # smoke run: 1 seed, 1/10 of the steps
    python benchmarks/peers.py --cases gelu30 resmlp50 --seeds 5 --methods initwise lsuv

Every method initializes the SAME model (built by the same builder under the run's seed, so
torch's default is reproducible), then the SAME loop trains it: same data, data order
(a generator seeded with the seed), optimizer, learning rate, batch size and number of steps.
Only the initialization differs. Data-driven methods get the same batch: 256 training
examples picked by a fixed permutation, in the layout the model takes.

Methods are a small registry, ``METHODS: name -> init(model, batch, seed)``; add a row with
``@method("name")`` (or ``METHODS["name"] = fn``). A method whose package or function is
missing raises :class:`Unavailable` and its row is skipped with the reason printed; a method
that refuses a model (a recipe whose assumptions do not hold) is recorded as "n/a" with its
error in that cell.

Learning rates were fixed per case before any method was run, by convention, not tuned:
SGD with momentum 0.9, lr 1e-3, batch 64, 500 steps for the MLPs and convolutional/residual
nets (initwise's TrainConfig default, picked by benchmarks/lr_grid.py on He init for a 30-layer
ReLU MLP, before any competitor was installed); Adam lr 1e-3 (PyTorch's and Keras' default)
for the LSTM and the transformer, where SGD is not what anyone uses; for the SiLU regression,
AnyInit's own headline setting (Adam lr 1e-3, 400 full-batch steps, best loss reported).

Output: ``benchmarks/results/peers/peers.json`` (settings, every run, summary) and
``peers.md`` (the table: mean and [min, max] over seeds), each written atomically.
Needs the optional extra ``pip install 'initwise[peers]'`` (anyinit, lsuv) for those rows.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

if __package__ in (None, ""):  # run as a script from the repository root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import initwise  # noqa: E402
from initwise.experiments.datasets import load_dataset  # noqa: E402
from initwise.experiments.models import (  # noqa: E402
    ConvResNet,
    ResidualMLP,
    SequenceClassifier,
    TransformerClassifier,
    mlp,
)
from initwise.experiments.training import seeded  # noqa: E402

#: number of training examples handed to data-driven methods (lsuv, AnyInit's input moments)
INIT_BATCH = 256
DEFAULT_OUT = os.path.join("benchmarks", "results", "peers")


# ---------------------------------------------------------------------------- data
@dataclass(frozen=True)
class TaskData:
    """Inputs already in the model's layout; ``task`` is "classify" (int64 labels, metric: final
    test accuracy) or "regress" (float targets (n, 1), metric: best full-batch training MSE)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task: str


def digits(layout: str = "flat") -> TaskData:
    """scikit-learn digits (standardized, fixed split): "flat" (n, 64), "image" (n, 1, 8, 8),
    "rows" (n, 8, 8): 8 steps of one image row each."""
    d = load_dataset("digits")
    shape = {"flat": (64,), "image": (1, 8, 8), "rows": (8, 8)}[layout]
    return TaskData(d.x_train.reshape(-1, *shape), d.y_train, d.x_test.reshape(-1, *shape),
                    d.y_test, "classify")


def wave_grid(points: int = 32) -> TaskData:
    """sin(3x) cos(3y) on a fixed ``points x points`` grid of [-2, 2]^2 (AnyInit's headline
    target; inputs left unstandardized as there); test points: the midpoints between them."""
    axis = torch.linspace(-2.0, 2.0, points)
    mid = (axis[:-1] + axis[1:]) / 2

    def grid(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xx, yy = torch.meshgrid(a, a, indexing="ij")
        x = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
        return x, (torch.sin(3 * x[:, :1]) * torch.cos(3 * x[:, 1:]))

    x_tr, y_tr = grid(axis)
    x_te, y_te = grid(mid)
    return TaskData(x_tr, y_tr, x_te, y_te, "regress")


# ---------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One model + data + training recipe. ``build()`` is called under the run's seed."""

    name: str
    description: str
    build: Callable[[], nn.Module]
    data: Callable[[], TaskData]
    optimizer: str = "sgd"
    lr: float = 1e-3
    steps: int = 500
    batch_size: int | None = 64   # None: full batch

    def recipe(self) -> str:
        batch = "full batch" if self.batch_size is None else f"batch {self.batch_size}"
        opt = "SGD momentum 0.9" if self.optimizer == "sgd" else "Adam"
        return f"{opt}, lr {self.lr:g}, {batch}, {self.steps} steps"


def mlp_case(name: str, activation: str, depth: int, width: int = 128) -> Case:
    return Case(name, f"{depth}-layer {activation} MLP, width {width}, digits",
                lambda: mlp(64, 10, depth=depth, width=width, activation=activation),
                digits)


CASES: dict[str, Case] = {c.name: c for c in [
    mlp_case("gelu30", "gelu", 30),
    Case("silu30_reg", "30-layer SiLU MLP, width 128, regression of sin(3x)cos(3y) on a 32x32 "
         "grid (best training MSE)",
         lambda: mlp(2, 1, depth=30, width=128, activation="silu"), wave_grid,
         optimizer="adam", lr=1e-3, steps=400, batch_size=None),
    Case("resmlp50", "50-block residual MLP x + fc2(relu(fc1 x)), width 128, no normalization",
         lambda: ResidualMLP(64, 10, blocks=50, width=128, activation="relu"), digits),
    mlp_case("relu30", "relu", 30),
    mlp_case("tanh50", "tanh", 50),
    mlp_case("selu32", "selu", 32),
    Case("resnet_conv", "ResNet without BatchNorm, 8 pre-activation blocks of 16 channels, "
         "digits as 8x8 images",
         lambda: ConvResNet((1, 8, 8), 10, blocks=8, channels=16), lambda: digits("image")),
    Case("lstm", "2-layer LSTM, 64 hidden, digits read as 8 rows of 8 pixels",
         lambda: SequenceClassifier(8, 10, cell="lstm", hidden=64, num_layers=2),
         lambda: digits("rows"), optimizer="adam"),
    Case("transformer", "4-layer pre-norm transformer encoder, d_model 64, 4 heads, digits as "
         "8 row tokens",
         lambda: TransformerClassifier(8, 8, 10, d_model=64, heads=4, layers=4),
         lambda: digits("rows"), optimizer="adam"),
]}


# ---------------------------------------------------------------------------- methods
class Unavailable(Exception):
    """A method cannot run in this environment (package or function missing): skip its row."""


InitFn = Callable[[nn.Module, torch.Tensor, int], object]
METHODS: dict[str, InitFn] = {}


def method(name: str) -> Callable[[InitFn], InitFn]:
    """Register ``fn(model, batch, seed)`` (initializes ``model`` in place) as row ``name``."""
    def register(fn: InitFn) -> InitFn:
        METHODS[name] = fn
        return fn
    return register


@method("torch")
def torch_default(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    """PyTorch's default initialization, as the model was built (under the run's seed)."""


@method("initwise")
def initwise_default(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    """initwise's default plan: ``initwise.init(model, batch, seed=seed)`` (batch for tracing)."""
    initwise.init(model, batch, seed=seed)


@method("anyinit")
def anyinit_default(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    """AnyInit's one call, as its README and examples use it: ``anyinit.initialize(model,
    input_spec=batch, seed=seed)`` (analytic mode, input moments read from the batch)."""
    try:
        import anyinit
    except ImportError:
        raise Unavailable("anyinit is not installed (pip install 'initwise[peers]')") from None
    anyinit.initialize(model, input_spec=batch, seed=seed)


@method("lsuv")
def lsuv_default(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    """The ``lsuv`` package (Mishkin & Matas 2016): orthonormal init then per-layer output std
    1 on the batch. It takes no seed and draws from torch's global generator, which the harness
    seeds around every init call."""
    try:
        import lsuv
    except ImportError:
        raise Unavailable("lsuv is not installed (pip install 'initwise[peers]')") from None
    lsuv.lsuv_with_singlebatch(model, batch, verbose=False)


@method("initwise.lsuv")
def initwise_lsuv(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    """initwise's data-driven refinement on top of its plan (issue 11)."""
    fn = getattr(initwise, "lsuv", None)
    if fn is None:
        raise Unavailable("initwise.lsuv does not exist yet")
    fn(model, batch, seed=seed)


def _policy_method(policy: str) -> InitFn:
    def run(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
        try:
            from initwise.policies import normalize_policy
            normalize_policy(policy)
        except ImportError:
            pass  # the planner moved; let init say whether it knows the policy
        except (KeyError, ValueError) as exc:
            first = str(exc).split("(")[0].strip() or type(exc).__name__
            raise Unavailable(f"initwise has no policy {policy!r} yet: {first}") from None
        initwise.init(model, batch, policy=policy, seed=seed)
    run.__doc__ = f"``initwise.init(model, batch, policy={policy!r}, seed=seed)``"
    return run


for _policy in ("gpt2", "torchtitan", "olmo_mitchell", "t_fixup", "deepnorm", "fixup",
                "skipinit"):
    METHODS[f"initwise:{_policy}"] = _policy_method(_policy)


# ---------------------------------------------------------------------------- training
def _optimizer(model: nn.Module, case: Case) -> torch.optim.Optimizer:
    if case.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=case.lr)
    return torch.optim.SGD(model.parameters(), lr=case.lr, momentum=0.9)


def _loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    if task == "regress":
        return (out - y).pow(2).mean()
    return nn.functional.cross_entropy(out, y)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str) -> float:
    """Test accuracy (classify; non-finite logits count as wrong) or test MSE (regress)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    finally:
        model.train(was)
    if task == "regress":
        value = float((out - y).pow(2).mean())
        return value if math.isfinite(value) else float("inf")
    finite = torch.isfinite(out).all(dim=1)
    return float(((out.argmax(dim=1) == y) & finite).float().mean())


def train_case(model: nn.Module, case: Case, data: TaskData, seed: int,
               steps: int | None = None) -> dict:
    """Train ``model`` with ``case``'s recipe; mini-batches from a generator seeded by ``seed``.

    Returns ``metric`` (classify: final test accuracy; regress: best full-batch training MSE
    over the steps), ``init_loss`` (first batch, before any update), ``final_train_loss``,
    ``test`` (accuracy or MSE on the test split after training) and ``diverged``.
    """
    steps = case.steps if steps is None else steps
    opt = _optimizer(model, case)
    gen = torch.Generator().manual_seed(seed)
    n = data.x_train.shape[0]
    bs = n if case.batch_size is None else min(case.batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    best, last, init_loss, diverged = float("inf"), float("nan"), float("nan"), False
    model.train()
    for step in range(steps):
        if bs == n:
            idx = None
        else:
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx, pos = perm[pos:pos + bs], pos + bs
        xb = data.x_train if idx is None else data.x_train[idx]
        yb = data.y_train if idx is None else data.y_train[idx]
        opt.zero_grad(set_to_none=True)
        loss = _loss(model(xb), yb, data.task)
        value = float(loss.detach())
        if step == 0:
            init_loss = value
        if not math.isfinite(value):
            diverged = True
            break
        best, last = min(best, value), value
        loss.backward()
        opt.step()
    test = evaluate(model, data.x_test, data.y_test, data.task)
    if data.task == "regress":
        metric = best if not diverged else float("inf")
    else:
        metric = test
    return {"metric": metric, "init_loss": init_loss, "final_train_loss": last,
            "test": test, "diverged": diverged}


def init_batch(data: TaskData) -> torch.Tensor:
    """The batch every data-driven method gets: ``INIT_BATCH`` training examples drawn by a
    fixed permutation (seed 0), the same for every method and seed (the regression grid is
    ordered, so its first rows would not be representative)."""
    n = data.x_train.shape[0]
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:INIT_BATCH]
    return data.x_train[idx]


def run_one(case: Case, method_name: str, seed: int, data: TaskData,
            steps: int | None = None, init: InitFn | None = None,
            after_init: Callable[[nn.Module, torch.Tensor], dict] | None = None) -> dict:
    """Build ``case``'s model under ``seed``, initialize it with ``method_name`` (or ``init``),
    train it. ``status`` is "ok", "n/a" (the method refused this model: ``error`` says why) or
    raises :class:`Unavailable`. ``after_init(model, batch)``, if given, measures the model
    right after initialization; its dict is stored under ``"diag"``."""
    init = METHODS[method_name] if init is None else init
    with seeded(seed):
        model = case.build()
    batch = init_batch(data)
    start = time.perf_counter()
    try:
        with seeded(10_000 + seed):  # methods that draw from torch's global generator
            init(model, batch, seed)
    except Unavailable:
        raise
    except Exception as exc:  # noqa: BLE001 - a refusal is a result, recorded in the table
        return {"case": case.name, "method": method_name, "seed": seed, "status": "n/a",
                "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                if str(exc) else type(exc).__name__}
    init_time = time.perf_counter() - start
    diag = after_init(model, batch) if after_init is not None else None
    start = time.perf_counter()
    result = train_case(model, case, data, seed, steps)
    if diag is not None:
        result["diag"] = diag
    result.update(case=case.name, method=method_name, seed=seed, status="ok",
                  init_time=init_time, train_time=time.perf_counter() - start)
    return result


# ---------------------------------------------------------------------------- summary
def summarize(runs: list[dict]) -> dict:
    """{case: {method: {"mean", "min", "max", "n", "diverged", "status", "error"}}}."""
    out: dict = {}
    for r in runs:
        cell = out.setdefault(r["case"], {}).setdefault(
            r["method"], {"values": [], "diverged": 0, "status": "ok", "error": None})
        if r["status"] != "ok":
            cell["status"], cell["error"] = r["status"], r.get("error")
            continue
        cell["values"].append(r["metric"])
        cell["diverged"] += int(r["diverged"])
    for methods in out.values():
        for cell in methods.values():
            v = cell.pop("values")
            cell["n"] = len(v)
            if v:
                finite = [x for x in v if math.isfinite(x)]
                cell["mean"] = statistics.fmean(v) if len(finite) == len(v) else float("inf")
                cell["min"], cell["max"] = min(v), max(v)
    return out


def _fmt(x: float, task: str) -> str:
    if not math.isfinite(x):
        return "inf"
    return f"{x:.2e}" if task == "regress" else f"{x:.3f}"


def to_markdown(summary: dict, cases: list[Case], methods: list[str], tasks: dict[str, str]
                ) -> str:
    """One row per case, one column per method: ``mean [min, max]``; the best mean in bold
    (highest accuracy, lowest loss)."""
    lines = ["| case | metric | " + " | ".join(methods) + " |",
             "|---|---|" + "---|" * len(methods)]
    for case in cases:
        row = summary.get(case.name, {})
        task = tasks[case.name]
        means = {m: row[m]["mean"] for m in methods if m in row and "mean" in row[m]}
        best = (min if task == "regress" else max)(means.values()) if means else None
        cells = []
        for m in methods:
            cell = row.get(m)
            if cell is None:
                cells.append("")
            elif cell["status"] != "ok":
                cells.append(f"n/a ({cell['error']})"[:80])
            else:
                text = (f"{_fmt(cell['mean'], task)} [{_fmt(cell['min'], task)}, "
                        f"{_fmt(cell['max'], task)}]")
                if cell["diverged"]:
                    text += f" ({cell['diverged']} diverged)"
                cells.append(f"**{text}**" if cell["mean"] == best else text)
        metric = "best train MSE (lower)" if task == "regress" else "test acc"
        lines.append(f"| {case.name} | {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_atomic(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder + os.replace."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    return obj


def _versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__,
           "initwise": getattr(initwise, "__version__", "?"), "machine": platform.machine()}
    for name in ("anyinit", "lsuv"):
        try:
            from importlib.metadata import version
            out[name] = version(name)
        except Exception:  # noqa: BLE001
            out[name] = None
    return out


# ---------------------------------------------------------------------------- driver
def run_benchmark(cases: list[Case], methods: list[str], seeds: list[int], *,
                  steps_scale: float = 1.0, log: Callable[[str], None] = print,
                  registry: dict[str, InitFn] | None = None,
                  after_init: Callable[[nn.Module, torch.Tensor], dict] | None = None
                  ) -> tuple[list[dict], list[str]]:
    """Every case x method x seed; returns (runs, methods that ran). Prints one line per run."""
    registry = METHODS if registry is None else registry
    runs: list[dict] = []
    skipped: dict[str, str] = {}
    total = len(cases) * len(methods) * len(seeds)
    done = 0
    t0 = time.perf_counter()
    for case in cases:
        data = case.data()
        steps = max(1, int(round(case.steps * steps_scale)))
        for name in methods:
            if name in skipped:
                done += len(seeds)
                continue
            for seed in seeds:
                done += 1
                try:
                    r = run_one(case, name, seed, data, steps, init=registry[name],
                                after_init=after_init)
                except Unavailable as exc:
                    skipped[name] = str(exc)
                    log(f"skip {name}: {exc}")
                    done += len(seeds) - seeds.index(seed) - 1
                    break
                runs.append(r)
                if r["status"] == "ok":
                    tail = (f"{'best mse' if data.task == 'regress' else 'acc'} "
                            f"{_fmt(r['metric'], data.task)}  init loss "
                            f"{r['init_loss']:.3g}{'  DIVERGED' if r['diverged'] else ''}  "
                            f"({r['init_time']:.1f}+{r['train_time']:.1f}s)")
                else:
                    tail = f"n/a: {r['error']}"
                log(f"[{done:>3}/{total}] {time.perf_counter() - t0:6.0f}s  {case.name:<12} "
                    f"{name:<16} seed {seed}  {tail}")
    return runs, [m for m in methods if m not in skipped]


def _merged(out: str, runs: list[dict], ran: list[str], cases: list[Case], seeds: list[int]
            ) -> tuple[list[dict], list[str], list[Case], list[str]]:
    """``runs`` in place of the same (case, method) runs of ``out/peers.json``; the methods and
    cases of both, in the registry's order; the earlier commands."""
    path = os.path.join(out, "peers.json")
    if not os.path.isfile(path):
        raise SystemExit(f"--update: {path} does not exist; run without --update first")
    with open(path) as f:
        old = json.load(f)
    if old["settings"]["seeds"] != seeds:
        raise SystemExit(f"--update: {path} has seeds {old['settings']['seeds']}, this run {seeds}")
    new = {(r["case"], r["method"]) for r in runs}
    kept = [r for r in old["runs"] if (r["case"], r["method"]) not in new]
    methods = {r["method"] for r in kept} | set(ran)
    names = {r["case"] for r in kept} | {c.name for c in cases}
    return (kept + runs, [m for m in METHODS if m in methods], [c for c in CASES.values() if c.name in names],
            old["settings"]["command"].split("; then "))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="initwise vs torch's default vs AnyInit vs lsuv: same models, data, loop, "
                    "optimizer, lr and seeds; only the initialization differs.")
    parser.add_argument("--cases", nargs="+", default=list(CASES), metavar="CASE",
                        help=f"cases to run (default all): {', '.join(CASES)}")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), metavar="METHOD",
                        help=f"methods (default all; missing ones are skipped with the reason): "
                             f"{', '.join(METHODS)}")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds 0..N-1 (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 1 seed and 1/10 of each case's steps (not evidence)")
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT}); --quick writes nothing "
                             f"unless --out is given")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--update", action="store_true",
                        help="replace only the runs of --methods x --cases in an existing "
                             "OUT/peers.json and keep the others as they were measured")
    args = parser.parse_args(argv)
    bad = [c for c in args.cases if c not in CASES] + [m for m in args.methods
                                                         if m not in METHODS]
    if bad:
        parser.error(f"unknown case/method {', '.join(bad)}; cases: {', '.join(CASES)}; "
                     f"methods: {', '.join(METHODS)}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    torch.set_num_threads(args.threads)
    seeds = [0] if args.quick else list(range(args.seeds))
    cases = [CASES[c] for c in args.cases]
    start = time.perf_counter()
    runs, ran = run_benchmark(cases, args.methods, seeds,
                              steps_scale=0.1 if args.quick else 1.0)
    commands = []
    if args.update:
        runs, ran, cases, commands = _merged(args.out, runs, ran, cases, seeds)
    summary = summarize(runs)
    tasks = {c.name: c.data().task for c in cases}
    table = to_markdown(summary, cases, ran, tasks)
    print()
    print(table)
    quick_default = args.quick and "--out" not in (argv if argv is not None else sys.argv)
    if quick_default:
        return 0
    settings = {
        "command": "; then ".join([*commands, "python benchmarks/peers.py " + " ".join(
            sys.argv[1:] if argv is None else argv)]),
        "seeds": seeds, "quick": args.quick, "init_batch": INIT_BATCH,
        "cases": {c.name: {"description": c.description, "recipe": c.recipe()} for c in cases},
        "methods": {m: (METHODS[m].__doc__ or "").strip().split("\n\n")[0] for m in ran},
        "versions": _versions(), "threads": args.threads,
        "wall_time_s": round(time.perf_counter() - start, 1),
    }
    md = ["# initwise vs peers: same model, data, loop, lr and seeds", "",
          f"Command: `{settings['command']}`  ", f"Seeds: {seeds}; wall time "
          f"{settings['wall_time_s']:.0f} s on {args.threads} thread(s); versions: "
          f"{json.dumps(settings['versions'])}", "",
          "Cell: mean [min, max] over seeds; bold = best mean of the row. Accuracy: final test "
          "accuracy on the held-out digits split (450 images); regression: best full-batch "
          "training MSE.", "", table, "## Cases", ""]
    md += [f"- **{c.name}**: {c.description}. {c.recipe()}." for c in cases]
    md += ["", "## Methods", ""] + [f"- **{m}**: {settings['methods'][m]}" for m in ran]
    write_atomic(os.path.join(args.out, "peers.json"),
                 json.dumps(_json_safe({"settings": settings, "summary": summary,
                                        "runs": runs}), indent=1))
    write_atomic(os.path.join(args.out, "peers.md"), "\n".join(md) + "\n")
    print(f"wrote {args.out}/peers.json and peers.md")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # pragma: no cover
        traceback.print_exc()
        sys.exit(1)
