"""What every claim returns (:class:`ClaimResult`) and the small helpers the claim modules share.

A claim is tested either by a training comparison (a :class:`~.compare.TrainingComparison`: its
table, learning curves and result files come with the claim), or by its own experiment (a
grid, an LM comparison, a measurement at initialization): then the claim carries its table
(Markdown), its raw ``data`` (``results.json``) and its plots (``plots``: file name -> a function
that draws the figure into a path).
"""
from __future__ import annotations

import json
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from ..atomic import relocate, savefig, staged_folder, write_text
from .compare import Progress, TrainingComparison, _figure, json_safe
from .training import RunResult, TrainConfig, seeded, train

__all__ = ["ClaimResult", "acc_of", "compare_models", "figure", "pm", "save_plot"]


@dataclass
class ClaimResult:
    """A claim, the experiment that tests it, the measured figures and the verdict.

    ``comparison``: the training comparison behind the claim, or ``None`` for a claim with its
    own experiment, which then gives ``table`` (Markdown), ``data`` (written as
    ``results.json``), ``seeds`` and ``steps`` (for :attr:`command`; ``steps=None``: the claim
    has no training budget) and ``wall_time``. ``plots`` maps a PNG file name to a function
    ``draw(path) -> path``.
    """

    name: str
    statement: str
    criterion: str
    comparison: TrainingComparison | None = None
    measured: dict = field(default_factory=dict)
    reproduced: bool = False
    figure: str = ""
    table: str = ""
    data: dict = field(default_factory=dict)
    plots: dict[str, Callable[[str], str]] = field(default_factory=dict)
    seeds: int | None = None
    steps: int | None = None
    wall_time: float = 0.0

    @property
    def command(self) -> str:
        """The command that reproduces the claim, e.g. ``initwise claim he_relu_30 --seeds 3
        --steps 500``."""
        if self.comparison is not None:
            seeds = len(self.comparison.settings["seeds"])
            steps: int | None = self.comparison.settings["config"]["steps"]
        else:
            seeds, steps = self.seeds, self.steps
        tail = f" --steps {steps}" if steps is not None else ""
        return f"initwise claim {self.name} --seeds {seeds}{tail}"

    @property
    def elapsed(self) -> float:
        """Wall time of the experiment in seconds (the comparison's, else :attr:`wall_time`)."""
        return self.comparison.wall_time if self.comparison is not None else self.wall_time

    def body(self) -> str:
        """The claim's table: the comparison's summary, or :attr:`table`."""
        return self.comparison.to_markdown() if self.comparison is not None else self.table

    def to_markdown(self) -> str:
        """The claim as a Markdown section (the body of ``claim.md``): verdict, statement,
        criterion, measured figure, the command that reproduces it and its table."""
        verdict = "reproduced" if self.reproduced else "NOT reproduced"
        return (f"## {self.name}: {verdict}\n\n{self.statement}\n\n"
                f"Criterion: {self.criterion}\n\nMeasured: {self.figure}\n\n"
                f"Command: `{self.command}`\n\n{self.body()}\n")

    def to_dict(self) -> dict:
        return {"name": self.name, "statement": self.statement, "criterion": self.criterion,
                "command": self.command, "reproduced": self.reproduced,
                "figure": self.figure, "measured": self.measured,
                "wall_time": self.elapsed}

    def write(self, out_dir: str | os.PathLike) -> dict:
        """The report files into ``out_dir``, all or nothing: the comparison's files (or
        ``results.json`` with :attr:`data`), every plot, ``claim.json`` and ``claim.md``."""
        with staged_folder(out_dir) as tmp:
            if self.comparison is not None:
                paths = self.comparison.write(tmp)
                images = ["curves.png"]
            else:
                paths = {"json": write_text(os.path.join(tmp, "results.json"),
                                            json.dumps(json_safe(self.data), indent=1, allow_nan=False))}
                images = []
            for name, draw in self.plots.items():
                paths[f"plot_{name}"] = draw(os.path.join(tmp, name))
                images.append(name)
            paths["claim_json"] = write_text(os.path.join(tmp, "claim.json"),
                                             json.dumps(json_safe(self.to_dict()), indent=1, allow_nan=False))
            links = "".join(f"\n![{os.path.splitext(i)[0]}]({i})\n" for i in images)
            paths["claim_md"] = write_text(os.path.join(tmp, "claim.md"), self.to_markdown() + links)
        return relocate(paths, tmp, out_dir)


# ---------------------------------------------------------------------------- helpers
def acc_of(comp: TrainingComparison, scheme: str) -> tuple[float, float]:
    """(mean, sample std) of the final test accuracy of ``scheme`` over seeds."""
    accs = [r.final_test_acc for r in comp.runs_of(scheme)]
    return statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def pm(comp: TrainingComparison, scheme: str) -> str:
    """``"scheme 0.912 ± 0.010"``: mean ± std of the final test accuracy over seeds."""
    mean, std = acc_of(comp, scheme)
    return f"{scheme} {mean:.3f} ± {std:.3f}"


def figure(figsize: tuple[float, float]):
    """A matplotlib ``Figure`` (not attached to pyplot); needs matplotlib."""
    return _figure(figsize)


def save_plot(fig, path: str) -> str:
    """Save ``fig`` to ``path`` (written to a temporary name, then renamed); return the path."""
    savefig(fig, path, dpi=110)
    return str(path)


def seed_list(seeds: int | Sequence[int]) -> list[int]:
    """``range(seeds)`` for a count, else the given seeds; ``ValueError`` when empty or < 1."""
    if isinstance(seeds, bool) or not isinstance(seeds, (int, list, tuple)):
        raise TypeError(f"seeds must be a count or a list of ints, got {seeds!r}")
    out = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not out:
        raise ValueError(f"seeds must be >= 1, got {seeds!r}")
    return out


def compare_models(build: Callable[[], nn.Module], init: Callable[[nn.Module, str, int], None],
                   data, *, schemes: Sequence[str], seeds: int | Sequence[int],
                   config: TrainConfig, settings: dict, x_train: torch.Tensor | None = None,
                   x_test: torch.Tensor | None = None, record_activations: bool = False,
                   progress: Progress | None = None) -> TrainingComparison:
    """:func:`~.compare.compare` for a model that is not one of the built-in archs.

    For seed ``s`` every scheme starts from ``build()`` called under ``torch.manual_seed(s)``,
    then ``init(model, scheme, s)``, then :func:`~.training.train` with seed ``s`` (same data
    order for every scheme). ``settings`` describes the model for the table and plot titles
    (``dataset``, ``arch``, ``depth``, ``width``, ``activation``); ``schemes``, ``seeds``,
    ``config`` and ``seq_mode`` are added.
    """
    seeds_ = seed_list(seeds)
    x_train = data.x_train if x_train is None else x_train
    x_test = data.x_test if x_test is None else x_test
    from dataclasses import asdict

    comp = TrainingComparison(settings={**settings, "schemes": list(schemes), "seeds": seeds_,
                                        "seq_mode": "pixel", "config": asdict(config)})
    start = time.perf_counter()
    for seed in seeds_:
        for scheme in schemes:
            with seeded(seed):
                model = build()
            init(model, scheme, seed)
            label = f"{scheme} seed {seed}"
            cb = (lambda n, _l=label: progress(n, _l)) if progress else None
            comp.runs.append(train(model, x_train, data.y_train, x_test, data.y_test,
                                   config=config, seed=seed, scheme=scheme,
                                   record_activations=record_activations, progress=cb))
    comp.wall_time = time.perf_counter() - start
    return comp


def runs_acc(runs: list[RunResult]) -> float:
    """Mean final test accuracy of ``runs``."""
    return statistics.fmean(r.final_test_acc for r in runs)
