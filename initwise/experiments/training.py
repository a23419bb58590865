"""Initialize a model with a named scheme, train it with a fixed recipe, measure what happened.

The recipe is the same for every scheme of a comparison: the data order comes from a
``torch.Generator`` seeded with the run's seed, and the optimizer, learning rate, batch size and
number of steps come from one :class:`TrainConfig`. So two schemes with the same seed see exactly
the same mini-batches in the same order, and the same seed gives the same numbers twice.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

#: schemes the experiments understand besides every ``initwise.init`` policy name:
#: "torch"  the model exactly as PyTorch built it (built under the run's seed);
#: "auto"   ``initwise.init(model, seed=s)``, the per-layer automatic plan;
#: "large"  N(0, 1) for every weight with >= 2 dims, zero biases (the naive "big random" init);
#: "orthogonal_hh"  the model as PyTorch built it except the recurrent weights ``weight_hh*`` of
#:          every nn.RNN/LSTM/GRU, made orthogonal (gain 1, per gate block): the ablation that
#:          changes only the recurrent weights relative to "torch".
SPECIAL_SCHEMES: tuple[str, ...] = ("torch", "auto", "large", "orthogonal_hh")

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """The training recipe shared by every scheme of a comparison.

    Default: plain SGD with momentum 0.9, lr 0.001, batch 64, 500 steps, test accuracy measured
    every 25 steps, no gradient clipping, no weight decay. (lr 0.001 is the grid value
    {0.001, 0.003, 0.01, 0.03} with the lowest final training loss of He init on the 30-layer
    ReLU MLP, see benchmarks/lr_grid.py; at 0.01 deep nets train unstably.)
    """

    steps: int = 500
    batch_size: int = 64
    lr: float = 0.001
    momentum: float = 0.9
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    clip: float | None = None
    eval_every: int = 25

    def __post_init__(self) -> None:
        for key in ("steps", "batch_size", "eval_every"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{key} must be a positive integer, got {value!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainConfig.lr must be a positive number, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of "
                             f"{', '.join(OPTIMIZERS)}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"TrainConfig.clip must be > 0 or None, got {self.clip!r}")


@dataclass
class RunResult:
    """Everything measured in one training run (one scheme, one seed).

    Curves are sampled at ``steps`` (0 = at initialization, then every ``eval_every`` steps and
    at the last step): ``train_loss`` is the mean training loss over the steps since the previous
    sample (at step 0: the loss of the first batch before any update), ``test_acc`` and
    ``test_loss`` are measured on the whole test split. ``row_spread_*`` is
    :func:`row_spread` at initialization and after training; ``act_*`` is
    :func:`activation_stats` on (up to 512) test inputs.
    """

    scheme: str
    seed: int
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    diverged: bool = False
    diverged_step: int | None = None
    steps_done: int = 0
    wall_time: float = 0.0
    row_spread_init: float | None = None
    row_spread_final: float | None = None
    act_init: list[dict] = field(default_factory=list)
    act_final: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    @property
    def final_train_loss(self) -> float:
        return self.train_loss[-1] if self.train_loss else float("nan")

    @property
    def best_test_acc(self) -> float:
        return max(self.test_acc) if self.test_acc else float("nan")

    def steps_to(self, target: float) -> int | None:
        """First sampled step at which test accuracy reached ``target`` (None if never)."""
        for step, acc in zip(self.steps, self.test_acc):
            if acc >= target:
                return step
        return None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["final_test_acc"] = self.final_test_acc
        out["final_train_loss"] = self.final_train_loss
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "RunResult":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# ---------------------------------------------------------------------------- schemes
@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU generator seeded, then restore its previous state.

    Used to build models reproducibly (PyTorch's constructors draw from the global generator)
    without leaving any trace on the caller's random state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def check_scheme(scheme: str) -> str:
    """Validate a scheme name (a special scheme or a whole-model policy name accepted by
    ``initwise.init(model, policy=...)``); return it lowercased.

    Policy names are checked by the same function :func:`initwise.plan` uses, so a name that
    passes here (e.g. not ``"constant"``, which needs a value) does not fail later in training.
    """
    if not isinstance(scheme, str) or not scheme.strip():
        raise TypeError(f"scheme must be a non-empty string, got {scheme!r}")
    name = scheme.strip().lower()
    if name in SPECIAL_SCHEMES:
        return name
    from ..policies import normalize_policy

    try:
        normalize_policy(name)
    except (KeyError, ValueError) as exc:
        raise ValueError(
            f"unknown scheme {scheme!r}: use {', '.join(SPECIAL_SCHEMES)} or an initializer "
            f"name such as xavier, he, lecun, orthogonal, zeros, small ({exc})"
        ) from None
    return name


def apply_experiment_scheme(model: nn.Module, scheme: str, seed: int,
                            example_input: torch.Tensor | None = None) -> nn.Module:
    """Initialize ``model`` in place with ``scheme`` and ``seed``; return the model.

    :func:`initwise.apply_scheme` extended with the experiments' ablations "large" and
    "orthogonal_hh"; every other name is delegated to it.

    - "torch": leave the weights as built (build the model inside :func:`seeded`);
    - "auto": ``initwise.init(model, example_input, seed=seed)``;
    - "large": every weight with >= 2 dims ~ N(0, 1), every other parameter zero;
    - "orthogonal_hh": leave everything as built except each recurrent layer's ``weight_hh*``,
      replaced by :func:`initwise.orthogonal_` (gain 1, one orthogonal block per gate as given
      by :func:`initwise.param_blocks`); a model without recurrent layers is a ValueError;
    - anything else: :func:`initwise.apply_scheme` (``initwise.init(model, example_input,
      policy=scheme, seed=seed)``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    name = check_scheme(scheme)
    if name == "torch":
        return model
    if name == "large":
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for _, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 1.0, generator=gen)
                else:
                    p.zero_()
        return model
    if name == "orthogonal_hh":
        return orthogonalize_recurrent_(model, seed)
    from ..api import apply_scheme as apply_named

    apply_named(model, name, seed=seed, example_input=example_input)
    return model


def orthogonalize_recurrent_(model: nn.Module, seed: int) -> nn.Module:
    """Replace only the recurrent weights ``weight_hh_l*`` of every ``nn.RNNBase`` in ``model``
    by orthogonal matrices (Saxe et al. 2014; gain 1, each gate block orthogonal on its own);
    every other parameter keeps its value. Draws from a generator seeded with ``seed``.
    """
    from ..fans import param_blocks
    from ..schemes import orthogonal_

    targets = [(module, name, p) for module in model.modules()
               if isinstance(module, nn.RNNBase)
               for name, p in module.named_parameters(recurse=False)
               if name.startswith("weight_hh")]
    if not targets:
        raise ValueError(
            f"scheme 'orthogonal_hh' needs a recurrent layer (nn.RNN/LSTM/GRU) with weight_hh "
            f"parameters; {type(model).__name__} has none"
        )
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module, name, p in targets:
            orthogonal_(p, blocks=param_blocks(module, name), generator=gen)
    return model


# ---------------------------------------------------------------------------- measurements
_WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def row_spread(model: nn.Module) -> float | None:
    """Largest difference between two rows (output units) of any hidden weight layer.

    For each ``Linear``/``ConvNd`` except the last one (the classifier), the weight is viewed as
    (units, inputs) and the spread is ``max_j (max_i w[i, j] - min_i w[i, j])`` = the largest
    elementwise difference between two units' incoming weights. 0 means every unit of that layer
    is identical (the symmetry zero or constant init never breaks). None if no hidden layer.
    """
    layers = [m for m in model.modules() if isinstance(m, _WEIGHT_LAYERS)]
    spreads = []
    for layer in layers[:-1]:
        w = layer.weight.detach().reshape(layer.weight.shape[0], -1)
        if w.shape[0] < 2:
            continue
        spreads.append(float((w.max(dim=0).values - w.min(dim=0).values).max()))
    return max(spreads) if spreads else None


_RELU_FAMILY = (nn.ReLU, nn.ReLU6)
_TANH_LIKE = (nn.Tanh, nn.Softsign)
_ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Tanh, nn.Softsign, nn.Sigmoid,
                     nn.Hardtanh, nn.SELU, nn.ELU, nn.GELU, nn.SiLU, nn.CELU)


def activation_stats(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Per activation module, in call order: statistics of its output on the batch ``x``.

    Forward hooks on every activation module (ReLU, tanh, sigmoid, SELU, ...), one forward pass
    in eval mode without gradients. A *unit* is one non-batch position of the output (a feature
    of an MLP, a channel at one position of a CNN). Fields:

    - ``mean``, ``std``: mean and std over all output elements (batch and units together; the
      figures of the committed claims use this ``std``);
    - ``unit_std``: std of each unit across the batch (dim 0), averaged over the units: the
      ``post_std`` of :func:`initwise.diagnose`;
    - ``dead`` (ReLU family: ReLU, ReLU6, Hardtanh with lower bound 0): fraction of units that
      are exactly 0 for the whole batch; ``None`` for other activations (LeakyReLU is never
      dead). Same definition as :func:`initwise.diagnose`;
    - ``saturated``: fraction of outputs (units x batch) in the flat part of a saturating
      activation: ``|tanh| > 0.99`` (also softsign), ``sigmoid < 0.01 or > 0.99``, a hardtanh at
      its bounds; ``None`` for non-saturating activations. Same definition as
      :func:`initwise.diagnose` (with its default thresholds).
    """
    records: list[dict] = []

    def hook(module: nn.Module, _inp, out) -> None:
        y = out.detach().float()
        units = y.reshape(y.shape[0], -1) if y.dim() > 1 else y[:, None]
        unit_std = float(units.std(dim=0).mean()) if units.shape[0] > 1 else float("nan")
        rec = {"layer": len(records), "type": type(module).__name__,
               "mean": float(y.mean()), "std": float(y.std()), "unit_std": unit_std,
               "saturated": None, "dead": None}
        low = getattr(module, "min_val", None)
        if isinstance(module, _RELU_FAMILY) or (isinstance(module, nn.Hardtanh) and low == 0):
            rec["dead"] = float((units == 0).all(dim=0).float().mean())
        if isinstance(module, nn.Sigmoid):
            rec["saturated"] = float(((y < 0.01) | (y > 0.99)).float().mean())
        elif isinstance(module, _TANH_LIKE):
            rec["saturated"] = float((y.abs() > 0.99).float().mean())
        elif isinstance(module, nn.Hardtanh) and not isinstance(module, nn.ReLU6):
            sat = y >= module.max_val
            if low != 0:
                sat |= y <= module.min_val
            rec["saturated"] = float(sat.float().mean())
        records.append(rec)

    hooked_eval_pass(model, x, [m for m in model.modules() if isinstance(m, _ACTIVATION_TYPES)], hook)
    return records


def hooked_eval_pass(model: nn.Module, x: torch.Tensor, modules: list[nn.Module], hook) -> None:
    """One forward pass of ``model`` on ``x`` in eval mode without gradients, with the forward
    hook ``hook`` on each of ``modules``; hooks and the train/eval mode are restored after."""
    hooks = [m.register_forward_hook(hook) for m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
             ) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` on (x, y), without gradients.

    Non-finite logits count as wrong predictions (a diverged model is not credited with the
    class that ``argmax`` happens to return for NaN).
    """
    was_training = model.training
    model.eval()
    correct, loss_sum = 0, 0.0
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                logits = model(x[i:i + batch_size])
                target = y[i:i + batch_size]
                finite = torch.isfinite(logits).all(dim=1)
                correct += int(((logits.argmax(dim=1) == target) & finite).sum())
                loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
    finally:
        model.train(was_training)
    n = x.shape[0]
    return correct / n, loss_sum / n


# ---------------------------------------------------------------------------- training loop
def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Endless stream of index batches: a fresh permutation per epoch, remainder dropped."""
    batch_size = min(batch_size, n)
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i:i + batch_size]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over all parameters of ``model``."""
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr,
                                weight_decay=config.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def train(model: nn.Module, x_train: torch.Tensor, y_train: torch.Tensor,
          x_test: torch.Tensor, y_test: torch.Tensor, *, config: TrainConfig, seed: int,
          scheme: str = "", record_activations: bool = True,
          progress: Callable[[int], None] | None = None) -> RunResult:
    """Train ``model`` (already initialized) on (x_train, y_train) with ``config``.

    Mini-batches are drawn by a generator seeded with ``seed``: same seed, same data order.
    A non-finite training loss stops the run and marks it diverged (its remaining curve is not
    sampled; its final test accuracy is measured on the diverged weights).
    ``progress(n)`` is called with the number of steps just completed.
    """
    result = RunResult(scheme=scheme, seed=seed)
    n_act = min(512, x_test.shape[0])
    if record_activations:
        result.act_init = activation_stats(model, x_test[:n_act])
    result.row_spread_init = row_spread(model)
    opt = make_optimizer(model, config)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.functional.cross_entropy
    batches = _batches(x_train.shape[0], config.batch_size, gen)
    start = time.perf_counter()

    def sample(step: int, train_loss: float) -> None:
        acc, tloss = evaluate(model, x_test, y_test)
        result.steps.append(step)
        result.train_loss.append(train_loss)
        result.test_acc.append(acc)
        result.test_loss.append(tloss)

    with torch.no_grad():
        first = next(_batches(x_train.shape[0], config.batch_size,
                              torch.Generator().manual_seed(seed)))
        sample(0, float(loss_fn(model(x_train[first]), y_train[first])))
    model.train()
    window: list[float] = []
    reported = 0
    for step in range(1, config.steps + 1):
        idx = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        value = float(loss.detach())
        if not math.isfinite(value):
            result.diverged, result.diverged_step = True, step
            window.append(value)
            sample(step, value)
            break
        loss.backward()
        if config.clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        window.append(value)
        result.steps_done = step
        if step % config.eval_every == 0 or step == config.steps:
            sample(step, sum(window) / len(window))
            window = []
            if progress is not None:
                progress(step - reported)
                reported = step
    if progress is not None and reported < config.steps:
        progress(config.steps - reported)
    result.wall_time = time.perf_counter() - start
    result.row_spread_final = row_spread(model)
    if record_activations:
        result.act_final = activation_stats(model, x_test[:n_act])
    return result
