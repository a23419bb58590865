"""A small pre-norm transformer language model, trained character by character on the
standard library's source text (:mod:`.text`), with a fixed recipe.

:class:`CharLM` is GPT-2's layout at toy size (Radford et al. 2019): token and learned position
embeddings, ``blocks`` pre-norm blocks ``x + attn(LN(x))``, ``x + mlp(LN(x))`` (separate q, k,
v and output projections, causal ``F.scaled_dot_product_attention``; MLP ``fc2(gelu(fc1 x))``
with ``4 d`` hidden units), a final LayerNorm and an untied output layer. No dropout.

:func:`train_lm` trains it with one :class:`LMConfig` (AdamW by default): batches of windows
drawn by a generator seeded with the run's seed (same seed, same batches for every scheme); the
test loss (mean cross-entropy per character, nats) is measured on a fixed set of test windows at
step 0, every ``eval_every`` steps and at the end. A non-finite training loss stops the run and
marks it diverged. :func:`compare_lm` runs schemes x seeds into an :class:`LMComparison` (table,
plot, JSON).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .text import VOCAB, TextData, load_text
from .training import apply_experiment_scheme, check_scheme, seeded

__all__ = [
    "CharLM",
    "LMComparison",
    "LMConfig",
    "LMRun",
    "compare_lm",
    "init_lm",
    "lm_loss",
    "train_lm",
]


class Block(nn.Module):
    """Pre-norm block: ``x + wo(attn(q, k, v of LN1 x))`` then ``x + fc2(gelu(fc1(LN2 x)))``."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        y = self.ln1(x)
        q, k, v = (m(y).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for m in (self.wq, self.wk, self.wv))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class CharLM(nn.Module):
    """GPT-2-style pre-norm transformer LM over ``vocab`` character ids (see the module
    docstring); input (batch, t <= context) ids, output (batch, t, vocab) logits."""

    def __init__(self, *, vocab: int = VOCAB, d: int = 64, heads: int = 4, blocks: int = 24,
                 context: int = 64) -> None:
        super().__init__()
        for key, value in (("vocab", vocab), ("d", d), ("heads", heads), ("blocks", blocks),
                           ("context", context)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CharLM: {key} must be a positive integer, got {value!r}")
        if d % heads:
            raise ValueError(f"CharLM: d ({d}) must be a multiple of heads ({heads})")
        self.context = context
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(context, d)
        self.layers = nn.ModuleList(Block(d, heads) for _ in range(blocks))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[-1] > self.context:
            raise ValueError(f"CharLM: input of {ids.shape[-1]} positions exceeds the context "
                             f"{self.context}")
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[-1], device=ids.device))
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x))


@dataclass(frozen=True)
class LMConfig:
    """The LM recipe shared by every scheme: AdamW (betas 0.9, 0.95, no weight decay), constant
    lr, ``batch`` windows of ``context`` characters per step, gradient clip, the test loss on
    ``test_windows`` fixed windows every ``eval_every`` steps."""

    steps: int = 300
    batch: int = 16
    context: int = 64
    lr: float = 1e-3
    clip: float | None = 1.0
    eval_every: int = 50
    test_windows: int = 128

    def __post_init__(self) -> None:
        for key in ("steps", "batch", "context", "eval_every", "test_windows"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"LMConfig.{key} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"LMConfig.lr must be a positive number, got {self.lr!r}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"LMConfig.clip must be > 0 or None, got {self.clip!r}")


@dataclass
class LMRun:
    """One LM training run: test loss (nats per character) and mean training loss since the
    previous sample, at the sampled ``steps`` (0 = at init)."""

    scheme: str
    seed: int
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    diverged: bool = False
    steps_done: int = 0
    wall_time: float = 0.0

    @property
    def final_test_loss(self) -> float:
        """The last test loss; ``inf`` for a diverged run (it never reached a finite loss)."""
        if self.diverged or not self.test_loss:
            return math.inf
        return self.test_loss[-1]

    def to_dict(self) -> dict:
        return {**asdict(self), "final_test_loss": self.final_test_loss}


def lm_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 64) -> float:
    """Mean cross-entropy per character (nats) of ``model`` on windows (x, y), no gradients;
    ``inf`` if any logit is non-finite."""
    was = model.training
    model.eval()
    total = 0.0
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch):
                logits = model(x[i:i + batch])
                if not torch.isfinite(logits).all():
                    return math.inf
                total += float(F.cross_entropy(logits.flatten(0, 1), y[i:i + batch].flatten(),
                                               reduction="sum"))
    finally:
        model.train(was)
    return total / y.numel()


def train_lm(model: nn.Module, data: TextData, *, config: LMConfig, seed: int, scheme: str = "",
             progress: Callable[[int], None] | None = None) -> LMRun:
    """Train ``model`` (already initialized) by ``config``; batches from a generator seeded with
    ``seed``. ``progress(n)`` gets the number of steps just done."""
    run = LMRun(scheme=scheme, seed=seed)
    x_test, y_test = data.test_windows(config.test_windows, config.context)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    run.steps.append(0)
    run.test_loss.append(lm_loss(model, x_test, y_test))
    run.train_loss.append(math.nan)
    window: list[float] = []
    done = 0
    model.train()
    for step in range(1, config.steps + 1):
        x, y = data.batch(config.batch, config.context, gen)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        value = float(loss.detach())
        if not math.isfinite(value):
            run.diverged = True
            break
        loss.backward()
        if config.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        window.append(value)
        run.steps_done = step
        if step % config.eval_every == 0 or step == config.steps:
            run.steps.append(step)
            run.train_loss.append(statistics.fmean(window))
            run.test_loss.append(lm_loss(model, x_test, y_test))
            window = []
            if progress is not None:
                progress(step - done)
                done = step
    if progress is not None and done < config.steps:
        progress(config.steps - done)
    run.wall_time = time.perf_counter() - start
    return run


def init_lm(model: nn.Module, scheme: str, seed: int, example: torch.Tensor) -> None:
    """Initialize ``model`` by ``scheme`` (``"torch"``: as built; ``"auto"``: ``initwise.init``;
    any policy name, recipes included: ``initwise.init(model, example, policy=scheme)``).
    A recipe that refuses the model raises its ``ValueError``."""
    apply_experiment_scheme(model, scheme, seed, example_input=example)


@dataclass
class LMComparison:
    """LM runs of several schemes and seeds; ``refused`` maps a scheme to the reason it does not
    apply (its ValueError), ``settings`` the model and recipe."""

    settings: dict
    runs: list[LMRun] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    wall_time: float = 0.0

    def runs_of(self, scheme: str) -> list[LMRun]:
        return [r for r in self.runs if r.scheme == scheme]

    def final(self, scheme: str) -> list[float]:
        """Final test loss of each seed of ``scheme`` (``inf`` where it diverged)."""
        return [r.final_test_loss for r in self.runs_of(scheme)]

    def mean(self, scheme: str) -> float:
        vals = self.final(scheme)
        return statistics.fmean(vals) if vals else math.nan

    def cell(self, scheme: str) -> str:
        """``mean ± std`` of the final test loss, ``n/a`` for a refused scheme."""
        if scheme in self.refused:
            return "n/a"
        vals = self.final(scheme)
        if not vals:
            return "-"
        if not all(math.isfinite(v) for v in vals):
            return f"diverged ({sum(not math.isfinite(v) for v in vals)}/{len(vals)} runs)"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.fmean(vals):.3f} ± {sd:.3f}"

    def to_markdown(self) -> str:
        lines = ["| scheme | test loss (nats/char, mean ± std) | note |", "|---|---|---|"]
        for s in self.settings["schemes"]:
            lines.append(f"| {s} | {self.cell(s)} | {self.refused.get(s, '')} |")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"settings": self.settings, "refused": self.refused, "wall_time": self.wall_time,
                "runs": [r.to_dict() for r in self.runs]}

    def plot(self, ax) -> None:
        """Test loss against step per scheme (mean over seeds) on the matplotlib axes ``ax``."""
        for i, s in enumerate(self.settings["schemes"]):
            runs = [r for r in self.runs_of(s) if not r.diverged]
            if not runs:
                continue
            steps = runs[0].steps
            mid = [statistics.fmean(r.test_loss[j] for r in runs) for j in range(len(steps))]
            ax.plot(steps, mid, label=s, lw=1.6, ls="-" if i < 10 else "--")
        ax.set_xlabel("step")
        ax.set_ylabel("test loss (nats / char)")


def compare_lm(schemes: Sequence[str], seeds: int | Sequence[int], *, config: LMConfig,
               d: int = 64, heads: int = 4, blocks: int = 24,
               progress: Callable[[int, str], None] | None = None) -> LMComparison:
    """Train :class:`CharLM` once per (scheme, seed) on :func:`~.text.load_text`. For seed ``s``
    every scheme starts from the model built under ``torch.manual_seed(s)`` and trains on the
    same batches. A scheme whose policy raises ``ValueError`` on the model is recorded in
    ``refused`` (with the message) and not trained."""
    names = [check_scheme(s) for s in schemes]
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    data = load_text()
    settings = {"model": "CharLM", "d": d, "heads": heads, "blocks": blocks, "vocab": VOCAB,
                "schemes": names, "seeds": seed_list, "config": asdict(config),
                "data": "stdlib source, text.TRAIN_FILES / TEST_FILES"}
    comp = LMComparison(settings=settings)
    example = data.test_windows(2, config.context)[0]
    start = time.perf_counter()
    for seed in seed_list:
        for scheme in names:
            if scheme in comp.refused:
                continue
            with seeded(seed):
                model = CharLM(d=d, heads=heads, blocks=blocks, context=config.context)
            try:
                init_lm(model, scheme, seed, example)
            except ValueError as exc:
                comp.refused[scheme] = " ".join(str(exc).split())
                if progress is not None:
                    progress(config.steps * len(seed_list), f"{scheme}: n/a")
                continue
            label = f"{scheme} seed {seed}"
            cb = (lambda n, _l=label: progress(n, _l)) if progress else None
            comp.runs.append(train_lm(model, data, config=config, seed=seed, scheme=scheme,
                                      progress=cb))
    comp.wall_time = time.perf_counter() - start
    return comp
