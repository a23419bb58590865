"""The training-evidence claims (claims_residual, claims_theory, claims_deep) and what they
measure with: mean-field quantities against known values, Jacobian spectra against exact
cases, the stdlib text loader, the small LM and its loop. Each claim runs at a tiny size (its
size constants shrunk, 1 seed, a few steps) to check its structure, never its verdict."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from initwise.experiments import claims_deep, claims_residual, claims_theory, text
from initwise.experiments.claims import CLAIM_STEPS, CLAIMS, UNTRAINED, run_claim
from initwise.experiments.lm import CharLM, LMConfig, lm_loss, train_lm
from initwise.experiments.meanfield import (
    c_star,
    chi_1,
    chi_c,
    critical_point,
    critical_sigma_w2,
    jacobian_factors,
    jacobian_log_singular_values,
    log_singular_values_of_product,
    q_star,
    xi_c,
)
from initwise.moments import act_moments

NEW = ("residual_mlp_100", "prenorm_lm_24", "saxe_deep_linear", "lsuv_relu_50", "edge_of_chaos",
       "dynamical_isometry", "delta_orthogonal_cnn", "residual_recipes")


# ----------------------------------------------------------------------------- mean field
def test_tanh_edge_of_chaos_at_sigma_b2_005_is_sigma_w2_176():
    # Schoenholz et al. 2017 (Fig. 1): for tanh with sigma_b^2 = 0.05 the critical sigma_w^2 ~ 1.76
    sw2 = critical_sigma_w2(0.05)
    assert abs(sw2 - 1.76) < 0.01
    assert abs(chi_1(sw2, 0.05) - 1.0) < 1e-6
    assert abs(chi_1(1.76, 0.05) - 1.0) < 2e-3
    assert chi_1(1.2, 0.05) < 1 < chi_1(2.5, 0.05)


def test_q_star_is_a_fixed_point_of_the_length_map_checked_by_monte_carlo():
    q = q_star(2.0, 0.05)
    z = torch.randn(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = 2.0 * float((torch.tanh(math.sqrt(q) * z) ** 2).mean()) + 0.05
    # sample std of tanh^2 is < 0.5, so 3 sigma of the mean of 400k samples is < 2.4e-3 (x 2)
    assert abs(mc - q) < 5e-3
    assert abs(2.0 * act_moments(torch.tanh, 0.0, q).m2 + 0.05 - q) < 1e-10


def test_ordered_phase_xi_c_is_minus_one_over_log_chi_1():
    assert c_star(1.0, 0.05) == 1.0
    assert chi_c(1.0, 0.05) == pytest.approx(chi_1(1.0, 0.05), rel=1e-12)
    assert xi_c(1.0, 0.05) == pytest.approx(-1 / math.log(chi_1(1.0, 0.05)), rel=1e-12)


def test_chaotic_phase_has_a_correlation_fixed_point_below_one():
    sw2, sb2 = 3.0, 0.05
    c = c_star(sw2, sb2)
    q = q_star(sw2, sb2)
    assert 0 < c < 1
    c_next = (sw2 * act_moments(torch.tanh, 0.0, q, rho=c).cross + sb2) / q
    assert abs(c_next - c) < 1e-6
    assert chi_c(sw2, sb2) < 1 < chi_1(sw2, sb2)   # stable at c*, unstable at 1
    assert 0 < xi_c(sw2, sb2) < math.inf


def test_critical_point_gives_the_chosen_fixed_point_and_chi_1_one():
    sw2, sb2 = critical_point(1 / 64)
    assert q_star(sw2, sb2) == pytest.approx(1 / 64, rel=1e-6)
    assert chi_1(sw2, sb2) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="positive"):
        critical_point(0.0)
    with pytest.raises(ValueError, match="sigma_w2"):
        q_star(-1.0, 0.0)


# ----------------------------------------------------------------------------- Jacobians
def test_orthogonal_linear_chain_has_all_singular_values_one():
    gen = torch.Generator().manual_seed(0)
    ws = [torch.linalg.qr(torch.randn(32, 32, generator=gen, dtype=torch.float64))[0]
          for _ in range(50)]
    log_sv = jacobian_log_singular_values(ws, None, torch.randn(32, dtype=torch.float64),
                                          phi=lambda z: z, dphi=torch.ones_like)
    assert log_sv.abs().max() < 1e-12
    assert claims_theory.isometry_fraction(log_sv) == 1.0


def test_jacobian_matches_autograd_on_a_small_tanh_net():
    gen = torch.Generator().manual_seed(1)
    ws = [torch.randn(8, 8, generator=gen, dtype=torch.float64) / math.sqrt(8) for _ in range(5)]
    bs = [0.1 * torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(5)]

    def f(x):
        for w, b in zip(ws, bs):
            x = torch.tanh(w @ x + b)
        return x

    x0 = torch.randn(8, generator=gen, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(f, x0)
    prod = torch.eye(8, dtype=torch.float64)
    for m in jacobian_factors(ws, bs, x0):
        prod = m @ prod
    assert torch.allclose(prod, jac, atol=1e-12)
    want = torch.linalg.svdvals(jac).log()
    assert torch.allclose(jacobian_log_singular_values(ws, bs, x0), want, atol=1e-6)
    with pytest.raises(ValueError, match="expected"):
        jacobian_factors([torch.eye(3)], None, torch.zeros(4))


def test_product_singular_values_beyond_float64_range_of_a_plain_svd():
    # Q_k S Q_{k-1}^T factors (condition 10^3 each): the product's singular values are S^L
    # exactly and span 150 decades, far below the ~1e-16 relative floor of an SVD of the product
    gen = torch.Generator().manual_seed(2)
    n, layers = 16, 50
    scale = torch.logspace(0, -3, n, dtype=torch.float64)         # per layer: 3 decades
    mats, q = [], torch.eye(n, dtype=torch.float64)
    for _ in range(layers):
        nxt = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
        mats.append(nxt @ torch.diag(scale) @ q.T)                 # = Q_k S Q_{k-1}^T
        q = nxt
    want = layers * scale.log()                                     # prod = Q_L S^L Q_0^T
    got = log_singular_values_of_product(mats)
    assert torch.allclose(got, want, atol=1e-9)
    assert (got[0] - got[-1]) / math.log(10) == pytest.approx(150, abs=1e-6)
    with pytest.raises(ValueError, match="square"):
        log_singular_values_of_product([torch.zeros(3, 4)])


def test_isometry_fraction_counts_within_a_factor_two_of_the_median():
    sv = torch.tensor([0.1, 0.6, 1.0, 1.5, 2.5], dtype=torch.float64)   # median 1.0
    assert claims_theory.isometry_fraction(sv.log()) == pytest.approx(3 / 5)


# ----------------------------------------------------------------------------- data, LM
def test_stdlib_text_is_fixed_sorted_disjoint_and_deterministic():
    assert list(text.TRAIN_FILES) == sorted(text.TRAIN_FILES)
    assert list(text.TEST_FILES) == sorted(text.TEST_FILES)
    assert not set(text.TRAIN_FILES) & set(text.TEST_FILES)
    d = text.load_text()
    assert d.train.numel() > 500_000 and d.test.numel() > 20_000
    assert int(d.train.max()) < text.VOCAB and int(d.train.min()) >= 0
    a = d.batch(4, 16, torch.Generator().manual_seed(3))
    b = d.batch(4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[0][:, 1:], a[1][:, :-1])
    assert torch.equal(d.test_windows(5, 16)[0], d.test_windows(5, 16)[0])
    assert text.encode("a\u00e9\n").tolist() == [97, 0, 10]


def test_stdlib_text_names_a_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        text.load_text(str(tmp_path))


def test_char_lm_is_causal_and_its_loop_is_deterministic():
    torch.manual_seed(0)
    m = CharLM(d=16, heads=2, blocks=2, context=8)
    x = torch.randint(0, 128, (2, 8))
    y = x.clone()
    y[:, 5] = (y[:, 5] + 1) % 128
    out_x, out_y = m(x), m(y)
    assert out_x.shape == (2, 8, 128)
    assert torch.allclose(out_x[:, :5], out_y[:, :5]) and not torch.allclose(out_x[:, 5], out_y[:, 5])
    with pytest.raises(ValueError, match="exceeds the context"):
        m(torch.zeros(1, 9, dtype=torch.long))
    data = text.load_text()
    cfg = LMConfig(steps=3, batch=2, context=8, eval_every=2, test_windows=4)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(train_lm(CharLM(d=16, heads=2, blocks=2, context=8), data, config=cfg, seed=5))
    assert runs[0].test_loss == runs[1].test_loss and runs[0].steps == [0, 2, 3]
    assert math.isfinite(lm_loss(m, *data.test_windows(4, 8)))
    with pytest.raises(ValueError, match="lr"):
        LMConfig(lr=0.0)


# ----------------------------------------------------------------------------- helpers
def test_whitened_digits_are_white_and_one_step_of_gd_solves_depth_one():
    z, y = claims_theory.whitened_digits(8)
    assert torch.allclose(z.T @ z / z.shape[0], torch.eye(8, dtype=torch.float64), atol=1e-8)
    w_star = y.T @ z / z.shape[0]
    l_star = float(0.5 * ((z @ w_star.T - y) ** 2).sum(1).mean())
    model = nn.Linear(8, 10, bias=False).double()
    # whitened inputs: the Hessian is I, so GD with lr 1 lands on the optimum in one step
    steps, losses = claims_theory.steps_to_loss(model, z, y, l_star + 1e-9, lr=1.0, max_steps=5)
    assert steps == 1 and losses[1] == pytest.approx(l_star, abs=1e-9)


def test_mean_field_init_draws_the_stated_variances():
    m = nn.Sequential(nn.Linear(256, 256), nn.Linear(256, 256))
    claims_theory.init_mean_field_(m, 2.0, 0.05, seed=0)
    w = torch.cat([m[0].weight.flatten(), m[1].weight.flatten()]).detach()   # 131k samples
    assert abs(float(w.var()) * 256 / 2.0 - 1) < 0.02                  # 3 sigma = 1.2%
    b = torch.cat([m[0].bias, m[1].bias]).detach()
    assert 0.03 < float(b.var()) < 0.07                                  # 512 samples


def test_linear_output_variances_hook_every_linear_in_order():
    m = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(64, 4)
    with torch.no_grad():
        h = m[0](x)
        want = [float(h.double().var()), float(m[2](m[1](h)).double().var())]
    assert claims_deep.linear_output_variances(m, x) == pytest.approx(want, rel=1e-6)


# ----------------------------------------------------------------------------- the claims
def test_registry_lists_every_claim_with_its_budget():
    assert len(CLAIMS) == 15 and set(NEW) <= set(CLAIMS) and set(CLAIMS) == set(CLAIM_STEPS)
    assert UNTRAINED == {"dynamical_isometry"}
    with pytest.raises(ValueError, match="takes no steps"):
        run_claim("dynamical_isometry", seeds=1, steps=3)


@pytest.fixture
def tiny(monkeypatch):
    """Shrink every new claim's sizes so that it runs in a second or two."""
    monkeypatch.setattr(claims_residual, "MLP_BLOCKS", 3)
    monkeypatch.setattr(claims_residual, "LM24", (16, 2, 2, 16))
    monkeypatch.setattr(claims_residual, "LM48", (16, 2, 2, 16))
    monkeypatch.setattr(claims_theory, "SAXE_DEPTHS", (1, 3))
    monkeypatch.setattr(claims_theory, "EOC_SIGMA_W2", (1.0, 2.0))
    monkeypatch.setattr(claims_theory, "EOC_DEPTHS", (2, 4))
    monkeypatch.setattr(claims_theory, "DI_DEPTH", 5)
    monkeypatch.setattr(claims_deep, "LSUV_DEPTH", 4)
    monkeypatch.setattr(claims_deep, "CNN_DEPTH", 3)
    monkeypatch.setattr(claims_deep, "CNN_CHANNELS", 4)


#: progress units per seed at the tiny sizes where they differ from CLAIM_STEPS' (full sizes)
TINY_UNITS = {"saxe_deep_linear": 2 * 2, "edge_of_chaos": 2 * 2}


@pytest.mark.parametrize("name", NEW)
def test_each_new_claim_runs_and_writes_its_report(name, tiny, tmp_path):
    ticks = []
    steps = None if name in UNTRAINED else 2
    result = run_claim(name, seeds=1, steps=steps, progress=lambda n, _label: ticks.append(n))
    assert result.name == name and isinstance(result.reproduced, bool)
    assert result.criterion and result.statement and result.figure
    assert result.command == f"initwise claim {name} --seeds 1" + ("" if steps is None else " --steps 2")
    units = TINY_UNITS.get(name, CLAIM_STEPS[name][0])
    assert sum(ticks) == units * (steps or 1)         # the progress bar's total, exactly
    paths = result.write(tmp_path / name)
    with open(paths["claim_json"]) as f:
        record = json.load(f)
    assert record["name"] == name and record["command"] == result.command
    with open(paths["claim_md"]) as f:
        md = f.read()
    assert result.body().splitlines()[0] in md
    pngs = [p for p in paths.values() if p.endswith(".png")]
    for p in pngs:
        with open(p, "rb") as f:
            assert f.read(4) == b"\x89PNG"
    assert pngs
    assert "results.json" in {p.rsplit("/", 1)[-1] for p in paths.values()}
    if name == "residual_recipes":                               # refusals are reported n/a
        assert "t_fixup" in result.measured["mlp_refused"]       # no attention in an MLP
        assert "fixup" in result.measured["lm_refused"]          # the LM has LayerNorms
        row = next(r for r in result.table.splitlines() if r.startswith("| t_fixup |"))
        assert "| n/a |" in row and "attention" in row


def test_cli_claim_refuses_steps_for_a_measurement_at_init(capsys):
    from initwise.cli import main

    assert main(["claim", "dynamical_isometry", "--steps", "5"]) == 2
    assert "takes no --steps" in capsys.readouterr().err
    assert main(["claim", "--list"]) == 0
    listing = capsys.readouterr().out
    assert all(n in listing for n in NEW)
