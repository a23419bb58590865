"""Discovery follows the data flow: the recorded forward pass, else declaration order."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initwise.discover import ORDER_GUESS, Activation, discover, layers
from initwise.inputs import guesses_for


def guess_input(model):
    found = guesses_for(model)
    return found[0] if found else None

try:
    from tests.zoo import ZOO, SeedMLP, UntraceableConv
except ImportError:  # tests/ itself on sys.path
    from zoo import ZOO, SeedMLP, UntraceableConv


def labels(discovery, layer):
    return "+".join(a.label() for a in discovery.of(layer))


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_method_and_activations(name):
    zm = ZOO[name]
    model, x = zm.build(), zm.example_input()
    d = discover(model, x)
    assert d.method == "forward", d.note
    for pname, (_, act) in zm.expect.items():
        if act is not None:
            assert labels(d, pname.rsplit(".", 1)[0]) == act, pname


def test_seed_example_declared_out_of_order():
    d = discover(SeedMLP())
    assert [labels(d, n) for n in ("fc1", "fc2", "fc3")] == ["relu", "tanh", "sigmoid"]
    # declaration order alone would get it wrong: fc3 is declared first
    order = discover(SeedMLP(), method="order")
    assert order.method == "order"
    assert labels(order, "fc3") == "none"


def test_functional_parameters_are_read_from_the_call():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 3), nn.Linear(3, 3), nn.Linear(3, 3)

        def forward(self, x):
            x = F.leaky_relu(self.a(x), negative_slope=0.3)
            x = F.elu(self.b(x), 2.0)
            return F.gelu(self.c(x), approximate="tanh")

    for method in ("fx", "forward"):
        d = discover(M(), torch.randn(2, 3), method=method)
        assert d.of("a") == (Activation("leaky_relu", (("negative_slope", 0.3),)),)
        assert d.of("b") == (Activation("elu", (("alpha", 2.0),)),)
        assert d.of("c") == (Activation("gelu", (("approximate", "tanh"),)),)


def test_skips_dropout_norm_reshape_pool_and_residual():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(2, 4, 3, padding=1)
            self.norm = nn.GroupNorm(2, 4)
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            h = F.max_pool1d(self.norm(self.conv(x)), 2)
            h = F.dropout(h.reshape(h.shape[0], -1), 0.1, self.training)
            h = self.fc(h)
            return torch.sigmoid(h + h.permute(0, 1) * 0.5)

    for method in ("fx", "forward"):
        d = discover(M(), torch.randn(2, 2, 4), method=method)
        assert labels(d, "fc") == "sigmoid"
        assert labels(d, "conv") == "none"  # consumed by the next layer (fc) linearly


def test_matmul_and_model_output_count_as_linear():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return torch.softmax(self.q(x) @ self.k(x).transpose(-1, -2), -1)

    d = discover(M(), torch.randn(2, 3, 4))
    assert labels(d, "q") == "none" and labels(d, "k") == "none"
    assert "matmul" in d.of("q")[0].via


def test_dynamic_model_without_input_uses_a_guessed_input():
    zm = ZOO["dynamic_control"]
    d = discover(zm.build())
    assert d.method == "forward" and "guessed input of shape (2, 8)" in d.note
    assert labels(d, "fc1") == "gelu"


def test_order_fallback_when_nothing_else_works():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(4, 1)
            self.fc = nn.Linear(4, 4)
            self.act = nn.Tanh()

        def forward(self, x):
            if x.sum() > 0:
                x = x + 1
            return self.act(self.fc(self.attn(x, x, x)[0]))

    d = discover(Untraceable())  # data-dependent control flow: the recorded pass follows it
    assert d.method == "forward" and labels(d, "fc") == "tanh"

    class NoGuess(nn.Module):  # no layer to guess an input from
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(4, 4))
            self.fc = nn.Linear(4, 4)
            self.act = nn.Tanh()

        def forward(self, x, y):
            return self.act(self.fc(x @ self.w + y))

    with pytest.warns(UserWarning, match="NoGuess.*example_input"):
        d = discover(NoGuess())
    assert d.method == "order" and "failed" in d.fallback
    assert labels(d, "fc") == "tanh"
    assert d.of("fc")[0].via.startswith(ORDER_GUESS)
    with pytest.raises(ValueError, match="example_input"):
        discover(NoGuess(), method="forward")


def test_forward_pass_leaves_model_and_rng_untouched():
    zm = ZOO["cnn_bn_relu"]
    model = zm.build()
    model.eval()
    x = zm.example_input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    d = discover(model, x, method="forward")
    assert d.method == "forward"
    assert torch.equal(torch.get_rng_state(), rng)
    assert not model.training and not any(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_forward_with_batch_of_one_falls_back_to_eval_mode():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    d = discover(model, torch.randn(1, 3), method="forward")
    assert labels(d, "0") == "relu"


def test_layers_are_atomic_and_include_attention():
    found = layers(ZOO["transformer_block"].build())
    assert "attn" in found and "attn.out_proj" not in found
    assert set(found) == {"norm1", "attn", "norm2", "fc_in", "fc_out"}


def test_sub_layer_inherits_consumers():
    d = discover(ZOO["transformer_block"].build())
    assert d.of("attn.out_proj") == d.of("attn")


def test_guess_input_shapes():
    assert guess_input(nn.Sequential(nn.Conv2d(3, 4, 3))).shape[:2] == (2, 3)
    assert guess_input(nn.LSTM(5, 7, batch_first=True)).shape == (2, 5, 5)
    assert guess_input(nn.Embedding(9, 2)).dtype == torch.long
    assert guess_input(nn.ReLU()) is None


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        discover("not a model")
    with pytest.raises(ValueError, match="method"):
        discover(nn.Linear(2, 2), method="magic")


def test_given_example_input_that_breaks_the_forward_pass_is_an_error():
    # fx cannot trace it and the head expects 3x32x32: a 31x31 input fails in fc. Falling back to
    # declaration order would say conv feeds the next declared layer and plan Xavier for a ReLU.
    model = UntraceableConv()
    with pytest.raises(ValueError) as info:
        discover(model, torch.randn(2, 3, 31, 31))
    message = str(info.value)
    assert "forward pass of UntraceableConv failed with the given example_input" in message
    assert "(2, 3, 31, 31)" in message and "mat1 and mat2" in message and "--input-shape" in message
    assert "\n" not in message and message.count("mat1 and mat2") == 1  # one line, train/eval not repeated
    with pytest.raises(ValueError, match="given example_input"):
        discover(model, torch.randn(2, 3, 31, 31), method="forward")
    assert labels(discover(model, torch.randn(2, 3, 32, 32)), "conv") == "relu"  # the right input works


def test_guessed_input_failing_falls_back_to_order_loudly():
    model = UntraceableConv()
    with pytest.warns(UserWarning, match=r"UntraceableConv.*guessed input of shape \(2, 3, 16, 16\).*example_input"):
        d = discover(model)
    assert d.method == "order"
    assert "guessed input of shape (2, 3, 16, 16)" in d.fallback and "failed" in d.fallback
    assert d.note.startswith("FALLBACK") and d.fallback in d.note and "example_input" in d.note
    for layer in ("conv", "fc"):
        assert all(a.via.startswith(ORDER_GUESS) for a in d.of(layer)), layer
    with pytest.raises(ValueError, match="guessed input"):  # forced forward: an error, no fallback
        discover(model, method="forward")


def test_guess_input_does_not_touch_the_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    for model in (nn.Linear(4, 2), nn.Conv2d(3, 2, 3), nn.Embedding(9, 2), nn.GRU(3, 4)):
        torch.manual_seed(0)
        guess_input(model)
        assert torch.equal(torch.rand(3), expected), type(model).__name__


# ----------------------------------------------------------------------------- residual sums
class _ResMLP(nn.Module):
    """h + relu(W h) blocks, then a head."""

    def __init__(self, n: int = 3):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(8, 8) for _ in range(n))
        self.head = nn.Linear(8, 2)

    def forward(self, h):
        for f in self.fcs:
            h = h + torch.relu(f(h))
        return self.head(h)


@pytest.mark.parametrize("method", ["forward"])
def test_residual_branches_are_found_through_activations(method):
    d = discover(_ResMLP(), torch.randn(2, 8), method=method)
    assert set(d.residual) == {"fcs.0", "fcs.1", "fcs.2"}
    assert labels(d, "fcs.1") == "relu"  # the activation is still what the plan sees


@pytest.mark.parametrize("method", ["forward"])
def test_sums_of_a_layer_with_itself_or_with_parameters_are_not_residual(method):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
            self.offset = nn.Parameter(torch.zeros(4))

        def forward(self, x):
            h = self.a(x)
            h = h + torch.tanh(h) + self.offset   # both operands derive from a; a parameter
            return self.b(h) + torch.ones(4)      # a constant made in forward

    d = discover(M(), torch.randn(2, 4), method=method)
    assert d.residual == {}


def test_residual_block_of_the_zoo_ends_at_conv2():
    zm = ZOO["residual_block"]
    for method in ("forward",):
        d = discover(zm.build(), zm.example_input(), method=method)
        assert "conv2" in d.residual and "conv1" not in d.residual and "stem" not in d.residual


def test_meta_model_that_fx_cannot_trace_gets_a_meta_guessed_input():
    class ShapeBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 2)

        def forward(self, x):
            if x.shape[0] > 1:  # control flow on a shape: fx cannot trace it, meta tensors can run it
                x = x * 2
            return self.fc2(torch.relu(self.fc1(x)))

    with torch.device("meta"):
        model = ShapeBranch()
    assert guess_input(model).device.type == "cpu"  # moved to meta after its statistics are read
    d = discover(model)
    assert d.method == "forward" and labels(d, "fc1") == "relu"


@pytest.mark.parametrize("method", ["forward"])
def test_clamp_at_zero_is_relu(method):
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c, self.d, self.e = (nn.Linear(4, 4) for _ in range(5))

        def forward(self, x):
            x = self.a(x).clamp(min=0)
            x = torch.clamp(self.b(x), min=0)
            x = self.c(x).clamp_min(0)
            x = torch.clamp(self.d(x), 0, 6)
            return self.e(x).clamp(min=-1)  # not a ReLU: an elementwise function initwise has no name for

    d = discover(M(), torch.randn(2, 4), method=method)
    assert [labels(d, n) for n in "abcde"] == ["relu", "relu", "relu", "relu6", "custom"]
