"""Tests for initwise.diagnose: measurements, verdicts on real runs, output, safety."""
from __future__ import annotations

import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise
from initwise import cli
from initwise.diagnose import (
    Comparison,
    DiagnosisThresholds,
    _chained,
    _duplicate_mask,
    _per_layer,
    compare_schemes,
    diagnose,
    plot_reports,
)

WIDTH = 128
BATCH = 128


pytestmark = pytest.mark.usefixtures("one_thread")


def make_mlp(depth: int, activation: type[nn.Module], width: int = WIDTH) -> nn.Sequential:
    """``depth`` Linear layers, ``activation`` after all but the last (torch's default init)."""
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), activation()]
    layers.append(nn.Linear(width, width))
    return nn.Sequential(*layers)


def initialized(depth: int, activation: type[nn.Module], scheme: str, seed: int = 0) -> nn.Module:
    """A ``depth``-layer MLP built with the global RNG seeded, then ``initwise.init(policy=scheme)``
    ("torch" = as built; "normal1" = every weight N(0, 1), biases zero)."""
    torch.manual_seed(seed)
    model = make_mlp(depth, activation)
    if scheme == "normal1":
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model:
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, 1.0, generator=gen)
                    m.bias.zero_()
    elif scheme != "torch":
        initwise.init(model, policy=scheme, seed=seed)
    return model


def batch(seed: int = 1, n: int = BATCH, width: int = WIDTH) -> torch.Tensor:
    return torch.randn(n, width, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------- point 3
VERDICT_CASES = [
    # (depth, activation, scheme, kind that must be reported, kinds that must not be)
    (20, nn.ReLU, "zeros", "symmetry", {"healthy"}),
    (20, nn.Tanh, "small_normal", "vanishing", {"healthy", "exploding"}),
    (50, nn.ReLU, "torch", "vanishing", {"healthy", "exploding"}),
    (50, nn.ReLU, "xavier_normal", "vanishing", {"healthy", "exploding"}),
]
HEALTHY_CASES = [
    (50, nn.ReLU, "he"),
    (50, nn.Tanh, "xavier_normal"),
    (50, nn.SELU, "lecun"),
]


@pytest.mark.parametrize("depth, act, scheme, kind, absent", VERDICT_CASES,
                         ids=[f"{c[2]}-{c[1].__name__}-{c[0]}" for c in VERDICT_CASES])
def test_verdict_problem_cases(depth, act, scheme, kind, absent):
    report = diagnose(initialized(depth, act, scheme), batch())
    assert kind in report.kinds, report.verdicts
    assert not (absent & report.kinds), report.verdicts
    assert not report.healthy


def test_verdict_symmetry_names_the_layer_and_cause():
    report = diagnose(initialized(20, nn.ReLU, "zeros"), batch())
    text = next(f.text for f in report.findings if f.kind == "symmetry")
    assert text.startswith(f"symmetry: all {WIDTH} units of 0 are identical (zero initialization)")
    assert all(layer.duplicates == WIDTH for layer in report.layers)


def test_verdict_normal1_tanh_saturates():
    report = diagnose(initialized(20, nn.Tanh, "normal1"), batch())
    assert {"saturation"} <= report.kinds or {"exploding"} <= report.kinds, report.verdicts
    text = next(f.text for f in report.findings if f.kind == "saturation")
    # |tanh| > 0.99 for most outputs of every hidden layer
    assert re.match(r"saturation: \d+% of unit outputs saturated \(tanh", text)
    assert "layers 1-19" in text
    assert all(layer.saturated > 0.5 for layer in report.layers[:-1])


@pytest.mark.parametrize("depth, act, scheme", HEALTHY_CASES,
                         ids=[f"{c[2]}-{c[1].__name__}-{c[0]}" for c in HEALTHY_CASES])
def test_verdict_healthy_cases(depth, act, scheme):
    report = diagnose(initialized(depth, act, scheme), batch())
    assert report.kinds == {"healthy"}, report.verdicts
    assert report.verdicts[0].startswith("healthy: along chains of layers, activation std within [")


def test_torch_default_relu50_vanishes_despite_bias_offset():
    """Issue example: the overall std stays ~0.05 (biases), the across-batch std is ~1e-9."""
    model = initialized(50, nn.ReLU, "torch")
    x = batch()
    report = diagnose(model, x)
    with torch.no_grad():
        h = x
        for m in list(model)[:-1]:
            h = m(h)
        last = model[-1](h)
    assert 0.01 < float(last.std()) < 0.2  # the constant offset the biases leave
    assert report.layers[-1].out_std < 1e-6  # no signal left across the batch
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    m = re.match(r"activations vanish: std falls x[\d.e+-]+ along the chain of \d+ layers from 0 to \d+, from "
                 r"([\d.e+-]+) at layer 1 \(0\) to ([\d.e+-]+) at layer (\d+) \(\d+\) \(x([\d.]+) per layer\)", text)
    assert m, text
    assert float(m.group(2)) < 1e-6 and 0.3 < float(m.group(4)) < 0.8


def test_vanishing_sentence_numbers_match_rows():
    report = diagnose(initialized(20, nn.Tanh, "small_normal"), batch())
    first, last = report.layers[0], report.layers[-1]
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    assert f"from {first.out_std:.2g} at layer 1 (0) to {last.out_std:.2g} at layer 20 (38)" in text
    per_layer = (last.out_std / first.out_std) ** (1 / 19)
    assert f"(x{per_layer:.2f} per layer)" in text
    # N(0, 0.01) with fan-in 128 multiplies the std by about 0.01 * sqrt(128) = 0.113 per layer
    assert per_layer == pytest.approx(0.01 * math.sqrt(WIDTH), rel=0.1)
    assert "gradient_vanishing" in report.kinds


# ----------------------------------------------------------------------------- thresholds
def test_thresholds_are_overridable_and_validated():
    model = initialized(10, nn.ReLU, "xavier_normal")  # x0.7 per layer: 0.04 after 10 layers
    x = batch()
    assert "vanishing" not in diagnose(model, x).kinds
    strict = diagnose(model, x, thresholds=DiagnosisThresholds(vanish=0.1))
    assert "vanishing" in strict.kinds
    with pytest.raises(ValueError, match="vanish"):
        DiagnosisThresholds(vanish=2.0)
    with pytest.raises(ValueError, match="dead"):
        DiagnosisThresholds(dead=1.5)
    with pytest.raises(TypeError, match="DiagnosisThresholds"):
        diagnose(model, x, thresholds={"vanish": 0.1})
    with pytest.raises(AttributeError):
        DiagnosisThresholds().vanish = 0.5  # frozen


# ----------------------------------------------------------------------------- pooling, size changes
def test_chained_ratios_skip_size_changes_exactly():
    # sizes 8, 8, 8 | 2, 2: the step 3 -> 4 (pooling) counts as x1
    chain, counted, skipped = _chained([1.0, 0.5, 0.25, 0.01, 0.005], [8, 8, 8, 2, 2])
    assert chain == [1.0, 0.5, 0.25, 0.25, 0.125]
    assert counted == [0, 1, 2, 2, 3] and skipped == [0, 0, 0, 1, 1]
    # an exact 0 is 0 whatever the step, and the chain stays there
    assert _chained([1.0, 2.0, 0.0, 3.0], [4, 1, 1, 1])[0] == [1.0, 1.0, 0.0, 0.0]
    assert _chained([1.0, 2.0], [None, None])[0] == [1.0, 1.0]  # unknown sizes: not compared


def test_per_layer_factor_has_two_significant_digits():
    assert _per_layer(1e-30, 10) == " (x0.001 per layer)"
    assert _per_layer(0.5 ** 10, 10) == " (x0.5 per layer)"
    assert _per_layer(0.0, 3) == " (to 0)" and _per_layer(0.3, 0) == ""
    # N(0, 1e-4) on a tanh MLP of width 128: x(1e-4 * sqrt(128)) = x0.0011 per layer
    torch.manual_seed(0)
    model = make_mlp(6, nn.Tanh)
    with torch.no_grad():
        for m in model[::2]:
            m.weight.normal_(0.0, 1e-4, generator=torch.Generator().manual_seed(0))
            m.bias.zero_()
    report = diagnose(model, batch())
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    assert "x0.00 " not in text, text
    factor = float(re.search(r"\(x([\d.e+-]+) per layer\)", text).group(1))
    assert factor == pytest.approx(1e-4 * math.sqrt(WIDTH), rel=0.15), text


def gap_cnn(convs: int, channels: int = 16, bn: bool = False) -> nn.Sequential:
    """``convs`` 3x3 convs (same resolution) + ReLU (+ BatchNorm), global average pool, Linear."""
    layers: list[nn.Module] = []
    c_in = 3
    for _ in range(convs):
        layers += [nn.Conv2d(c_in, channels, 3, padding=1),
                   *([nn.BatchNorm2d(channels)] if bn else []), nn.ReLU()]
        c_in = channels
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 10))


def images(hw: int, n: int = 32) -> torch.Tensor:
    return torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(1))


def test_pooled_cnn_verdict_does_not_depend_on_input_size():
    """Global average pooling shrinks the head's activations ~sqrt(HW) and the convs' gradients
    ~HW: architecture, not initialization. The same He net is healthy at 8x8 and 32x32."""
    kinds = {}
    for hw in (8, 32):
        torch.manual_seed(0)
        model = gap_cnn(4)
        initwise.init(model, policy="he", seed=0)
        report = diagnose(model, images(hw))
        kinds[hw] = report.kinds
        assert [r.out_numel for r in report.layers] == [16 * hw * hw] * 4 + [10]
        assert json.loads(report.to_json())["layers"][0]["out_numel"] == 16 * hw * hw
        raw_grad = report.layers[0].grad_out_std / report.layers[-1].grad_out_std
        if hw == 32:  # the raw ratios the verdicts must not be fooled by
            assert raw_grad < 1e-2
    assert kinds[8] == kinds[32] == {"healthy"}


def test_batchnorm_cnn_auto_gradients_not_called_vanishing():
    torch.manual_seed(0)
    model = gap_cnn(8, bn=True)
    x = images(16)
    initwise.init(model, x, seed=0)
    report = diagnose(model, x)
    assert report.layers[0].grad_out_std / report.layers[-1].grad_out_std < 0.15  # raw, pooled: measured 0.096
    assert "gradient_vanishing" not in report.kinds, report.verdicts
    assert report.healthy, report.verdicts


def test_xavier_plain_relu_cnn_still_vanishes():
    """No BatchNorm, same resolution: Xavier's x0.7 per ReLU layer is caught between convs."""
    torch.manual_seed(0)
    model = gap_cnn(12)
    initwise.init(model, policy="xavier_normal", seed=0)
    report = diagnose(model, images(16))
    assert "vanishing" in report.kinds, report.verdicts
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    # the head's step is judged (its own gain and the ReLU before the pool), the pool is not
    first, conv, head = report.layers[0], report.layers[11], report.layers[12]
    chain = ((conv.out_std / first.out_std) * (conv.post_std / conv.out_std)
             * (head.out_std / head.in_std))
    assert f"std falls x{chain:.2g} along the chain of 13 layers from 0 to 26, from" in text, text
    assert head.out_std / first.out_std < chain / 4  # raw: the pooling's 1/sqrt(HW) on top
    # torch's default is worse (x0.4 per layer) and its gradients vanish too, across the pooling
    torch.manual_seed(0)
    report = diagnose(gap_cnn(12), images(16))
    assert {"vanishing", "gradient_vanishing"} <= report.kinds, report.verdicts
    text = next(f.text for f in report.findings if f.kind == "gradient_vanishing")
    assert "at 1 step(s) where the size changes between layers" in text, text
    # a max-pool between convs: the chained factor leaves it out, and the sentence says so
    torch.manual_seed(0)
    model = nn.Sequential(*gap_cnn(12)[:12], nn.MaxPool2d(2), *gap_cnn(12)[12:24])
    initwise.init(model, policy="xavier_normal", seed=0)
    report = diagnose(model, images(16))
    first, last = report.layers[0], report.layers[11]
    before, after = report.layers[5], report.layers[6]
    chain = ((last.out_std / after.out_std) * (after.out_std / after.in_std)
             * (before.post_std / before.out_std) * (before.out_std / first.out_std))
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    assert text.startswith(f"activations vanish: std falls x{chain:.2g} along the chain of 12 layers from 0 "
                           f"to 23, from {first.out_std:.2g} at layer 1 (0) to {last.out_std:.2g} at layer 12 "
                           f"(23) (x{chain ** (1 / 11):.2g} per layer); at 1 step(s)"), text


# ----------------------------------------------------------------------------- point 1: measurements
class Functional(nn.Module):
    """Activations as functions and methods, a norm between layer and activation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.bn = nn.BatchNorm1d(16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 16)
        self.fc4 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.fc1(x)))
        h = torch.tanh(self.fc2(h))
        h = self.fc3(h).sigmoid()
        return self.fc4(h)


def test_rows_in_data_flow_order_with_activations():
    class Reordered(Functional):
        def __init__(self) -> None:
            super().__init__()
            # declared in another order than used
            self.fc4, self.fc1 = self.fc1, self.fc4

        def forward(self, x):
            h = F.relu(self.bn(self.fc4(x)))
            h = torch.tanh(self.fc2(h))
            h = self.fc3(h).sigmoid()
            return self.fc1(h)

    torch.manual_seed(0)
    report = diagnose(Reordered(), torch.randn(64, 8))
    assert [r.name for r in report.layers] == ["fc4", "fc2", "fc3", "fc1"]
    assert [r.activation for r in report.layers] == ["relu", "tanh", "sigmoid", None]
    assert [r.index for r in report.layers] == [1, 2, 3, 4]
    assert [r.type for r in report.layers] == ["Linear"] * 4
    assert report.layers[0].weight_shape == (16, 8) and report.layers[0].units == 16


def test_statistics_match_hand_computation():
    torch.manual_seed(0)
    model = Functional()
    x = torch.randn(64, 8)
    model.train()
    report = diagnose(model, x)
    model2 = Functional()
    model2.load_state_dict(model.state_dict())
    model2.train()
    z1 = model2.fc1(x)
    z1.retain_grad()
    a1 = F.relu(model2.bn(z1))
    z2 = model2.fc2(a1)
    z2.retain_grad()
    a2 = torch.tanh(z2)
    z3 = model2.fc3(a2)
    a3 = z3.sigmoid()
    out = model2.fc4(a3)
    out.retain_grad()
    loss = out.square().mean()
    loss.backward()
    model2_grads = {"z1": z1.grad}
    z1, a1, a2, a3, loss = z1.detach(), a1.detach(), a2.detach(), a3.detach(), loss.detach()
    r1, r2, r3, r4 = report.layers
    assert report.loss == pytest.approx(float(loss), rel=1e-6)
    assert r1.out_mean == pytest.approx(float(z1.mean()), abs=1e-6)
    assert r1.out_std == pytest.approx(float(z1.std(dim=0).mean()), rel=1e-5)
    assert r1.post_std == pytest.approx(float(a1.std(dim=0).mean()), rel=1e-5)
    assert r2.post_std == pytest.approx(float(a2.std(dim=0).mean()), rel=1e-5)
    assert r1.dead == pytest.approx(float((a1 == 0).all(dim=0).float().mean()))
    assert r2.dead is None and r4.dead is None  # not a ReLU
    assert r2.saturated == pytest.approx(float((a2.abs() > 0.99).float().mean()))
    assert r3.saturated == pytest.approx(float(((a3 < 0.01) | (a3 > 0.99)).float().mean()))
    assert r1.saturated is None and r4.saturated is None
    assert r1.grad_out_std == pytest.approx(float(model2_grads["z1"].std()), rel=1e-5)
    assert r2.grad_out_std == pytest.approx(float(z2.grad.std()), rel=1e-5)
    assert r4.grad_out_std == pytest.approx(float(out.grad.std()), rel=1e-5)
    assert r1.grad_weight_std == pytest.approx(float(model2.fc1.weight.grad.std()), rel=1e-5)
    assert r4.grad_weight_std == pytest.approx(float(model2.fc4.weight.grad.std()), rel=1e-5)
    assert report.input_std == pytest.approx(float(x.std(dim=0).mean()), rel=1e-5)


class InPlace(nn.Module):
    """Same-shaped layers (measured together), in-place activations and a residual ``+=`` on a
    layer's output, hardtanh and relu6; ``hidden=True`` writes in place behind the recorder."""

    def __init__(self, hidden: bool = False) -> None:
        super().__init__()
        self.hidden = hidden
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 16)
        self.fc4 = nn.Linear(16, 16)
        self.fc5 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor, reference: dict | None = None) -> torch.Tensor:
        keep = (lambda key, t: reference.__setitem__(key, t.detach().clone())) if reference is not None else (lambda key, t: None)
        z1 = self.fc1(x)
        keep("z1", z1)
        a1 = F.relu(z1, inplace=True)
        keep("a1", a1)
        z2 = self.fc2(a1)
        keep("z2", z2)
        z2 += a1  # the layer's output changes after the layer
        a2 = torch.tanh(z2)
        keep("a2", a2)
        z3 = self.fc3(a2)
        keep("z3", z3)
        a3 = F.hardtanh(z3, -0.5, 0.5)
        keep("a3", a3)
        z4 = self.fc4(a3)
        keep("z4", z4)
        if self.hidden:
            with torch._C.DisableTorchFunction():  # not seen by diagnose's torch-function mode
                z4.mul_(3.0)
        a4 = F.relu6(z4)
        keep("a4", a4)
        out = self.fc5(a4)
        keep("z5", out)
        return out


@pytest.mark.parametrize("hidden", [False, True], ids=["seen", "hidden-in-place"])
def test_batched_statistics_equal_reference_per_layer(hidden):
    """The statistics computed after the backward pass, several layers at once, equal a plain
    per-layer computation on the values each layer produced (before any later in-place
    change), also when the model writes into a layer's output behind diagnose's back."""
    torch.manual_seed(0)
    model = InPlace(hidden)
    x = torch.randn(48, 8, generator=torch.Generator().manual_seed(3))
    with torch.random.fork_rng(devices=[]):
        report = diagnose(model, x, samples=100)
    ref: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model(x, ref)
    # gradients w.r.t. each layer's output, from a copy of the model without in-place writes
    zs = {}
    with torch.enable_grad():
        z1 = model.fc1(x)
        z2 = model.fc2(F.relu(z1))
        z3 = model.fc3(torch.tanh(z2 + F.relu(z1)))
        z4 = model.fc4(F.hardtanh(z3, -0.5, 0.5))
        z5 = model.fc5(F.relu6(z4 * 3.0 if hidden else z4))
        zs = {"z1": z1, "z2": z2, "z3": z3, "z4": z4, "z5": z5}
        ws = [getattr(model, f"fc{i}").weight for i in range(1, 6)]
        grads = torch.autograd.grad(z5.square().mean(), [*zs.values(), *ws])
    posts = {"z1": ("a1", "relu"), "z2": ("a2", "tanh"), "z3": ("a3", "hardtanh"),
             "z4": ("a4", "relu6"), "z5": (None, None)}
    assert [r.name for r in report.layers] == ["fc1", "fc2", "fc3", "fc4", "fc5"]
    for i, (r, key) in enumerate(zip(report.layers, zs)):
        z = ref[key]
        post_key, act = posts[key]
        a = ref[post_key] if post_key else z
        assert r.activation == act
        assert r.out_mean == pytest.approx(float(z.mean()), rel=1e-5, abs=1e-7), key
        assert r.out_std == pytest.approx(float(z.std(dim=0).mean()), rel=1e-5), key
        assert r.post_std == pytest.approx(float(a.std(dim=0).mean()), rel=1e-5), key
        flat = a.reshape(-1)
        assert torch.equal(r.samples, flat[:: -(-flat.numel() // 100)]), key
        dead = float((a == 0).all(dim=0).float().mean()) if act in ("relu", "relu6") else None
        assert r.dead == dead, key
        saturated = {"tanh": lambda: (a.abs() > 0.99).float().mean(),
                     "hardtanh": lambda: ((a >= 0.5) | (a <= -0.5)).float().mean()}.get(act)
        assert r.saturated == (None if saturated is None else float(saturated())), key
        assert r.grad_out_std == pytest.approx(float(grads[i].std()), rel=1e-5), key
        assert r.grad_weight_std == pytest.approx(float(grads[5 + i].std()), rel=1e-5), key
        assert r.duplicates == 0


def test_batched_duplicate_check_finds_planted_twins():
    """Many same-shaped layers checked together: exactly the layers with planted twins."""
    torch.manual_seed(0)
    model = make_mlp(12, nn.Tanh, width=24)
    initwise.init(model, policy="xavier_normal", seed=0)
    with torch.no_grad():
        for i, (a, b) in {2: (3, 17), 7: (0, 23), 9: (5, 6)}.items():
            model[2 * i].weight[b] = model[2 * i].weight[a]
            model[2 * i].bias[b] = model[2 * i].bias[a]
    report = diagnose(model, batch(width=24))
    assert [r.duplicates for r in report.layers] == [2 if i in (2, 7, 9) else 0 for i in range(12)]
    assert {r.duplicate_cause for r in report.layers if r.duplicates} == {"identical weight rows"}


def test_dead_and_saturated_fractions_known_values():
    lin = nn.Linear(4, 6)
    with torch.no_grad():
        lin.weight.zero_()
        lin.weight[:, 0] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        lin.bias.copy_(torch.tensor([-100.0, -100.0, 0.0, 0.0, 0.0, 0.0]))  # units 0, 1 dead
    x = torch.randn(200, 4, generator=torch.Generator().manual_seed(0))
    report = diagnose(nn.Sequential(lin, nn.ReLU(), nn.Linear(6, 2)), x)
    assert report.layers[0].dead == pytest.approx(2 / 6)
    lin2 = nn.Linear(1, 1)
    with torch.no_grad():
        lin2.weight.fill_(1.0)
        lin2.bias.zero_()
    # |tanh(z)| > 0.99 <=> |z| > atanh(0.99) = 2.6467
    z = torch.tensor([[-3.0], [-2.0], [0.0], [1.0], [2.7], [5.0], [0.5], [-2.6]])
    report = diagnose(nn.Sequential(lin2, nn.Tanh(), nn.Linear(1, 1)), z)
    assert report.layers[0].saturated == pytest.approx(3 / 8)


def test_default_losses_and_custom_loss():
    torch.manual_seed(0)
    model = make_mlp(3, nn.ReLU, width=16)
    x = torch.randn(32, 16)
    with torch.no_grad():
        out = model(x)
    labels = torch.randint(0, 16, (32,))
    assert diagnose(model, x).loss == pytest.approx(float(out.square().mean()), rel=1e-6)
    assert diagnose(model, x, labels).loss == pytest.approx(float(F.cross_entropy(out, labels)),
                                                            rel=1e-6)
    target = torch.randn(32, 16)
    assert diagnose(model, x, target).loss == pytest.approx(float(F.mse_loss(out, target)),
                                                            rel=1e-6)
    custom = diagnose(model, x, target, loss_fn=lambda o, t: (o - t).abs().mean())
    assert custom.loss == pytest.approx(float((out - target).abs().mean()), rel=1e-6)
    assert diagnose(model, x, loss_fn=lambda o: o.sum()).loss == pytest.approx(
        float(out.sum()), rel=1e-5)


class TwoHeads(nn.Module):
    """A trunk and two heads; ``as_dict`` returns them nested in a dict with an integer leaf."""

    def __init__(self, as_dict: bool = False) -> None:
        super().__init__()
        self.as_dict = as_dict
        self.trunk = nn.Linear(8, 16)
        self.head_a = nn.Linear(16, 3)
        self.head_b = nn.Linear(16, 5)

    def forward(self, x):
        h = torch.relu(self.trunk(x))
        a, b = self.head_a(h), self.head_b(h)
        if self.as_dict:
            return {"a": a, "more": [b, torch.arange(3)], "name": "heads"}
        return a, b


@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "nested-dict"])
def test_default_loss_uses_every_head(as_dict):
    torch.manual_seed(0)
    model = TwoHeads(as_dict)
    x = torch.randn(32, 8)
    report = diagnose(model, x)
    assert [r.name for r in report.layers] == ["trunk", "head_a", "head_b"]
    assert all(r.grad_out_std is not None and r.grad_out_std > 0 for r in report.layers)
    with torch.no_grad():
        h = torch.relu(model.trunk(x))
        a, b = model.head_a(h), model.head_b(h)
    assert report.loss == pytest.approx(float(a.square().mean() + b.square().mean()), rel=1e-6)
    # d(mean(a^2))/da = 2a / a.numel(), exactly
    assert report.layers[1].grad_out_std == pytest.approx(float((2 * a / a.numel()).std()), rel=1e-5)
    with pytest.raises(ValueError, match=r"2 output tensors.*pass loss_fn"):
        diagnose(model, x, torch.randint(0, 3, (32,)))
    # loss_fn gets the output as the model returns it
    pick = (lambda out: out["more"][0].sum()) if as_dict else (lambda out: out[1].sum())
    assert diagnose(model, x, loss_fn=pick).loss == pytest.approx(float(b.sum()), rel=1e-5)


def test_inputs_as_tuple_and_dict_and_tuple_output():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 8)
            self.b = nn.Linear(4, 8)

        def forward(self, x, y):
            return F.gelu(self.a(x)) + self.b(y), "extra"

    torch.manual_seed(0)
    x, y = torch.randn(16, 4), torch.randn(16, 4)
    r1 = diagnose(Two(), (x, y))
    r2 = diagnose(Two(), {"x": x, "y": y})
    assert [r.name for r in r1.layers] == ["a", "b"]
    assert r1.layers[0].activation == "gelu"
    assert r2.layers[0].activation == "gelu"


def test_shared_layer_is_one_row_and_unused_layers_listed():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 8)
            self.unused = nn.Linear(8, 8)

        def forward(self, x):
            return self.fc(torch.relu(self.fc(x)))

    report = diagnose(Shared(), torch.randn(16, 8))
    assert [r.name for r in report.layers] == ["fc"]
    assert report.unused == ["unused"]


def test_conv_channels_are_units():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    with torch.no_grad():
        model[2].weight[5] = model[2].weight[1]
        model[2].bias[5] = model[2].bias[1]
    report = diagnose(model, torch.randn(16, 3, 6, 6))
    assert [r.type for r in report.layers] == ["Conv2d", "Conv2d", "Linear"]
    assert report.layers[0].units == 8
    assert report.layers[0].duplicates == 0
    assert report.layers[1].duplicates == 2
    assert report.layers[1].duplicate_cause == "identical weight rows"
    assert "symmetry" in report.kinds


class _InOut(nn.Module):
    """A layer of its own kind holding its weight as (inputs, outputs), used as ``x @ W + b``
    (what GPT-2's ``Conv1D`` does through ``addmm``)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_in, n_out) / n_in ** 0.5)
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return x @ self.weight + self.bias


@pytest.mark.parametrize("n_in, n_out, use_addmm", [(8, 24, False), (16, 16, False), (16, 16, True)])
def test_weight_read_as_inputs_by_outputs_has_its_columns_as_units(n_in, n_out, use_addmm):
    """Units of a layer whose forward reads its weight as (in, out) are the weight's columns,
    square ones included: two planted equal columns are the duplicates, not rows."""
    torch.manual_seed(0)
    layer = _InOut(n_in, n_out)
    if use_addmm:
        layer.forward = lambda x: torch.addmm(layer.bias, x, layer.weight)
    model = nn.Sequential(nn.Linear(4, n_in), nn.Tanh(), layer, nn.Tanh(), nn.Linear(n_out, 3))
    with torch.no_grad():
        layer.weight[:, 5] = layer.weight[:, 2]
    report = diagnose(model, torch.randn(64, 4))
    rec = report.layers[1]
    assert rec.units == n_out and rec.weight_shape == (n_in, n_out)
    assert rec.duplicates == 2 and rec.duplicate_cause == "identical weight rows"
    assert "symmetry" in report.kinds
    with torch.no_grad():  # equal rows (inputs) are no symmetry
        layer.weight[:, 5] = torch.randn(n_in) / n_in ** 0.5
        layer.weight[3] = layer.weight[1]
    assert diagnose(model, torch.randn(64, 4)).layers[1].duplicates == 0


def test_gpt2_conv1d_duplicate_output_columns_are_found():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0))
    c_fc = model.transformer.h[0].mlp.c_fc
    with torch.no_grad():
        c_fc.weight[:, 5] = c_fc.weight[:, 7]
        c_fc.bias[5] = c_fc.bias[7]
    report = diagnose(model, torch.randint(0, 100, (16, 32)))
    by_name = {r.name: r for r in report.layers}
    assert by_name["transformer.h.0.mlp.c_fc"].units == 256
    assert by_name["transformer.h.0.attn.c_attn"].units == 192
    assert by_name["transformer.h.0.mlp.c_fc"].duplicates == 2
    assert by_name["transformer.h.1.mlp.c_fc"].duplicates == 0


def test_embedding_recurrent_attention_parametrized_layers():
    from torch.nn.utils.parametrizations import weight_norm

    class Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(20, 16)
            self.lstm = nn.LSTM(16, 32, batch_first=True)
            self.mha = nn.MultiheadAttention(32, 4, batch_first=True)
            self.head = weight_norm(nn.Linear(32, 5))

        def forward(self, ids):
            h = self.emb(ids)
            h, _ = self.lstm(h)
            h, _ = self.mha(h, h, h)
            return self.head(h[:, -1])

    torch.manual_seed(0)
    model = Seq()
    snap = _snapshot(model)
    report = diagnose(model, torch.randint(0, 20, (8, 7)), torch.randint(0, 5, (8,)))
    _assert_unchanged(model, snap)
    assert [(r.name, r.units) for r in report.layers] == [
        ("emb", 16), ("lstm", 128), ("mha", 96), ("head", 5)]
    assert report.layers[3].weight_shape == (5, 32)  # the effective weight, not weight_norm's g
    assert all(r.grad_weight_std > 0 and r.grad_out_std > 0 for r in report.layers)


# ----------------------------------------------------------------------------- duplicates
def test_duplicate_mask_exact_and_tolerance():
    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(50, 30, generator=gen)
    assert _duplicate_mask(rows, 1e-5) is None
    rows[7] = rows[3]
    rows[20] = rows[3] * (1 + 2e-6)  # within the 1e-5 relative tolerance
    rows[40] = rows[3] * (1 + 1e-3)  # outside it
    mask = _duplicate_mask(rows, 1e-5)
    assert sorted(mask.nonzero().reshape(-1).tolist()) == [3, 7, 20]
    assert _duplicate_mask(torch.zeros(10, 4), 1e-5).all()


def test_duplicates_from_identical_outputs_with_different_weights():
    lin = nn.Linear(4, 5)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(5, 4, generator=torch.Generator().manual_seed(0)))
        lin.weight[2, 1:] = lin.weight[0, 1:]
        lin.bias[2] = lin.bias[0]
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    x[:, 0] = 0.0  # the first input is always 0: weight column 0 never matters
    report = diagnose(nn.Sequential(lin, nn.Tanh(), nn.Linear(5, 1)), x)
    assert report.layers[0].duplicates == 2
    assert report.layers[0].duplicate_cause == "identical outputs over the batch"
    text = next(f.text for f in report.findings if f.kind == "symmetry")
    assert text.startswith("symmetry: 2 of 5 units of 0 duplicate another unit")


def test_constant_outputs_with_different_weights_are_not_duplicates():
    """Vanished signal: outputs equal their (equal) biases, weights differ: not a symmetry."""
    lin = nn.Linear(4, 6)
    with torch.no_grad():
        lin.bias.fill_(0.5)
    x = torch.zeros(16, 4)
    x[0, 0] = 1e-30  # essentially nothing
    report = diagnose(nn.Sequential(lin, nn.Linear(6, 2)), x)
    assert report.layers[0].duplicates == 0


def test_constant_init_cause():
    torch.manual_seed(0)
    model = make_mlp(3, nn.ReLU, width=8)
    with torch.no_grad():
        model[0].weight.fill_(0.3)
    report = diagnose(model, torch.randn(16, 8))
    assert report.layers[0].duplicates == 0  # same weights, different biases: distinct units
    with torch.no_grad():
        model[0].bias.fill_(0.1)
    report = diagnose(model, torch.randn(16, 8))
    assert report.layers[0].duplicates == 8
    assert report.layers[0].duplicate_cause == "constant initialization"


# ----------------------------------------------------------------------------- point 7: safety
def _snapshot(model: nn.Module):
    return ({k: v.detach().clone() for k, v in model.state_dict().items()},
            [(m, m.training) for m in model.modules()],
            [p.requires_grad for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def _assert_unchanged(model: nn.Module, snap) -> None:
    state, modes, flags, grads = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(m.training == mode for m, mode in modes)
    assert [p.requires_grad for p in model.parameters()] == flags
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None) if g is None else torch.equal(p.grad, g)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert not torch._C._is_torch_function_mode_enabled()


def test_model_unchanged_weights_mode_flags_grads_buffers():
    torch.manual_seed(0)
    model = Functional()
    model.train()
    model.fc2.eval()  # mixed modes are kept as they are
    model.fc3.weight.requires_grad_(False)  # a frozen layer still gets its gradient measured
    model.fc1.weight.grad = torch.ones_like(model.fc1.weight)
    snap = _snapshot(model)
    report = diagnose(model, torch.randn(32, 8))
    _assert_unchanged(model, snap)  # includes the BatchNorm running statistics
    assert report.layers[2].grad_weight_std is not None and report.layers[2].grad_weight_std > 0


def test_hooks_removed_and_model_unchanged_on_error():
    class Fails(Functional):
        def forward(self, x):
            h = F.relu(self.bn(self.fc1(x)))
            h = torch.tanh(self.fc2(h))
            raise RuntimeError("boom in forward")

    torch.manual_seed(0)
    model = Fails()
    model.eval()
    model.fc2.weight.requires_grad_(False)
    snap = _snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        diagnose(model, torch.randn(32, 8))
    _assert_unchanged(model, snap)

    def bad_loss(out):
        raise ValueError("bad loss")

    ok = Functional()
    snap = _snapshot(ok)
    with pytest.raises(ValueError, match="bad loss"):
        diagnose(ok, torch.randn(32, 8), loss_fn=bad_loss)
    _assert_unchanged(ok, snap)


def test_errors_are_clear():
    model = make_mlp(2, nn.ReLU, width=4)
    with pytest.raises(ValueError, match=r"the input has shape \(1, 4\).*at least 2"):
        diagnose(model, torch.randn(1, 4))
    with pytest.raises(TypeError, match="nn.Module"):
        diagnose(lambda x: x, torch.randn(4, 4))
    with pytest.raises(ValueError, match="no layer with a weight"):
        diagnose(nn.Sequential(nn.ReLU()), torch.randn(4, 4))
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        diagnose(model, "not a tensor")
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


# ----------------------------------------------------------------------------- point 4: output
def test_table_json_and_plot(tmp_path):
    from rich.console import Console

    reports = [diagnose(initialized(12, nn.ReLU, s), batch(), label=s) for s in ("torch", "he")]
    console = Console(record=True, width=200)
    console.print(reports[0].table())
    text = console.export_text()
    assert "grad out" in text and "relu" in text and "Linear" in text
    assert len([line for line in text.splitlines() if re.match(r"│\s+\d+ │", line)]) == 12

    data = json.loads(reports[1].to_json())
    assert data["label"] == "he" and len(data["layers"]) == 12
    assert data["verdicts"] == reports[1].verdicts
    assert data["thresholds"]["vanish"] == 0.01
    assert "samples" not in data["layers"][0]
    assert data["layers"][-1]["dead"] is None  # no activation after the last layer

    one = reports[0].plot(str(tmp_path / "one.png"))
    both = plot_reports({"torch": reports[0], "he": reports[1]}, str(tmp_path / "both.png"))
    for path in (one, both):
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- point 5
def test_compare_schemes_side_by_side_and_reproducible():
    factory = lambda: make_mlp(30, nn.ReLU)  # noqa: E731
    x = batch()
    state = torch.random.get_rng_state()
    comp = compare_schemes(factory, x, ["torch", "xavier_normal", "he"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # caller's RNG untouched
    assert isinstance(comp, Comparison) and list(comp) == ["torch", "xavier_normal", "he"]
    assert "vanishing" in comp["torch"].kinds and "vanishing" in comp["xavier_normal"].kinds
    assert comp["he"].healthy
    again = compare_schemes(factory, x, ["torch"], seed=3)
    assert again["torch"].layers[-1].out_std == comp["torch"].layers[-1].out_std
    # custom initializers as {label: fn(model)}
    def zero(model):
        for p in model.parameters():
            nn.init.zeros_(p)
    custom = compare_schemes(factory, x, {"zero": zero})
    assert "symmetry" in custom["zero"].kinds
    assert set(json.loads(comp.to_json())) == {"torch", "xavier_normal", "he"}
    assert comp.verdicts()["he"] == comp["he"].verdicts


# ----------------------------------------------------------------------------- point 6: CLI
def test_cli_mlp_several_schemes(tmp_path, capsys):
    png, js = tmp_path / "d.png", tmp_path / "d.json"
    code = cli.main(["diagnose", "--mlp", "12", "--width", "64", "--batch", "64",
                     "--scheme", "torch,he", "--scheme", "zeros",
                     "--plot", str(png), "--json", str(js)])
    out = capsys.readouterr().out
    assert code == 0
    assert "healthy" in out and "symmetry" in out
    data = json.loads(js.read_text())
    assert list(data) == ["torch", "he", "zeros"]
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_target_and_errors(tmp_path, capsys):
    target = tmp_path / "net.py"
    target.write_text("import torch.nn as nn\n"
                      "def build():\n"
                      "    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(),"
                      " nn.Linear(4 * 6 * 6, 2))\n")
    code = cli.main(["diagnose", f"{target}:build", "--input-shape", "16,3,8,8", "--scheme", "he"])
    out = capsys.readouterr().out
    assert code == 0 and "Conv2d" in out
    assert cli.main(["diagnose", f"{target}:build"]) == 2
    assert "--input-shape" in capsys.readouterr().err
    assert cli.main(["diagnose", "--mlp", "3", "--scheme", "nonsense"]) == 2
    assert "unknown --scheme 'nonsense'" in capsys.readouterr().err
    assert cli.main(["diagnose"]) == 2
    assert "nothing to diagnose" in capsys.readouterr().err


def test_width_changes_are_still_judged():
    """An MLP whose width changes at every layer: Xavier on ReLU still vanishes, He does not."""
    widths = [64, 96, 48, 128] * 8

    def mlp() -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers)

    for policy, vanishes in (("xavier_normal", True), ("he_normal", False)):
        torch.manual_seed(0)
        model = mlp()
        initwise.init(model, policy=policy, seed=0)
        report = diagnose(model, torch.randn(128, 64))
        assert ("vanishing" in report.kinds) == vanishes, report.verdicts


# ----------------------------------------------------------------------------- strides, upsampling
def decoder(channels: int = 16, depth: int = 6) -> nn.Sequential:
    """``depth`` x ConvTranspose2d(k=4, stride 2, padding 1) + ReLU: the size x4 at every layer."""
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def encoder() -> nn.Sequential:
    """4 x Conv2d(3x3, stride 2) + ReLU, channels 3-16-32-64-128: the size /2 at every layer."""
    chans = [3, 16, 32, 64, 128]
    layers: list[nn.Module] = []
    for a, b in zip(chans[:-1], chans[1:]):
        layers += [nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU()]
    return nn.Sequential(*layers)


def built(factory, policy: str, x: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    model = factory()
    if policy == "auto":
        initwise.init(model, x, seed=0)
    elif policy != "torch":
        initwise.init(model, policy=policy, seed=0)
    return model


def test_transposed_conv_decoder_is_judged():
    """Every step changes the size (x4): every step is still compared. torch's default
    (fan_in from the weight's dim 1, no stride) loses ~x0.2 per layer; auto (He with the
    stride-aware fan-in) keeps the signal, and its gradients, larger per element in the small
    early layers, keep their per-sample norm."""
    x = torch.randn(32, 16, 1, 1, generator=torch.Generator().manual_seed(1))
    report = diagnose(built(decoder, "torch", x), x)
    assert {"vanishing", "gradient_vanishing"} <= report.kinds, report.verdicts
    first, last = report.layers[0], report.layers[-1]
    assert last.in_numel == first.out_numel * 4 ** 4 and last.out_numel == last.in_numel * 4
    text = next(f.text for f in report.findings if f.kind == "vanishing")
    assert f"from {first.out_std:.2g} at layer 1 (0) to {last.out_std:.2g} at layer 6 (10)" in text, text
    auto = diagnose(built(decoder, "auto", x), x)
    assert auto.healthy, auto.verdicts
    assert auto.layers[0].grad_out_std / auto.layers[-1].grad_out_std > 1e2  # raw, per element


def test_tapering_mlp_small_vanishes():
    widths = [512, 256, 128, 64, 32, 10]

    def mlp() -> nn.Sequential:
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(a, b), nn.ReLU()]
        return nn.Sequential(*layers[:-1])

    x = torch.randn(128, 512, generator=torch.Generator().manual_seed(1))
    report = diagnose(built(mlp, "small", x), x)
    assert {"vanishing", "gradient_vanishing"} <= report.kinds, report.verdicts
    text = next(f.text for f in report.findings if f.kind == "gradient_vanishing")
    assert "(gradient norm per sample)" in text, text
    # N(0, 0.01): x0.01 * sqrt(fan_in * var(relu(z)) / var(z)) per ReLU layer, forward; the
    # spread across the batch leaves out relu's mean: var(relu(z)) = (1/2 - 1/(2 pi)) var(z)
    r = report.layers
    gain = 0.01 * math.sqrt(256 * (0.5 - 0.5 / math.pi))
    assert r[1].out_std / r[0].out_std == pytest.approx(gain, rel=0.1)
    assert diagnose(built(mlp, "auto", x), x).healthy


def test_strided_encoder_is_judged():
    """4 strided convs: Xavier on ReLU loses x0.6-0.7 per layer (x0.28 over the 3 steps, not
    below the default 1e-2 at this depth), He keeps it: the steps are compared, not taken as x1."""
    x = torch.randn(32, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    xavier = diagnose(built(encoder, "xavier_normal", x), x)
    auto = diagnose(built(encoder, "auto", x), x)
    assert xavier.healthy and auto.healthy, (xavier.verdicts, auto.verdicts)
    low = xavier.layers[-1].out_std / xavier.layers[0].out_std
    assert low < 0.35
    assert xavier.verdicts[0].startswith(f"healthy: along chains of layers, activation std within [{low:.2g}, ")
    strict = DiagnosisThresholds(vanish=0.4)
    assert "vanishing" in diagnose(built(encoder, "xavier_normal", x), x, thresholds=strict).kinds
    assert diagnose(built(encoder, "auto", x), x, thresholds=strict).healthy


def test_input_spread_alias_and_gradients_around_a_pool():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(),
                          nn.Unflatten(1, (1, 16)), nn.AvgPool1d(2), nn.Flatten(),
                          nn.Linear(8, 4))
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(1))
    report = diagnose(model, x)
    a, b, c = report.layers
    with torch.no_grad():
        h1 = model[:2](x)
        h2 = model[:4](x)
        pooled = model[:7](x)
    assert a.in_std == pytest.approx(float(x.std(dim=0).mean()), rel=1e-5)
    assert b.in_std == a.post_std == pytest.approx(float(h1.std(dim=0).mean()), rel=1e-5)
    assert c.in_std == pytest.approx(float(pooled.std(dim=0).mean()), rel=1e-5)
    assert b.post_std == pytest.approx(float(h2.std(dim=0).mean()), rel=1e-5)
    assert (c.in_numel, b.out_numel) == (8, 16)
    # gradients are hooked only around the change of size
    assert a.grad_post_std is None and b.grad_post_std is not None and c.grad_in_std is not None
    xg = x.clone()
    out_b = model[:3](xg)
    post_b = model[3](out_b)
    post_b.retain_grad()
    inp_c = model[4:7](post_b)
    inp_c.retain_grad()
    model[7](inp_c).square().mean().backward()
    assert b.grad_post_std == pytest.approx(float(post_b.grad.std()), rel=1e-4)
    assert c.grad_in_std == pytest.approx(float(inp_c.grad.std()), rel=1e-4)
    model.zero_grad()


def test_single_layer_is_not_called_healthy():
    torch.manual_seed(0)
    report = diagnose(nn.Linear(8, 4), torch.randn(16, 8))
    assert report.kinds == {"unjudged"} and not report.healthy, report.verdicts
    assert report.verdicts[0].startswith("not judged: no chain of two layers")


class _Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def _resnet(c: int = 8, blocks: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), *[_Block(c) for _ in range(blocks)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


def test_zero_init_residual_is_not_called_vanishing():
    """torchvision's zero_init_residual (last norm of each block at 0) blocks the branch's
    gradient on purpose: named, not taken for vanishing gradients."""
    torch.manual_seed(0)
    model = _resnet()
    initwise.init(model, seed=0)
    for block in model:
        if isinstance(block, _Block):
            nn.init.zeros_(block.b2.weight)
    report = diagnose(model, torch.randn(16, 3, 8, 8))
    assert "gradient_vanishing" not in report.kinds, report.verdicts
    assert report.healthy, report.verdicts
    assert "exactly 0 at" in report.verdicts[0] and "zero_init_residual" in report.verdicts[0]


def test_tiny_signals_are_measured_not_flushed_to_zero():
    """A 30-layer tanh MLP under N(0, 0.01): the std falls below 1e-29, whose square is below
    float32's range; the report gives the value, not 0."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(30):
        layers += [nn.Linear(64, 64), nn.Tanh()]
    model = nn.Sequential(*layers)
    initwise.init(model, policy="small_normal", seed=0)
    x = torch.randn(128, 64)
    report = diagnose(model, x)
    last = report.layers[-1].out_std
    assert 0 < last < 1e-25
    with torch.no_grad():  # reference: the same forward pass, its last output's spread in float64
        h = x
        for layer in model[:-1]:
            h = layer(h)
    assert last == pytest.approx(float(h.double().std(dim=0).mean()), rel=1e-3)
    assert "vanishing" in report.kinds



@pytest.mark.parametrize("enabled", [True, False])
def test_garbage_collector_state_is_restored(enabled):
    """diagnose pauses Python's cyclic collector during its passes and leaves it as it found it,
    also when the model's forward raises."""
    import gc

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            raise RuntimeError("boom")

    was = gc.isenabled()
    try:
        gc.enable() if enabled else gc.disable()
        diagnose(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), torch.randn(8, 4))
        assert gc.isenabled() == enabled
        with pytest.raises(RuntimeError, match="boom"):
            diagnose(Boom(), torch.randn(8, 4))
        assert gc.isenabled() == enabled
    finally:
        gc.enable() if was else gc.disable()


class _Residual(nn.Module):
    """Two residual blocks ``x + fc(relu(x))``; the model's output is the last sum."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Linear(6, 8)
        self.fc1 = nn.Linear(8, 8)
        self.fc2 = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        h = h + self.fc1(torch.relu(h))
        return h + self.fc2(torch.relu(h))


@pytest.mark.parametrize("write", [False, True], ids=["plain-loss", "loss-writes-in-place"])
def test_stream_gradients_are_taken_before_a_later_in_place_write(write):
    """The gradient w.r.t. each residual sum and layer output is the one w.r.t. the values the
    forward pass made, also when the loss (outside the recorded forward pass) writes into the
    model's output in place: 2 x (the gradient w.r.t. the doubled output)."""
    torch.manual_seed(0)
    model = _Residual()
    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return (out.mul_(2.0) if write else out * 2.0).square().mean()

    report = diagnose(model, x, loss_fn=loss_fn)
    with torch.enable_grad():
        h0 = model.stem(x)
        h1 = h0 + model.fc1(torch.relu(h0))
        z2 = model.fc2(torch.relu(h1))
        h2 = h1 + z2
        g1, g2, gz2 = torch.autograd.grad((h2 * 2.0).square().mean(), [h1, h2, z2])
    (stream,) = report.streams
    assert [p.grad_std for p in stream.points] == pytest.approx([float(g1.std()), float(g2.std())], rel=1e-5)
    assert report.layers[-1].name == "fc2"
    assert report.layers[-1].grad_out_std == pytest.approx(float(gz2.std()), rel=1e-5)
