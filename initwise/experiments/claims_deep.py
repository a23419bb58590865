"""Claims on very deep plain networks: LSUV on a 50-layer ReLU MLP (Mishkin & Matas 2016) and
a 200-layer plain tanh CNN from delta-orthogonal weights (Xiao et al. 2018), on digits.

Each criterion was written into the code before its first run and is not tuned to pass.
"""
from __future__ import annotations

import math
import statistics

import torch
from torch import nn

from ..fills import normal_
from ..schemes import delta_orthogonal_, variance_scaling_
from .claimbase import ClaimResult, compare_models, pm
from .compare import Progress
from .datasets import load_dataset
from .meanfield import critical_point
from .models import cnn, mlp
from .training import TrainConfig, apply_experiment_scheme, hooked_eval_pass

__all__ = [
    "claim_delta_orthogonal_cnn",
    "claim_lsuv_relu_50",
    "init_delta_orthogonal_cnn_",
    "linear_output_variances",
]

LSUV_DEPTH, LSUV_WIDTH, LSUV_BATCH = 50, 128, 256


def linear_output_variances(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Variance (over batch and units together) of every ``nn.Linear``'s output on ``x``, in
    call order (one forward pass in eval mode without gradients)."""
    out: list[float] = []
    hooked_eval_pass(model, x, [m for m in model.modules() if isinstance(m, nn.Linear)],
                     lambda _m, _i, y: out.append(float(y.detach().double().var())))
    return out


def claim_lsuv_relu_50(seeds: int = 3, steps: int | None = None,
                       progress: Progress | None = None) -> ClaimResult:
    """initwise.lsuv on a 50-layer ReLU MLP (width 128, digits): every layer's output variance
    1 +- 0.1 at init, and it trains (training loss < 1.0 within 20 epochs)."""
    import initwise

    data = load_dataset("digits")
    epoch = data.x_train.shape[0] // 64            # steps per epoch at batch 64
    config = TrainConfig(steps=steps or 20 * epoch, eval_every=epoch)
    batch = data.x_train[:LSUV_BATCH]
    variances: dict[str, dict[int, dict[str, list[float]]]] = {}

    def init(model: nn.Module, scheme: str, seed: int) -> None:
        if scheme == "lsuv":
            initwise.lsuv(model, batch, seed=seed)
        else:
            apply_experiment_scheme(model, scheme, seed, example_input=batch[:8])
        variances.setdefault(scheme, {})[seed] = {
            "lsuv_batch": linear_output_variances(model, batch),
            "held_out": linear_output_variances(model, data.x_test)}

    schemes = ("lsuv", "auto", "torch")
    comp = compare_models(
        lambda: mlp(data.n_features, data.n_classes, depth=LSUV_DEPTH, width=LSUV_WIDTH),
        init, data, schemes=schemes, seeds=seeds, config=config,
        settings={"dataset": "digits", "arch": "mlp", "depth": LSUV_DEPTH, "width": LSUV_WIDTH,
                  "activation": "relu"}, progress=progress)
    worst = {s: max(abs(v - 1) for seed in variances[s] for v in variances[s][seed]["held_out"])
             for s in schemes}
    worst_batch = max(abs(v - 1) for seed in variances["lsuv"]
                      for v in variances["lsuv"][seed]["lsuv_batch"])
    n_epochs = config.steps // epoch
    best_epoch_loss = {s: [min(r.train_loss[1:]) for r in comp.runs_of(s)] for s in schemes}
    first_below = [next((i for i, v in enumerate(r.train_loss[1:], 1) if v < 1.0), None)
                   for r in comp.runs_of("lsuv")]
    ok = worst["lsuv"] <= 0.1 and all(e is not None for e in first_below)
    return ClaimResult(
        name="lsuv_relu_50",
        statement=f"initwise.lsuv (Mishkin & Matas 2016: initwise's plan, then each layer's "
                  f"weight rescaled in data-flow order until its output variance on a batch of "
                  f"{LSUV_BATCH} training inputs is 1 +- 0.1) on a {LSUV_DEPTH}-layer ReLU MLP of "
                  f"width {LSUV_WIDTH}: every layer's output variance is 1 +- 0.1 also on held-out "
                  "inputs, and the net trains on digits.",
        criterion="with lsuv, every Linear layer's output variance (over batch and units) on the "
                  "450 held-out test inputs is within 1 +- 0.1 at init on every seed, and on "
                  f"every seed some epoch's mean training loss is < 1.0 within {n_epochs} epochs "
                  "(default SGD recipe, batch 64)",
        comparison=comp,
        measured={"max_abs_var_minus_1_held_out": worst,
                  "max_abs_var_minus_1_lsuv_batch": worst_batch,
                  "first_epoch_loss_below_1": first_below,
                  "best_epoch_train_loss": best_epoch_loss, "variances": variances},
        reproduced=ok,
        figure=(f"worst layer at init, abs(var - 1) on held-out inputs: lsuv {worst['lsuv']:.3f} "
                f"(on its own batch {worst_batch:.3f}), auto {worst['auto']:.2f}, torch "
                f"{worst['torch']:.2f}; lsuv's training loss first < 1.0 in epoch "
                f"{', '.join('never' if e is None else str(e) for e in first_below)} (per seed); "
                f"test accuracy {pm(comp, 'lsuv')}, {pm(comp, 'auto')}, {pm(comp, 'torch')}"),
    )


# ---------------------------------------------------------------------------- Xiao et al.
CNN_DEPTH, CNN_CHANNELS, CNN_Q = 200, 16, 1 / 64


def init_delta_orthogonal_cnn_(model: nn.Module, scheme: str, seed: int,
                               example: torch.Tensor | None = None) -> nn.Module:
    """At the critical point of tanh with ``q* = 1/64`` (:func:`.meanfield.critical_point`):
    ``"delta_orthogonal"``: every convolution initwise.delta_orthogonal_ with gain sigma_w;
    ``"gaussian"``: every convolution N(0, sigma_w^2 / fan_in) over the whole kernel; both: the
    classifier N(0, sigma_w^2 / fan_in), every bias N(0, sigma_b^2). Any other name:
    :func:`~.training.apply_experiment_scheme` with the ``example`` input (real images: the
    standard plan reads the input's second moment from it)."""
    if scheme not in ("delta_orthogonal", "gaussian"):
        return apply_experiment_scheme(model, scheme, seed, example_input=example)
    sw2, sb2 = critical_point(CNN_Q)
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if isinstance(m, nn.Conv2d) and scheme == "delta_orthogonal":
                delta_orthogonal_(m.weight, gain=math.sqrt(sw2), generator=gen)
            else:
                variance_scaling_(m.weight, scale=sw2, mode="fan_in", generator=gen)
            normal_(m.bias, 0.0, math.sqrt(sb2), generator=gen)
    return model


def claim_delta_orthogonal_cnn(seeds: int = 3, steps: int | None = None,
                               progress: Progress | None = None) -> ClaimResult:
    """200-layer plain tanh CNN (16 channels, no norm, no residual) on digits: delta-orthogonal
    init at the critical point trains (Xiao et al. 2018); the Gaussian kernel of the same
    variance does worse."""
    data = load_dataset("digits")
    config = TrainConfig(steps=steps or 150, batch_size=32, eval_every=50)
    schemes = ("delta_orthogonal", "gaussian", "auto")
    images = data.as_images(data.x_train)
    comp = compare_models(
        lambda: cnn((1, 8, 8), data.n_classes, depth=CNN_DEPTH + 1, channels=CNN_CHANNELS,
                    activation="tanh"),
        lambda m, s, seed: init_delta_orthogonal_cnn_(m, s, seed, example=images[:8]),
        data, schemes=schemes, seeds=seeds, config=config,
        settings={"dataset": "digits", "arch": "cnn", "depth": CNN_DEPTH + 1,
                  "width": CNN_CHANNELS, "activation": "tanh"},
        x_train=images, x_test=data.as_images(data.x_test),
        progress=progress)
    acc = {s: statistics.fmean(r.final_test_acc for r in comp.runs_of(s)) for s in schemes}
    ok = acc["delta_orthogonal"] >= 0.8 and acc["delta_orthogonal"] > acc["gaussian"]
    sw2, sb2 = critical_point(CNN_Q)
    return ClaimResult(
        name="delta_orthogonal_cnn",
        statement=f"A {CNN_DEPTH}-layer plain tanh CNN ({CNN_CHANNELS} channels, 3x3, no "
                  "normalization, no residual connections, then a linear classifier) trains on "
                  "digits from delta-orthogonal kernels (initwise.delta_orthogonal_: zero but the "
                  f"centre tap, an orthogonal matrix times sigma_w) at the critical point q* = "
                  f"1/64 (sigma_w^2 = {sw2:.4f}, sigma_b^2 = {sb2:.2g}; Xiao et al. 2018); "
                  "Gaussian kernels of the same variance do worse. auto (initwise.init) for "
                  "reference.",
        criterion="delta_orthogonal's mean test accuracy >= 0.80 after the budget (SGD lr 0.001 "
                  "momentum 0.9, batch 32) and above the Gaussian's",
        comparison=comp,
        measured={"acc": acc, "sigma_w2": sw2, "sigma_b2": sb2},
        reproduced=ok,
        figure=", ".join(pm(comp, s) for s in schemes),
    )
