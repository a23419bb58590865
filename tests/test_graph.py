"""The recorded graph: elementwise chains, parameters of unknown layers, state left alone."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise
from initwise.graph import record


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class TanhGelu(nn.Module):  # GPT-2's gelu_new written out
    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class ReluSquared(nn.Module):
    def forward(self, x):
        return F.relu(x) ** 2


def _acts(model, x):
    g = record(model, x)
    return [n.info["activation"] for n in g.nodes if n.kind == "act"]


@pytest.mark.parametrize("module, name", [(Swish(), "silu"), (TanhGelu(), "gelu"), (ReluSquared(), "custom")])
def test_elementwise_chains_are_one_activation(module, name):
    model = nn.Sequential(nn.Linear(8, 16), module, nn.Linear(16, 2))
    (act,) = _acts(model, torch.randn(4, 8))
    assert act.name == name
    z = torch.linspace(-4, 4, 101, dtype=torch.float64)
    assert torch.allclose(act.fn(z), module(z), atol=1e-12)  # the chain replays exactly


def test_tanh_formula_is_named_gelu_tanh_not_gelu():
    (act,) = _acts(nn.Sequential(nn.Linear(4, 4), TanhGelu(), nn.Linear(4, 1)), torch.randn(2, 4))
    assert act.label() == "gelu(approximate=tanh)"


def test_hand_written_swish_gets_the_same_plan_as_nn_silu():
    x = torch.randn(16, 32)
    a = initwise.plan(nn.Sequential(nn.Linear(32, 64), Swish(), nn.Linear(64, 2)), x)
    b = initwise.plan(nn.Sequential(nn.Linear(32, 64), nn.SiLU(), nn.Linear(64, 2)), x)
    assert a["0.weight"].family == "he" == b["0.weight"].family
    assert a["0.weight"].std == pytest.approx(b["0.weight"].std, rel=1e-9)
    c = initwise.plan(nn.Sequential(nn.Linear(32, 64), TanhGelu(), nn.Linear(64, 2)), x)
    assert c["0.weight"].family == "he" and "gelu(approximate=tanh)" in c["0.weight"].reason


class Conv1D(nn.Module):
    """GPT-2's layer: weight (in, out), used as addmm(bias, x, weight)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight).view(*x.shape[:-1], -1)


class Experts(nn.Module):
    """Fused experts: a 3-D weight indexed per expert and used by F.linear / einsum."""

    def __init__(self, e=4, d=16, h=32):
        super().__init__()
        self.up = nn.Parameter(torch.zeros(e, h, d))
        self.down = nn.Parameter(torch.zeros(e, d, h))

    def forward(self, x):
        out = 0
        for i in range(self.up.shape[0]):
            out = out + F.linear(F.gelu(F.linear(x, self.up[i])), self.down[i])
        return out / self.up.shape[0]


def test_weights_of_unknown_layers_get_the_fans_of_their_operation():
    model = nn.Sequential(Conv1D(48, 16), nn.ReLU(), Conv1D(8, 48))
    x = torch.randn(8, 16)
    p = initwise.plan(model, x)
    e = p["0.weight"]
    assert (e.fan_in, e.fan_out) == (16, 48) and e.family == "he"
    q = x.double().square().mean().item()  # He for what reaches it: var 2 / (fan_in E[x^2])
    assert e.std == pytest.approx(math.sqrt(2 / (16 * q)), rel=1e-6)
    assert p["0.bias"].scheme == "zeros"
    experts = Experts()
    q = initwise.plan(experts, torch.randn(8, 16))
    assert q["up"].family == "he" and (q["up"].fan_in, q["up"].fan_out) == (16, 32)
    assert q["down"].fan_in == 32
    assert all(e.scheme != "keep" for e in q)


def test_record_changes_nothing_buffers_rng_flags_and_counters():
    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.register_buffer("step", torch.zeros((), dtype=torch.long))

        def forward(self, x):
            self.step += 1
            return self.fc(x + 0.1 * torch.randn_like(x))

    model = Counting().eval()
    x = torch.randn(2, 4)
    state = torch.get_rng_state()
    initwise.plan(model, x)
    assert torch.equal(torch.get_rng_state(), state)
    assert int(model.step) == 0 and not model.training


def test_forward_that_rewrites_a_parameter_is_refused():
    class Rewrites(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            with torch.no_grad():
                self.fc.weight.mul_(1.0)
            return self.fc(x)

    with pytest.raises(ValueError, match="changed parameter 'fc.weight' in place"):
        record(Rewrites(), torch.randn(2, 4))


def test_input_independent_tensors_are_marked():
    class Pos(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(10, 8), nn.Embedding(6, 8)
            self.register_buffer("ids", torch.arange(6)[None])

        def forward(self, t):
            return self.tok(t) + self.pos(self.ids)

    g = record(Pos(), torch.randint(0, 10, (3, 6)))
    by_module = {n.module: n for n in g.nodes if n.kind == "layer"}
    assert by_module["tok"].varies and not by_module["pos"].varies


def test_meta_model_records_with_meta_tensors():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 2))
    g = record(model)
    assert g.method == "forward" and any(n.kind == "act" for n in g.nodes)


def test_uninitialized_factory_output_has_no_value_statistics():
    """``empty_like``/``new_empty`` hold leftover memory (Mixtral's routing buffers): the graph
    keeps only their size, never a collision chance or a mask read from garbage."""

    class Router(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            slots = torch.empty_like(x, dtype=torch.long)
            scratch = x.new_empty(x.shape)
            slots.fill_(0)
            scratch.fill_(-1e9)
            return self.fc(x) + scratch.clamp(min=0) + slots.float()

    g = record(Router(), torch.randn(8, 4))
    made = [n for n in g.nodes if n.op in ("empty_like", "new_empty")]
    assert [n.op for n in made] == ["empty_like", "new_empty"]
    assert all(n.kind == "const" and n.info == {"numel": 32} for n in made)
