"""Compare initialization schemes by training, and sweep the comparison over depth.

``compare(...)`` trains one model per (scheme, seed) with the same data order, optimizer,
learning rate and budget per seed, and returns a :class:`TrainingComparison`; ``sweep(...)`` repeats it
for several depths and returns a :class:`Sweep`. Both write a report folder with ``write(dir)``:
``results.json`` (settings + every run), ``results.csv`` (one row per run), a PNG plot and
``summary.md`` (the table in Markdown).
"""
from __future__ import annotations

import csv
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from ..atomic import atomic_open, relocate, savefig, staged_folder, write_text
from .datasets import load_dataset
from .models import build_model, check_model, model_inputs
from .training import RunResult, TrainConfig, apply_experiment_scheme, check_scheme, seeded, train

DEFAULT_SCHEMES: tuple[str, ...] = (
    "torch", "zeros", "small", "xavier", "he", "lecun", "orthogonal", "auto",
)

#: "steps to target" uses this fraction of the best test accuracy reached by any run
TARGET_FRACTION = 0.9

#: progress(advance, description): ``advance`` training steps were just completed
Progress = Callable[[int, str], None]


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError("seeds must be a count or a list of ints, got a bool")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1, got {seeds}")
        return list(range(seeds))
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds is empty; give a count (e.g. 3) or a list of seeds")
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, spec)


def _environment() -> dict:
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }


@dataclass
class TrainingComparison:
    """The runs of one training comparison and the settings that produced them.

    (Not to be confused with :class:`initwise.Comparison`, the side-by-side diagnostics at
    initialization of :func:`initwise.compare_schemes`.)
    """

    settings: dict
    runs: list[RunResult] = field(default_factory=list)
    wall_time: float = 0.0

    @property
    def schemes(self) -> list[str]:
        return list(self.settings["schemes"])

    def runs_of(self, scheme: str) -> list[RunResult]:
        """The runs of ``scheme``, one per seed, in seed order (empty for an unknown name)."""
        return [r for r in self.runs if r.scheme == scheme]

    def target_accuracy(self) -> float:
        """:data:`TARGET_FRACTION` x the best test accuracy reached by any run at any sample."""
        best = [r.best_test_acc for r in self.runs if math.isfinite(r.best_test_acc)]
        return TARGET_FRACTION * max(best) if best else float("nan")

    def summary(self) -> list[dict]:
        """One row per scheme: test accuracy mean/std over seeds (sample std), final training
        loss mean over non-diverged runs, mean steps to the target accuracy over the runs that
        reached it (and how many did), diverged runs, largest final hidden row spread."""
        target = self.target_accuracy()
        rows = []
        for scheme in self.schemes:
            runs = self.runs_of(scheme)
            acc_mean, acc_std = _mean_std([r.final_test_acc for r in runs])
            loss_mean, _ = _mean_std([r.final_train_loss for r in runs if not r.diverged])
            reached = [r.steps_to(target) for r in runs]
            reached = [s for s in reached if s is not None]
            spreads = [r.row_spread_final for r in runs if r.row_spread_final is not None]
            rows.append({
                "scheme": scheme,
                "runs": len(runs),
                "test_acc_mean": acc_mean,
                "test_acc_std": acc_std,
                "final_loss": loss_mean,
                "steps_to_target": statistics.fmean(reached) if reached else None,
                "reached_target": len(reached),
                "diverged": sum(r.diverged for r in runs),
                "row_spread_final": max(spreads) if spreads else None,
                "wall_time_mean": statistics.fmean([r.wall_time for r in runs]) if runs else 0.0,
            })
        return rows

    def title(self) -> str:
        """One line naming the data set, model, activation, seeds and budget (table and plot
        title), e.g. ``digits / mlp depth 30 width 128 relu: 3 seed(s), 500 steps``."""
        s = self.settings
        return (f"{s['dataset']} / {s['arch']} depth {s['depth']} width {s['width']} "
                f"{s['activation']}: {len(s['seeds'])} seed(s), {s['config']['steps']} steps")

    def to_markdown(self) -> str:
        """The summary table as Markdown (also the body of ``summary.md``)."""
        target = self.target_accuracy()
        lines = [
            "| scheme | test acc (mean ± std) | final loss | steps to "
            f"{_fmt(target, '.2f')} acc | diverged |",
            "|---|---|---|---|---|",
        ]
        for row in self.summary():
            steps = _fmt(row["steps_to_target"], ".0f")
            if row["reached_target"] not in (0, row["runs"]):
                steps += f" ({row['reached_target']}/{row['runs']} runs)"
            elif row["reached_target"] == 0:
                steps = "never"
            lines.append(
                f"| {row['scheme']} | {_fmt(row['test_acc_mean'])} ± "
                f"{_fmt(row['test_acc_std'])} | {_fmt(row['final_loss'])} | {steps} | "
                f"{row['diverged']}/{row['runs']} |"
            )
        return "\n".join(lines)

    # -------------------------------------------------------------- files
    def to_dict(self) -> dict:
        return {"settings": self.settings, "wall_time": self.wall_time,
                "environment": _environment(), "summary": self.summary(),
                "runs": [r.to_dict() for r in self.runs]}

    @classmethod
    def from_dict(cls, d: dict) -> "TrainingComparison":
        return cls(settings=d["settings"], wall_time=d.get("wall_time", 0.0),
                   runs=[RunResult.from_dict(r) for r in d["runs"]])

    def csv_rows(self) -> list[dict]:
        """One flat dict per run (the rows of ``results.csv``): the model settings, scheme,
        seed, final/best test accuracy, final losses, steps done, divergence, final row spread
        and wall time."""
        s = self.settings
        return [{
            "dataset": s["dataset"], "arch": s["arch"], "depth": s["depth"],
            "width": s["width"], "activation": s["activation"], "scheme": r.scheme,
            "seed": r.seed, "final_test_acc": r.final_test_acc,
            "best_test_acc": r.best_test_acc, "final_train_loss": r.final_train_loss,
            "final_test_loss": r.test_loss[-1] if r.test_loss else float("nan"),
            "steps_done": r.steps_done, "diverged": r.diverged,
            "diverged_step": r.diverged_step, "row_spread_final": r.row_spread_final,
            "wall_time": round(r.wall_time, 3),
        } for r in self.runs]

    def plot(self, path: str | os.PathLike) -> str:
        """Learning curves: training loss and test accuracy against step, per scheme
        (line = mean over seeds, band = min..max over seeds). Needs matplotlib."""
        fig = _figure(figsize=(11, 4.2))
        ax_loss, ax_acc = fig.subplots(1, 2)
        for i, scheme in enumerate(self.schemes):
            runs = self.runs_of(scheme)
            color = _color(i, scheme)
            for ax, key in ((ax_loss, "train_loss"), (ax_acc, "test_acc")):
                steps, lo, mid, hi = _band(runs, key)
                if not steps:
                    continue
                ax.plot(steps, mid, color=color, label=scheme if ax is ax_loss else None,
                        lw=1.8, ls=_style(i, scheme))
                if len(runs) > 1:
                    ax.fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel("training loss (cross-entropy)")
        ax_acc.set_xlabel("step")
        ax_acc.set_ylabel("test accuracy")
        ax_acc.set_ylim(0, 1)
        fig.suptitle(self.title() + " (line: mean over seeds, band: min..max)", fontsize=10)
        fig.legend(loc="lower center", ncol=min(len(self.schemes), 10), fontsize=9,
                   frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        savefig(fig, path, dpi=110)
        return str(path)

    def write(self, out_dir: str | os.PathLike, *, plot_name: str = "curves.png") -> dict:
        """Write results.json, results.csv, the learning-curve PNG and summary.md into
        ``out_dir`` (created if needed); return {kind: path}. All or nothing: the files are
        written to a temporary folder and moved into ``out_dir`` only when all are written
        (:func:`initwise.atomic.staged_folder`)."""
        with staged_folder(out_dir) as tmp:
            paths = _write_common(tmp, self.to_dict(), self.csv_rows())
            paths["plot"] = self.plot(os.path.join(tmp, plot_name))
            paths["summary"] = _write_summary(
                tmp, self.title(), self.settings, self.to_markdown(), plot_name, self.wall_time
            )
        return relocate(paths, tmp, out_dir)


@dataclass
class Sweep:
    """A :class:`TrainingComparison` per depth."""

    settings: dict
    comparisons: list[TrainingComparison] = field(default_factory=list)
    wall_time: float = 0.0

    def summary(self) -> list[dict]:
        """:meth:`TrainingComparison.summary` of every depth, each row with its ``depth``
        added (depths in sweep order, schemes in the order given)."""
        rows = []
        for comp in self.comparisons:
            for row in comp.summary():
                rows.append({"depth": comp.settings["depth"], **row})
        return rows

    def title(self) -> str:
        """One line naming the data set, model, activation, seeds and budget of the sweep (the
        table and plot title)."""
        s = self.settings
        return (f"{s['dataset']} / {s['arch']} width {s['width']} {s['activation']}: test "
                f"accuracy vs depth ({len(s['seeds'])} seed(s), {s['config']['steps']} steps)")

    def to_markdown(self) -> str:
        """Test accuracy (mean ± std over seeds) with depths as rows and schemes as columns."""
        schemes = list(self.settings["schemes"])
        lines = ["| depth | " + " | ".join(schemes) + " |",
                 "|---|" + "---|" * len(schemes)]
        for comp in self.comparisons:
            cells = []
            for row in comp.summary():
                cell = f"{_fmt(row['test_acc_mean'])} ± {_fmt(row['test_acc_std'])}"
                if row["diverged"]:
                    cell += f" ({row['diverged']} div.)"
                cells.append(cell)
            lines.append(f"| {comp.settings['depth']} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "wall_time": self.wall_time,
                "environment": _environment(), "summary": self.summary(),
                "comparisons": [c.to_dict() for c in self.comparisons]}

    def plot(self, path: str | os.PathLike) -> str:
        """Final test accuracy against depth per scheme (mean, band = min..max over seeds)."""
        fig = _figure(figsize=(6.5, 4.2))
        ax = fig.subplots()
        depths = [c.settings["depth"] for c in self.comparisons]
        for i, scheme in enumerate(self.settings["schemes"]):
            accs = [[r.final_test_acc for r in c.runs_of(scheme)] for c in self.comparisons]
            mid = [statistics.fmean(a) for a in accs]
            ax.plot(depths, mid, marker="o", color=_color(i, scheme), label=scheme, lw=1.6,
                    ls=_style(i, scheme))
            if len(self.settings["seeds"]) > 1:
                ax.fill_between(depths, [min(a) for a in accs], [max(a) for a in accs],
                                color=_color(i, scheme), alpha=0.15, lw=0)
        ax.set_xscale("log")
        ax.set_xticks(depths)
        ax.set_xticklabels([str(d) for d in depths])
        ax.set_xlabel("depth (weight layers)")
        ax.set_ylabel("final test accuracy")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, ncol=2)
        ax.set_title(self.title(), fontsize=9)
        fig.tight_layout()
        savefig(fig, path, dpi=110)
        return str(path)

    def write(self, out_dir: str | os.PathLike, *, plot_name: str = "depth.png") -> dict:
        """Write results.json, results.csv, the accuracy-vs-depth PNG and summary.md (all or
        nothing, as :meth:`TrainingComparison.write`)."""
        rows = [row for c in self.comparisons for row in c.csv_rows()]
        with staged_folder(out_dir) as tmp:
            paths = _write_common(tmp, self.to_dict(), rows)
            paths["plot"] = self.plot(os.path.join(tmp, plot_name))
            paths["summary"] = _write_summary(
                tmp, self.title(), self.settings, self.to_markdown(), plot_name, self.wall_time
            )
        return relocate(paths, tmp, out_dir)


# ---------------------------------------------------------------------------- running
def _settings(dataset: str, arch: str, depth: int, width: int, activation: str,
              schemes: Sequence[str], seeds: list[int], config: TrainConfig,
              seq_mode: str) -> dict:
    return {"dataset": dataset, "arch": arch, "depth": depth, "width": width,
            "activation": activation, "schemes": list(schemes), "seeds": seeds,
            "seq_mode": seq_mode, "config": asdict(config)}


def compare(dataset: str = "digits", arch: str = "mlp", *, depth: int = 30, width: int = 128,
            activation: str = "relu", schemes: Sequence[str] = DEFAULT_SCHEMES,
            seeds: int | Sequence[int] = 3, config: TrainConfig | None = None,
            seq_mode: str = "pixel", record_activations: bool = True,
            progress: Progress | None = None) -> TrainingComparison:
    """Train ``arch`` on ``dataset`` once per (scheme, seed) and collect the results.

    For seed ``s`` every scheme starts from a model built under ``torch.manual_seed(s)``
    (so "torch" is PyTorch's default init, reproducibly), is initialized by
    :func:`~initwise.experiments.training.apply_experiment_scheme` with seed ``s``, then trained by
    :func:`~initwise.experiments.training.train` with seed ``s``: identical data order,
    optimizer, learning rate and budget for every scheme. ``seeds`` is a count (seeds
    0..n-1) or a list. All names are validated before anything is trained.
    """
    config = config or TrainConfig()
    schemes, seed_list = check_config(dataset, arch, depths=[depth], width=width,
                                      activation=activation, schemes=schemes, seeds=seeds,
                                      seq_mode=seq_mode)
    data = load_dataset(dataset)
    with seeded(0):
        build_model(arch, data, depth=depth, width=width, activation=activation,
                    seq_mode=seq_mode)  # validates arch / depth / width / activation early
    x_train = model_inputs(arch, data, data.x_train, seq_mode)
    x_test = model_inputs(arch, data, data.x_test, seq_mode)
    comp = TrainingComparison(settings=_settings(data.name, arch, depth, width, activation, schemes,
                                         seed_list, config, seq_mode))
    start = time.perf_counter()
    for seed in seed_list:
        for scheme in schemes:
            with seeded(seed):
                model = build_model(arch, data, depth=depth, width=width,
                                    activation=activation, seq_mode=seq_mode)
            apply_experiment_scheme(model, scheme, seed, example_input=x_train[:8])
            label = f"depth {depth} {scheme} seed {seed}"
            step_cb = (lambda n, _label=label: progress(n, _label)) if progress else None
            run = train(model, x_train, data.y_train, x_test, data.y_test, config=config,
                        seed=seed, scheme=scheme, record_activations=record_activations,
                        progress=step_cb)
            comp.runs.append(run)
    comp.wall_time = time.perf_counter() - start
    return comp


def sweep(dataset: str = "digits", arch: str = "mlp", *, depths: Sequence[int] = (5, 10, 20, 50),
          width: int = 128, activation: str = "relu",
          schemes: Sequence[str] = ("torch", "xavier", "he", "auto"),
          seeds: int | Sequence[int] = 2, config: TrainConfig | None = None,
          seq_mode: str = "pixel", progress: Progress | None = None) -> Sweep:
    """:func:`compare` at every depth of ``depths``; plot test accuracy against depth."""
    config = config or TrainConfig()
    depths = list(depths)
    schemes, seed_list = check_config(dataset, arch, depths=depths, width=width,
                                      activation=activation, schemes=schemes, seeds=seeds,
                                      seq_mode=seq_mode)
    result = Sweep(settings={**_settings(dataset, arch, depths[0], width, activation, schemes,
                                         seed_list, config, seq_mode), "depths": depths})
    del result.settings["depth"]
    start = time.perf_counter()
    for depth in depths:
        result.comparisons.append(compare(
            dataset, arch, depth=depth, width=width, activation=activation, schemes=schemes,
            seeds=seed_list, config=config, seq_mode=seq_mode, record_activations=False,
            progress=progress))
    result.wall_time = time.perf_counter() - start
    return result


def check_config(dataset: str, arch: str, *, depths: Sequence[int], width: int,
                 activation: str, schemes: Sequence[str], seeds: int | Sequence[int],
                 seq_mode: str = "pixel") -> tuple[list[str], list[int]]:
    """Validate the arguments of :func:`compare` / :func:`sweep` without loading data or
    training; return (schemes lowercased, seed list). Raises ``ValueError`` / ``TypeError``
    naming the bad argument: see :func:`~initwise.experiments.models.check_model` for the
    model checks (arch vs dataset, depth, width, activation, seq_mode) and
    :func:`~initwise.experiments.training.check_scheme` for the scheme names; seeds must be a
    count >= 1 or a non-empty list; scheme "orthogonal_hh" needs a recurrent arch.
    """
    depths = list(depths)
    if not depths:
        raise ValueError("depths is empty; give at least one depth, e.g. 5,10,20")
    for depth in depths:
        check_model(arch, dataset, depth=depth, width=width, activation=activation,
                    seq_mode=seq_mode)
    if isinstance(schemes, str):
        schemes = [schemes]
    names = [check_scheme(s) for s in schemes]
    if not names:
        raise ValueError("schemes is empty; give at least one scheme name")
    if len(set(names)) != len(names):
        raise ValueError(f"schemes lists a scheme twice: {names}")
    if "orthogonal_hh" in names and arch.lower() not in ("rnn", "lstm", "gru"):
        raise ValueError(f"scheme 'orthogonal_hh' needs a recurrent arch (rnn, lstm, gru), "
                         f"not {arch!r}")
    return names, _seed_list(seeds)


def total_steps(n_schemes: int, n_seeds: int, steps: int, n_depths: int = 1) -> int:
    """Number of training steps a compare / sweep will run (for a progress bar)."""
    return n_schemes * n_seeds * steps * n_depths


# ---------------------------------------------------------------------------- helpers
def _figure(figsize: tuple[float, float]):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("plots need matplotlib: pip install 'initwise[full]'") from exc
    return Figure(figsize=figsize)


_PALETTE = ["#1f77b4", "#7f7f7f", "#bcbd22", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#ff7f0e", "#17becf", "#e377c2"]
#: fixed colours for the common schemes, so a scheme looks the same in every plot
_SCHEME_COLORS = dict(zip(DEFAULT_SCHEMES, _PALETTE)) | {"large": "#e377c2",
                                                          "orthogonal_hh": "#17becf"}


def _color(i: int, scheme: str | None = None) -> str:
    if scheme is not None and scheme in _SCHEME_COLORS:
        return _SCHEME_COLORS[scheme]
    return _PALETTE[i % len(_PALETTE)]


def _style(i: int, scheme: str | None = None) -> str:
    """Line styles cycle too, so that coinciding curves (several schemes stuck at chance)
    stay distinguishable."""
    if scheme is not None and scheme in DEFAULT_SCHEMES:
        i = DEFAULT_SCHEMES.index(scheme)
    return ["-", "--", ":", "-."][i % 4]


def _band(runs: list[RunResult], key: str) -> tuple[list[int], list, list, list]:
    """Steps sampled by every run (diverged runs stop early) and min/mean/max per step."""
    if not runs:
        return [], [], [], []
    longest = max(runs, key=lambda r: len(r.steps))
    steps, lo, mid, hi = [], [], [], []
    for j, step in enumerate(longest.steps):
        vals = [getattr(r, key)[j] for r in runs
                if j < len(r.steps) and r.steps[j] == step and math.isfinite(getattr(r, key)[j])]
        if not vals:
            continue
        steps.append(step)
        lo.append(min(vals))
        mid.append(statistics.fmean(vals))
        hi.append(max(vals))
    return steps, lo, mid, hi


def json_safe(obj):
    """Replace NaN/inf by None so results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def _write_common(out_dir, payload: dict, rows: list[dict]) -> dict:
    json_path = os.path.join(out_dir, "results.json")
    write_text(json_path, json.dumps(json_safe(payload), indent=1, allow_nan=False))
    csv_path = os.path.join(out_dir, "results.csv")
    with atomic_open(csv_path, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return {"json": json_path, "csv": csv_path}


def _write_summary(out_dir, title: str, settings: dict, table: str, plot_name: str,
                   wall_time: float) -> str:
    cfg = settings["config"]
    recipe = (f"{cfg['optimizer'].upper()} lr {cfg['lr']}"
              + (f" momentum {cfg['momentum']}" if cfg["optimizer"] == "sgd" else "")
              + f", batch {cfg['batch_size']}, {cfg['steps']} steps"
              + (f", grad clip {cfg['clip']}" if cfg.get("clip") else ""))
    text = (
        f"# {title}\n\n"
        f"Schemes: {', '.join(settings['schemes'])}. Seeds: {settings['seeds']}. "
        f"Recipe (identical for every scheme): {recipe}; test accuracy on the held-out split "
        f"after the last step. Wall time {wall_time:.1f} s "
        f"({torch.get_num_threads()} torch thread(s)).\n\n"
        f"{table}\n\n![{plot_name}]({plot_name})\n"
    )
    return write_text(os.path.join(out_dir, "summary.md"), text)
