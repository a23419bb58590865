"""LSUV (Mishkin & Matas 2016) on top of a plan: unit output variance per layer on a 50-layer
ReLU MLP and a CNN, data-flow order, all or nothing, seeds, modes, the plan it returns, CLI."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise
from initwise.cli import main
from initwise.plan import Plan

TOL = 0.1


def mlp(depth: int = 50, width: int = 64, features: int = 16) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(width if i else features, width), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def cnn() -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(7):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
    layers += [nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 10)]
    return nn.Sequential(*layers)


def batch(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def output_variances(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """The variance of every Linear/Conv output on ``x``, measured independently of lsuv."""
    out: dict[str, float] = {}
    handles = [m.register_forward_hook(lambda mod, a, y, n=n: out.__setitem__(n, y.double().var(unbiased=False).item()))
               for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    was = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(was)
    for h in handles:
        h.remove()
    return out


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make, x", [(mlp, batch(512, 16)), (cnn, batch(64, 3, 8, 8))], ids=["mlp50", "cnn"])
def test_every_layer_has_unit_output_variance(make, x):
    torch.manual_seed(0)
    model = make()
    p = initwise.lsuv(model, x, seed=0)
    var = output_variances(model, x)
    assert len(var) == sum(isinstance(m, (nn.Linear, nn.Conv2d)) for m in model.modules())
    assert all(abs(v - 1.0) <= TOL for v in var.values()), var
    torch.manual_seed(0)   # without LSUV the deep layers are not all there (the claim is not trivial)
    plain = make()
    initwise.init(plain, x, seed=0)
    assert not all(abs(v - 1.0) <= TOL for v in output_variances(plain, x).values())
    assert "LSUV (Mishkin & Matas 2016)" in p["0.weight"].reason and "LSUV" in p.note


def test_the_plan_reapplies_to_the_same_values_and_round_trips_json():
    x = batch(256, 16)
    model = mlp(depth=10)
    p = initwise.lsuv(model, x, seed=5)
    assert p.seed == 5
    fresh = mlp(depth=10)
    Plan.from_json(p.to_json()).apply(fresh, seed=5)
    assert same(state(model), state(fresh))
    scaled = p["2.weight"]
    assert scaled.reason.count("scaled x") == 1 and abs(scaled.predicted_std - 1.0) <= TOL


def test_seed_gives_the_same_weights_whatever_the_model_held():
    x = batch(256, 16)
    torch.manual_seed(1)
    a = mlp(depth=8)
    torch.manual_seed(2)
    b = mlp(depth=8)
    pa, pb = initwise.lsuv(a, x, seed=3), initwise.lsuv(b, x, seed=3)
    assert same(state(a), state(b)) and pa == pb
    c = mlp(depth=8)
    initwise.lsuv(c, x, seed=4)
    assert not same(state(a), state(c))


def test_train_and_eval_flags_are_restored():
    x = batch(64, 16)
    model = mlp(depth=4)
    model.train()
    model[2].eval()
    flags = [m.training for m in model.modules()]
    initwise.lsuv(model, x, seed=0)
    assert [m.training for m in model.modules()] == flags
    model.eval()
    initwise.lsuv(model, x, seed=0)
    assert not any(m.training for m in model.modules())


class FailsLater(nn.Module):
    """An MLP whose forward pass fails on its ``n``-th call (after the plan and some rescalings)."""

    def __init__(self, n: int):
        super().__init__()
        self.body = mlp(depth=6)
        self.bn = nn.BatchNorm1d(10)
        self.calls, self.n = 0, n

    def forward(self, x):
        self.calls += 1
        if self.calls >= self.n:
            raise RuntimeError("the data loader broke")
        return self.bn(self.body(x))


def test_all_or_nothing():
    x = batch(64, 16)
    model = FailsLater(n=6)
    model.train()
    before = state(model)
    with pytest.raises(RuntimeError, match="data loader"):
        initwise.lsuv(model, x, seed=0)
    assert model.calls >= 6 and same(state(model), before) and model.training and model.bn.training


def test_layers_run_in_data_flow_order_not_registration_order():
    class Reversed(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Linear(32, 32)    # registered first, runs second
            self.early = nn.Linear(16, 32)

        def forward(self, x):
            return self.late(torch.relu(self.early(x)))

    x = batch(256, 16)
    model = Reversed()
    initwise.lsuv(model, x, seed=0, plan="orthogonal")
    var = output_variances(model, x)
    assert all(abs(v - 1.0) <= TOL for v in var.values()), var


def test_given_plan_is_copied_and_skipped_tensors_are_named():
    class Res(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Linear(16, 32)
            self.fc1, self.fc2 = nn.Linear(32, 32), nn.Linear(32, 32)
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            h = self.stem(x)
            h = h + self.fc2(F.relu(self.fc1(h)))
            return self.head(h)

    x = batch(128, 16)
    model = Res()
    base = initwise.plan(model, x, policy="skipinit")
    kept = copy.deepcopy(base)
    p = initwise.lsuv(model, x, plan=base, seed=0)
    assert base == kept                                   # not modified
    assert p["fc2.weight"].scheme == "zeros" and torch.count_nonzero(model.fc2.weight) == 0
    assert "fc2.weight (planned zeros)" in p.note
    assert abs(output_variances(model, x)["head"] - 1.0) <= TOL


@pytest.mark.parametrize("kw, err, match", [
    ({"tol": 1.0}, ValueError, "tol"), ({"target": 0}, ValueError, "target"),
    ({"max_iter": 0}, ValueError, "max_iter"), ({"seed": -1}, ValueError, "seed"),
    ({"plan": 3}, TypeError, "plan"),
])
def test_bad_arguments_name_the_argument(kw, err, match):
    model = mlp(depth=2)
    before = state(model)
    with pytest.raises(err, match=match):
        initwise.lsuv(model, batch(8, 16), **kw)
    assert same(state(model), before)


def test_cli_init_lsuv(tmp_path):
    target = tmp_path / "m.py"
    target.write_text("import torch.nn as nn\n\ndef make():\n    layers = []\n    for i in range(20):\n"
                      "        layers += [nn.Linear(32 if i else 8, 32), nn.ReLU()]\n"
                      "    return nn.Sequential(*layers, nn.Linear(32, 3))\n")
    out = tmp_path / "w.pt"
    assert main(["init", f"{target}:make", "--lsuv", "--input-shape", "256,8", "--seed", "1", "--save", str(out),
                 "--quiet"]) == 0
    model = initwise.load_target(f"{target}:make")
    model.load_state_dict(torch.load(out))
    x = torch.randn((256, 8), generator=torch.Generator().manual_seed(0))   # the CLI's batch
    assert all(abs(v - 1.0) <= TOL for v in output_variances(model, x).values())
    assert main(["init", f"{target}:make", "--lsuv", "--save", str(out)]) == 2
