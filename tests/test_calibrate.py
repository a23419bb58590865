"""Centred output layers (:mod:`initwise.calibrate`): a classifier head reading ReLU features
starts with logits of mean 0 over the batch and the target variance between samples, the
initial loss near ln C on held-out digits; the plan re-applies bit for bit, refuses another
seed, survives JSON; a failing pass falls back with a warning; heads without a shared part, tied
or without a bias are left alone; the meta path gives the same bits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import initwise
from initwise.plan import Plan
from initwise.policies.targets import TARGET_CENTRED


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.data, dtype=torch.float32) / 16.0, torch.tensor(d.target)


def classifier() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def same(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_plan_marks_the_head_bias_and_apply_without_values_writes_zero():
    x, _ = digits()
    model = classifier()
    p = initwise.plan(model, x[:256])
    assert p["4.bias"].scheme == "centre" and p["4.bias"].params == {"weight": "4.weight"}
    assert p["2.bias"].scheme == "zeros"          # hidden layers: not centred
    p.apply(model, seed=0)                        # no data to measure: the bias starts at 0
    assert torch.count_nonzero(model[4].bias) == 0
    assert model[4].weight.std().item() == pytest.approx(p["4.weight"].std, rel=0.1)


def test_init_centres_the_logits_and_sets_their_variance():
    x, y = digits()
    model = classifier()
    p = initwise.init(model, x[:256], seed=0)
    with torch.no_grad():
        z = model(x[:256]).double()
    assert z.mean(0).abs().max() < 1e-5                                          # centred on the batch
    assert z.var(0, unbiased=False).mean().item() == pytest.approx(TARGET_CENTRED, rel=1e-4)
    with torch.no_grad():                                                        # held-out digits
        loss = F.cross_entropy(model(x[256:]), y[256:]).item()
    assert abs(loss - math.log(10)) < 0.1
    assert "scaled x" in p["4.weight"].reason and "Krähenbühl" in p["4.bias"].reason
    assert p["4.bias"].params["seed"] == 0 and len(p["4.bias"].params["values"]) == 10
    # without centring, the shared part of the ReLU features is a large offset per class
    plain = classifier()
    q = initwise.plan(plain, x[:256])
    q["4.bias"].scheme, q["4.bias"].params = "zeros", {}
    q.apply(plain, seed=0)
    with torch.no_grad():
        z0 = plain(x[:256]).double()
    assert (z0.mean(0) ** 2).mean() > 2 * z0.var(0).mean()   # measured: 3.5x


def test_centred_plan_reapplies_bit_for_bit_and_refuses_another_seed():
    x, _ = digits()
    a, b, c = classifier(), classifier(), classifier()
    p = initwise.init(a, x[:256], seed=3)
    p.apply(b, seed=3)
    assert same(a, b)
    q = Plan.from_dict(p.to_dict())
    q.apply(c, seed=3)
    assert same(a, c)
    with pytest.raises(ValueError, match="drawn with seed 3, not 4"):
        q.apply(c, seed=4)
    assert same(a, c)


def test_plancheck_rejects_bad_centre_params():
    x, _ = digits()
    p = initwise.init(classifier(), x[:256], seed=0).to_dict()
    entry = next(e for e in p["entries"] if e["name"] == "4.bias")
    entry["params"]["values"] = entry["params"]["values"][:3]
    with pytest.raises(ValueError, match=r"params.values.*list of 10 numbers"):
        Plan.from_dict(p)
    del entry["params"]["values"]
    with pytest.raises(ValueError, match="both 'seed' and 'values'"):
        Plan.from_dict(p)


class FailsSecondTime(nn.Module):
    """Runs once (the recorded pass), raises on every later call."""

    def __init__(self) -> None:
        super().__init__()
        self.net = classifier()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("second call")
        return self.net(x)


def test_failing_pass_falls_back_to_a_zero_bias_with_a_warning():
    x, _ = digits()
    model = FailsSecondTime()
    with pytest.warns(UserWarning, match="not centred on the data: the forward pass failed"):
        p = initwise.init(model, x[:256], seed=0)
    assert p["net.4.bias"].scheme == "zeros" and "not centred" in p.note
    assert torch.count_nonzero(model.net[4].bias) == 0
    ref = FailsSecondTime()
    p.apply(ref, seed=0)
    assert same(model, ref)


def test_heads_without_a_shared_part_tied_or_biasless_are_not_centred():
    x, _ = digits()
    torch.manual_seed(0)
    normed = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.LayerNorm(64), nn.Linear(64, 10))
    noise = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))   # samples share nothing
    assert initwise.plan(normed, noise)["3.bias"].scheme == "zeros"
    biasless = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10, bias=False))
    assert all(e.scheme != "centre" for e in initwise.plan(biasless, x[:256]))

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 16)
            self.head = nn.Linear(16, 10)
            self.head.weight = self.emb.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.emb(ids)).mean(1))

    ids = torch.randint(0, 10, (64, 5), generator=torch.Generator().manual_seed(0))
    assert initwise.plan(Tied(), ids)["head.bias"].scheme == "zeros"


def test_meta_model_gets_the_same_centred_bits():
    x, _ = digits()
    normal = classifier()
    p = initwise.init(normal, x[:256], seed=5)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    q = initwise.init(meta, x[:256], seed=5, device="cpu")
    assert same(normal, meta)
    assert q["4.bias"].params == p["4.bias"].params
