"""Claims from the theory of deep random networks, measured on real data (digits):

- ``saxe_deep_linear`` (Saxe et al. 2014): deep linear nets learn in a depth-independent
  time from orthogonal weights, not from scaled Gaussian ones;
- ``edge_of_chaos`` (Schoenholz et al. 2017): a tanh MLP trains iff its depth is below ~6
  ``xi_c``, the correlation depth scale computed by :mod:`.meanfield`;
- ``dynamical_isometry`` (Pennington et al. 2017): at the critical point the input-output
  Jacobian of a 200-layer tanh net with orthogonal weights keeps its singular values close to
  each other; with Gaussian weights they spread over many orders of magnitude.

Each criterion was written into the code before its first run and is not tuned to pass.
"""
from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

from ..fills import normal_
from ..schemes import orthogonal_, variance_scaling_
from .claimbase import ClaimResult, figure, save_plot, seed_list
from .compare import Progress
from .datasets import load_dataset
from .meanfield import critical_point, jacobian_log_singular_values, xi_c
from .models import mlp
from .training import TrainConfig, seeded, train

__all__ = [
    "EOC_DEPTHS",
    "EOC_SIGMA_W2",
    "SAXE_DEPTHS",
    "claim_dynamical_isometry",
    "claim_edge_of_chaos",
    "claim_saxe_deep_linear",
    "steps_to_loss",
    "whitened_digits",
]


# ---------------------------------------------------------------------------- Saxe et al.
SAXE_DEPTHS: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
SAXE_WIDTH = 32        # = the number of whitened input components
SAXE_ETA = 0.1         # learning rate x depth


def whitened_digits(k: int = SAXE_WIDTH) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits training split projected on its ``k`` leading principal components and
    whitened (``Z^T Z / n = I``), and its one-hot targets: (Z (n, k), Y (n, 10)), float64."""
    data = load_dataset("digits")
    x = data.x_train.double()
    x = x - x.mean(0)
    evals, evecs = torch.linalg.eigh(x.T @ x / x.shape[0])
    top = evals.argsort(descending=True)[:k]
    z = x @ evecs[:, top] / evals[top].sqrt()
    y = nn.functional.one_hot(data.y_train, data.n_classes).double()
    return z, y


def steps_to_loss(model: nn.Module, z: torch.Tensor, y: torch.Tensor, target: float, lr: float,
                  max_steps: int) -> tuple[int | None, list[float]]:
    """Full-batch gradient descent on ``0.5 mean ||model(z) - y||^2`` until the loss is <=
    ``target``: (number of updates done when it first is, or ``None`` if not within
    ``max_steps`` or the loss became non-finite; the loss before each update)."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses = []
    for step in range(max_steps + 1):
        loss = 0.5 * ((model(z) - y) ** 2).sum(1).mean()
        value = float(loss.detach())
        losses.append(value)
        if not math.isfinite(value) or value > 1e6:
            return None, losses
        if value <= target:
            return step, losses
        if step == max_steps:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return None, losses


def _deep_linear(depth: int, k: int, classes: int) -> nn.Sequential:
    layers = [nn.Linear(k, k, bias=False) for _ in range(depth - 1)]
    return nn.Sequential(*layers, nn.Linear(k, classes, bias=False)).double()


def claim_saxe_deep_linear(seeds: int = 3, steps: int | None = None,
                           progress: Progress | None = None) -> ClaimResult:
    """Deep linear nets on whitened digits (Saxe et al. 2014): with orthogonal weights the
    learning time at depth 64 is at most 2x that at depth 1; with scaled Gaussian weights it
    grows with depth."""
    import initwise

    max_steps = steps or 1000
    seeds_ = seed_list(seeds)
    z, y = whitened_digits()
    w_star = y.T @ z / z.shape[0]                   # least squares on whitened inputs
    l_star = float(0.5 * ((z @ w_star.T - y) ** 2).sum(1).mean())
    l_zero = float(0.5 * (y ** 2).sum(1).mean())     # the zero map's loss
    target = l_star + 0.1 * (l_zero - l_star)
    schemes = {"orthogonal": "orthogonal", "gaussian": "lecun"}
    times: dict[str, dict[int, list[float]]] = {s: {d: [] for d in SAXE_DEPTHS} for s in schemes}
    curves: dict[str, dict[int, list[list[float]]]] = {s: {d: [] for d in SAXE_DEPTHS} for s in schemes}
    start = time.perf_counter()
    for label, policy in schemes.items():
        for depth in SAXE_DEPTHS:
            for seed in seeds_:
                with seeded(seed):
                    model = _deep_linear(depth, SAXE_WIDTH, y.shape[1])
                initwise.init(model, z[:4], policy=policy, seed=seed)
                t, losses = steps_to_loss(model, z, y, target, SAXE_ETA / depth, max_steps)
                times[label][depth].append(math.inf if t is None else float(t))
                curves[label][depth].append(losses[::max(1, len(losses) // 200)])
                if progress is not None:
                    progress(max_steps, f"{label} depth {depth} seed {seed}")
    wall = time.perf_counter() - start
    med = {s: {d: statistics.median(v) for d, v in times[s].items()} for s in schemes}
    o, g = med["orthogonal"], med["gaussian"]
    shallow, deep = SAXE_DEPTHS[0], SAXE_DEPTHS[-1]
    ok = o[deep] <= 2 * o[shallow] and g[deep] > 2 * g[shallow]

    def fmt(v: float) -> str:
        return "never" if math.isinf(v) else f"{v:.0f}"

    rows = [("| depth | orthogonal: steps (median; per seed) | scaled Gaussian: steps (median; "
             "per seed) |"), "|---|---|---|"]
    for d in SAXE_DEPTHS:
        rows.append(f"| {d} | {fmt(o[d])} ({', '.join(fmt(v) for v in times['orthogonal'][d])}) "
                    f"| {fmt(g[d])} ({', '.join(fmt(v) for v in times['gaussian'][d])}) |")

    def draw(path: str) -> str:
        fig = figure((6, 4.2))
        ax = fig.subplots()
        for s, color in (("orthogonal", "tab:red"), ("gaussian", "tab:blue")):
            finite = [(d, med[s][d]) for d in SAXE_DEPTHS if math.isfinite(med[s][d])]
            if finite:
                ax.plot(*zip(*finite), "o-", color=color, label=f"{s} (median)")
            for d in SAXE_DEPTHS:
                vals = [min(v, max_steps) for v in times[s][d]]
                ax.scatter([d] * len(vals), vals, color=color, s=10, alpha=0.5)
        ax.axhline(max_steps, color="gray", ls=":", lw=1, label="budget (never)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("depth (linear layers)")
        ax.set_ylabel("GD steps to the target loss")
        ax.set_title(f"deep linear nets, whitened digits, lr = {SAXE_ETA}/depth", fontsize=9)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        return save_plot(fig, path)

    return ClaimResult(
        name="saxe_deep_linear",
        statement="Deep linear networks (Saxe et al. 2014), trained by full-batch gradient "
                  f"descent (lr {SAXE_ETA}/depth) on digits whitened to {SAXE_WIDTH} principal "
                  "components, squared error to one-hot targets: from random orthogonal "
                  "weights (policy 'orthogonal') the learning time does not grow with depth; "
                  "from scaled Gaussian weights N(0, 1/fan_in) (policy 'lecun') it does.",
        criterion=f"learning time = GD steps until the training loss is <= L* + 0.1 (L0 - L*) "
                  f"(L* the least-squares optimum, L0 the zero map's loss; budget {max_steps} "
                  f"steps, not reaching = infinite), median over seeds: orthogonal's at depth "
                  f"{deep} <= 2x its depth-{shallow} time, and the Gaussian's at depth {deep} > 2x "
                  f"its depth-{shallow} time",
        table="\n".join(rows),
        data={"depths": list(SAXE_DEPTHS), "times": times, "target_loss": target,
              "least_squares_loss": l_star, "zero_map_loss": l_zero, "lr_times_depth": SAXE_ETA,
              "loss_curves_subsampled": curves},
        plots={"learning_time.png": draw},
        seeds=len(seeds_), steps=max_steps, wall_time=wall,
        measured={"median_steps": med, "target_loss": target},
        reproduced=ok,
        figure=("median GD steps to the target loss, depth "
                + " / ".join(str(d) for d in SAXE_DEPTHS) + ": orthogonal "
                + " / ".join(fmt(o[d]) for d in SAXE_DEPTHS) + ", scaled Gaussian "
                + " / ".join(fmt(g[d]) for d in SAXE_DEPTHS)),
    )


# ---------------------------------------------------------------------------- Schoenholz et al.
EOC_SIGMA_W2: tuple[float, ...] = (1.0, 1.5, 1.76, 2.0, 2.5, 3.0, 4.0)
EOC_DEPTHS: tuple[int, ...] = (10, 20, 40, 80, 160)
EOC_SIGMA_B2 = 0.05
EOC_WIDTH = 64
EOC_TRAINABLE = 0.5    # mean test accuracy that counts as trained (chance 0.10)


def init_mean_field_(model: nn.Module, sigma_w2: float, sigma_b2: float, seed: int) -> nn.Module:
    """Every ``Linear`` weight ~ N(0, sigma_w2 / fan_in) (initwise.variance_scaling_), every
    bias ~ N(0, sigma_b2) (initwise.fills.normal_; 0 when ``sigma_b2 = 0``), drawn from one
    generator seeded with ``seed`` in module order."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            variance_scaling_(m.weight, scale=sigma_w2, mode="fan_in", generator=gen)
            if m.bias is not None:
                if sigma_b2 > 0:
                    normal_(m.bias, 0.0, math.sqrt(sigma_b2), generator=gen)
                else:
                    with torch.no_grad():
                        m.bias.zero_()
    return model


def claim_edge_of_chaos(seeds: int = 3, steps: int | None = None,
                        progress: Progress | None = None) -> ClaimResult:
    """Tanh MLPs over a grid of sigma_w^2 x depth (Schoenholz et al. 2017): a net trains iff its
    depth is below ~6 xi_c, xi_c from initwise's quadrature."""
    config = TrainConfig(steps=steps or 300, eval_every=50)
    seeds_ = seed_list(seeds)
    data = load_dataset("digits")
    xi = {s: xi_c(s, EOC_SIGMA_B2) for s in EOC_SIGMA_W2}
    acc: dict[float, dict[int, list[float]]] = {s: {d: [] for d in EOC_DEPTHS} for s in EOC_SIGMA_W2}
    start = time.perf_counter()
    for sw2 in EOC_SIGMA_W2:
        for depth in EOC_DEPTHS:
            for seed in seeds_:
                with seeded(seed):
                    model = mlp(data.n_features, data.n_classes, depth=depth, width=EOC_WIDTH,
                                activation="tanh")
                init_mean_field_(model, sw2, EOC_SIGMA_B2, seed)
                label = f"sigma_w^2 {sw2} depth {depth} seed {seed}"
                cb = (lambda n, _l=label: progress(n, _l)) if progress else None
                run = train(model, data.x_train, data.y_train, data.x_test, data.y_test,
                            config=config, seed=seed, record_activations=False, progress=cb)
                acc[sw2][depth].append(run.final_test_acc)
    wall = time.perf_counter() - start
    mean = {s: {d: statistics.fmean(v) for d, v in acc[s].items()} for s in EOC_SIGMA_W2}
    cells = [(s, d) for s in EOC_SIGMA_W2 for d in EOC_DEPTHS]
    agree = [(mean[s][d] >= EOC_TRAINABLE) == (d < 6 * xi[s]) for s, d in cells]
    frac = sum(agree) / len(agree)
    ok = frac >= 0.8
    rows = ["| depth \\ sigma_w^2 | " + " | ".join(f"{s:g}" for s in EOC_SIGMA_W2) + " |",
            "|---|" + "---|" * len(EOC_SIGMA_W2),
            "| 6 xi_c | " + " | ".join("inf" if math.isinf(xi[s]) else f"{6 * xi[s]:.0f}"
                                      for s in EOC_SIGMA_W2) + " |"]
    for d in EOC_DEPTHS:
        cells_txt = []
        for s in EOC_SIGMA_W2:
            mark = "" if (mean[s][d] >= EOC_TRAINABLE) == (d < 6 * xi[s]) else " (x)"
            cells_txt.append(f"{mean[s][d]:.2f}{mark}")
        rows.append(f"| {d} | " + " | ".join(cells_txt) + " |")
    rows.append("")
    rows.append("Cells: mean test accuracy over seeds; (x): trained (>= "
                f"{EOC_TRAINABLE}) disagrees with depth < 6 xi_c.")

    def draw(path: str) -> str:
        import numpy as np

        fig = figure((6.5, 4.6))
        ax = fig.subplots()
        grid = np.array([[mean[s][d] for s in EOC_SIGMA_W2] for d in EOC_DEPTHS])
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1,
                       extent=(-0.5, len(EOC_SIGMA_W2) - 0.5, -0.5, len(EOC_DEPTHS) - 0.5))
        fig.colorbar(im, ax=ax, label="test accuracy (mean over seeds)")
        fine = np.linspace(EOC_SIGMA_W2[0], EOC_SIGMA_W2[-1], 37)
        xs = np.interp(fine, EOC_SIGMA_W2, range(len(EOC_SIGMA_W2)))
        ys = np.interp(np.log([max(1e-3, min(1e4, 6 * xi_c(s, EOC_SIGMA_B2))) for s in fine]),
                       np.log(EOC_DEPTHS), range(len(EOC_DEPTHS)), left=-0.5 - 1e-9,
                       right=len(EOC_DEPTHS) - 0.5 + 1e-9)
        ax.plot(xs, ys, "w--", lw=2, label="6 xi_c")
        ax.set_xticks(range(len(EOC_SIGMA_W2)), [f"{s:g}" for s in EOC_SIGMA_W2])
        ax.set_yticks(range(len(EOC_DEPTHS)), [str(d) for d in EOC_DEPTHS])
        ax.set_ylim(-0.5, len(EOC_DEPTHS) - 0.5)
        ax.set_xlabel("sigma_w^2")
        ax.set_ylabel("depth")
        ax.set_title(f"tanh MLP width {EOC_WIDTH}, sigma_b^2 {EOC_SIGMA_B2}, digits, "
                     f"{config.steps} SGD steps", fontsize=9)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        return save_plot(fig, path)

    return ClaimResult(
        name="edge_of_chaos",
        statement="Tanh MLPs (width 64, weights N(0, sigma_w^2/fan_in), biases N(0, 0.05)) on "
                  "digits train iff their depth is below ~6 xi_c (Schoenholz et al. 2017), "
                  "xi_c = -1/ln(chi_c) computed by initwise's Gauss-Legendre quadrature "
                  "(chi_c = chi_1 = sigma_w^2 E[tanh'(z)^2] at q* in the ordered phase, the "
                  "slope of the correlation map at c* in the chaotic one).",
        criterion=f"over the {len(cells)} cells (sigma_w^2 in {list(EOC_SIGMA_W2)}, depth in "
                  f"{list(EOC_DEPTHS)}), 'trained' (mean test accuracy >= {EOC_TRAINABLE} after "
                  f"{config.steps} steps of the default SGD recipe) equals 'depth < 6 xi_c' in "
                  ">= 80% of the cells",
        table="\n".join(rows),
        data={"sigma_w2": list(EOC_SIGMA_W2), "depths": list(EOC_DEPTHS),
              "sigma_b2": EOC_SIGMA_B2, "xi_c": {str(s): xi[s] for s in EOC_SIGMA_W2},
              "test_acc": {str(s): {str(d): v for d, v in acc[s].items()} for s in EOC_SIGMA_W2}},
        plots={"heatmap.png": draw},
        seeds=len(seeds_), steps=config.steps, wall_time=wall,
        measured={"agreement": frac, "six_xi_c": {str(s): 6 * xi[s] for s in EOC_SIGMA_W2}},
        reproduced=ok,
        figure=(f"trained iff depth < 6 xi_c in {sum(agree)}/{len(agree)} cells ({frac:.0%}); "
                "6 xi_c = " + ", ".join(f"{'inf' if math.isinf(xi[s]) else round(6 * xi[s])} "
                                        f"(sigma_w^2 {s:g})" for s in EOC_SIGMA_W2)),
    )


# ---------------------------------------------------------------------------- Pennington et al.
DI_DEPTH, DI_WIDTH, DI_Q = 200, 64, 1 / 64
DI_SCHEMES: tuple[str, ...] = ("orthogonal", "gaussian")


def isometry_fraction(log_sv: torch.Tensor) -> float:
    """Fraction of the singular values within a factor 2 of their median, from their logs
    (``|ln s - ln median| <= ln 2``; the median of an even count is the lower middle value)."""
    med = log_sv.median()
    return float(((log_sv - med).abs() <= math.log(2) + 1e-12).double().mean())


def claim_dynamical_isometry(seeds: int = 3, steps: int | None = None,
                             progress: Progress | None = None) -> ClaimResult:
    """200-layer tanh net at the critical point (Pennington et al. 2017): with orthogonal
    weights >= 80% of the input-output Jacobian's singular values lie within 2x of the median;
    with Gaussian weights far fewer. Measured at init, no training."""
    if steps is not None:
        raise ValueError("dynamical_isometry measures at initialization: it takes no --steps")
    seeds_ = seed_list(seeds)
    sw2, sb2 = critical_point(DI_Q)
    data = load_dataset("digits")
    fracs: dict[str, list[float]] = {"orthogonal": [], "gaussian": []}
    spectra: dict[str, list[list[float]]] = {"orthogonal": [], "gaussian": []}
    start = time.perf_counter()
    for seed in seeds_:
        x = data.x_test[seed].double()
        x = x * math.sqrt((DI_Q - sb2) / sw2 / float((x ** 2).mean()))   # E[h_1^2] = q*
        for scheme in DI_SCHEMES:
            gen = torch.Generator().manual_seed(seed)
            ws, bs = [], []
            for _ in range(DI_DEPTH):
                w = torch.empty(DI_WIDTH, DI_WIDTH)
                if scheme == "orthogonal":
                    orthogonal_(w, gain=math.sqrt(sw2), generator=gen)
                else:
                    variance_scaling_(w, scale=sw2, mode="fan_in", generator=gen)
                ws.append(w)
                bs.append(normal_(torch.empty(DI_WIDTH), 0.0, math.sqrt(sb2), generator=gen))
            log_sv = jacobian_log_singular_values(ws, bs, x)
            fracs[scheme].append(isometry_fraction(log_sv))
            spectra[scheme].append(log_sv.tolist())
            if progress is not None:
                progress(1, f"{scheme} seed {seed}")
    wall = time.perf_counter() - start
    mo, mg = statistics.fmean(fracs["orthogonal"]), statistics.fmean(fracs["gaussian"])
    ok = min(fracs["orthogonal"]) >= 0.8 and mg <= mo / 2

    def span(s: str) -> float:
        return statistics.fmean((max(v) - min(v)) / math.log(10) for v in spectra[s])

    rows = ["| weights | within 2x of the median (per seed) | mean | log10(max/min) (mean) |",
            "|---|---|---|---|"]
    for s in DI_SCHEMES:
        rows.append(f"| {s} | {', '.join(f'{f:.2f}' for f in fracs[s])} | "
                    f"{statistics.fmean(fracs[s]):.2f} | {span(s):.1f} |")

    def draw(path: str) -> str:
        import numpy as np

        fig = figure((6.5, 4.2))
        ax = fig.subplots()
        every = [(x - float(torch.tensor(v).median())) / math.log(10)
                 for s in DI_SCHEMES for v in spectra[s] for x in v]
        bins = np.linspace(min(every), max(every), 120)
        ax.set_yscale("log")
        for s, color in (("orthogonal", "tab:red"), ("gaussian", "tab:blue")):
            vals = np.concatenate([(np.asarray(v) - float(torch.tensor(v).median())) / math.log(10)
                                   for v in spectra[s]])
            ax.hist(vals, bins=bins, alpha=0.6, color=color, label=s)
        ax.axvspan(-math.log10(2), math.log10(2), color="gray", alpha=0.2, label="within 2x of the median")
        ax.set_xlabel("log10(singular value / median)")
        ax.set_ylabel("count (all seeds)")
        ax.set_title(f"input-output Jacobian of a {DI_DEPTH}-layer tanh net, width {DI_WIDTH}\n"
                     f"q* = 1/64: sigma_w^2 {sw2:.4f}, sigma_b^2 {sb2:.2g} (chi_1 = 1)", fontsize=9)
        ax.legend(fontsize=8, frameon=False)
        fig.tight_layout()
        return save_plot(fig, path)

    return ClaimResult(
        name="dynamical_isometry",
        statement=f"A {DI_DEPTH}-layer tanh net of width {DI_WIDTH} on the critical line with "
                  f"q* = 1/64 (sigma_w^2 = {sw2:.4f}, sigma_b^2 = {sb2:.3g}: chi_1 = 1) at a "
                  "digits input: with orthogonal weights (initwise.orthogonal_, gain sigma_w) "
                  "the input-output Jacobian's singular values stay within a factor 2 of each "
                  "other (dynamical isometry, Pennington et al. 2017); with Gaussian weights of "
                  "the same variance they spread over many orders of magnitude.",
        criterion=">= 80% of the singular values within [median/2, 2 median] with orthogonal "
                  "weights on every seed, and the Gaussian's mean fraction at most half the "
                  "orthogonal's",
        table="\n".join(rows),
        data={"sigma_w2": sw2, "sigma_b2": sb2, "q_star": DI_Q, "depth": DI_DEPTH,
              "width": DI_WIDTH, "fractions": fracs, "log_singular_values": spectra,
              "method": "one-sided Jacobi on the factored product, in log scale "
                        "(meanfield.log_singular_values_of_product)"},
        plots={"spectrum.png": draw},
        seeds=len(seeds_), steps=None, wall_time=wall,
        measured={"fraction_within_2x": fracs, "log10_span": {s: span(s) for s in fracs}},
        reproduced=ok,
        figure=(f"singular values within 2x of the median: orthogonal "
                f"{', '.join(f'{f:.2f}' for f in fracs['orthogonal'])}, Gaussian "
                f"{', '.join(f'{f:.2f}' for f in fracs['gaussian'])}; log10(max/min): "
                f"orthogonal {span('orthogonal'):.1f}, Gaussian {span('gaussian'):.1f}"),
    )
