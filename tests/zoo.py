"""A zoo of small model shapes for testing whole-model initialization (reusable by any test).

Each :class:`ZooModel` has a factory, an example input, whether ``torch.fx`` can trace it, and
what the standard policy must choose: ``expect`` maps a parameter name to ``(family,
activation)``, where family is a :attr:`initwise.plan.PlanEntry.family` (``"he"``, ``"xavier"``,
``"lecun"``, ``"orthogonal"``, ``"normal"``, ``"constant"``, ``"keep"``) and activation the label
discovery must report (``None`` to skip that check).

    from tests.zoo import ZOO
    for zm in ZOO.values():
        model, x = zm.build(), zm.example_input()
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ZooModel:
    name: str
    factory: Callable[[], nn.Module]
    input_fn: Callable[[], Any]
    traceable: bool
    expect: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def build(self, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.factory()

    def example_input(self, seed: int = 0) -> Any:
        g = torch.Generator().manual_seed(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=g)))
            return self.input_fn()


# ----------------------------------------------------------------------------- models
class SeedMLP(nn.Module):
    """The seed example: fc1 -> relu, fc2 -> tanh, fc3 -> sigmoid, functional calls, declared
    out of order."""

    def __init__(self) -> None:
        super().__init__()
        self.fc3 = nn.Linear(30, 1)
        self.fc1 = nn.Linear(10, 50)
        self.fc2 = nn.Linear(50, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x))
        x = torch.tanh(self.fc2(x))
        return torch.sigmoid(self.fc3(x))


def sequential_mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(12, 32), nn.ReLU(), nn.Dropout(0.1),
        nn.Linear(32, 32), nn.LeakyReLU(0.2),
        nn.Linear(32, 4),
    )


class ReversedDeclaration(nn.Module):
    """Activation modules declared before the layers and in the opposite order of use."""

    def __init__(self) -> None:
        super().__init__()
        self.act_b = nn.Tanh()
        self.act_a = nn.ELU()
        self.out = nn.Linear(16, 3)
        self.fc2 = nn.Linear(24, 16)
        self.fc1 = nn.Linear(8, 24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act_b(self.fc2(self.act_a(self.fc1(x)))))


def cnn_bn_relu() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, groups=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(32, 10),
    )


class ResidualBlock(nn.Module):
    """ResNet basic block: conv-bn-relu-conv-bn, + identity, relu; then a linear head."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn0(self.stem(x)))
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        x = F.relu(out + x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(40, 12, padding_idx=0)
        self.lstm = nn.LSTM(12, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


class GRUTagger(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 10, bidirectional=True, batch_first=True)
        self.proj = nn.Linear(20, 20)
        self.out = nn.Linear(20, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.gru(x)
        return self.out(torch.tanh(self.proj(h)))


def selu_net() -> nn.Module:
    return nn.Sequential(
        nn.Linear(20, 64), nn.SELU(), nn.AlphaDropout(0.05),
        nn.Linear(64, 64), nn.SELU(),
        nn.Linear(64, 2),
    )


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: attention and a GELU MLP, both residual."""

    def __init__(self, d: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(d)
        self.fc_in = nn.Linear(d, 4 * d)
        self.fc_out = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        a, _ = self.attn(h, h, h, need_weights=False)
        x = x + a
        x = x + self.drop(self.fc_out(F.gelu(self.fc_in(self.norm2(x)))))
        return x


class TiedLM(nn.Module):
    """Embedding and output projection share one weight."""

    def __init__(self, vocab: int = 50, d: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.hidden = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.embed(tokens)
        h = h + F.silu(self.hidden(h))
        return self.lm_head(self.norm(h))


class FunctionalOnly(nn.Module):
    """Every activation is a functional call or tensor method, with parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(10, 20)
        self.b = nn.Linear(20, 20)
        self.c = nn.Linear(20, 20)
        self.d = nn.Linear(20, 20)
        self.e = nn.Linear(20, 20)
        self.f = nn.Linear(20, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a(x).relu()
        x = F.leaky_relu(self.b(x), 0.1)
        x = F.silu(self.c(x))
        x = F.elu(self.d(x), alpha=0.5)
        x = F.mish(self.e(x).view(-1, 20))
        return self.f(x)


class DynamicControl(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 16)
        self.fc3 = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.fc1(x))
        if h.mean() > 0:  # depends on the data
            h = h * 1.0
        for _ in range(int(h.shape[0] > 0)):
            h = torch.tanh(self.fc2(h))
        return self.fc3(h)


class UntraceableConv(nn.Module):
    """A Conv2d feeding torch.relu, data-dependent control flow (fx cannot trace it), and a head
    sized for 3x32x32 inputs: the forward pass fails with any other input size (the guessed one
    included). Declaration order alone says conv feeds the next declared layer (wrongly)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4 * 30 * 30, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        if h.sum() > 0:  # depends on the data
            h = h + 0
        return self.fc(h.flatten(1))


class MultiConsumer(nn.Module):
    """One layer's output feeds relu and tanh branches (the conservative choice wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(10, 20)
        self.left = nn.Linear(20, 5)
        self.right = nn.Linear(20, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.shared(x)
        return self.left(torch.relu(h)) + self.right(torch.tanh(h))


class Parametrized(nn.Module):
    """weight_norm and spectral_norm (torch.nn.utils.parametrizations)."""

    def __init__(self) -> None:
        super().__init__()
        self.wn = nn.utils.parametrizations.weight_norm(nn.Linear(10, 32))
        self.sn = nn.utils.parametrizations.spectral_norm(nn.Linear(32, 32))
        self.out = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.sn(F.relu(self.wn(x)))))


class Scale(nn.Module):
    """A layer type initwise does not know."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((n,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.alpha


class WithUnknown(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)
        self.scale = Scale(6)
        self.out = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.scale(torch.relu(self.fc(x))))


def decoder() -> nn.Module:
    return nn.Sequential(
        nn.Linear(4, 32), nn.ReLU(), nn.Unflatten(1, (8, 2, 2)),
        nn.ConvTranspose2d(8, 8, 4, stride=2, padding=1, groups=2), nn.ReLU(),
        nn.ConvTranspose2d(8, 1, 4, stride=2, padding=1), nn.Sigmoid(),
    )


class ReluRNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.RNN(5, 12, nonlinearity="relu")
        self.head = nn.Linear(12, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[-1])


# ----------------------------------------------------------------------------- registry
def _zoo() -> dict[str, ZooModel]:
    models = [
        ZooModel("seed_mlp", SeedMLP, lambda: torch.randn(4, 10), True, {
            "fc1.weight": ("he", "relu"), "fc2.weight": ("xavier", "tanh"), "fc3.weight": ("xavier", "sigmoid"),
            "fc1.bias": ("constant", None)}),
        ZooModel("sequential_mlp", sequential_mlp, lambda: torch.randn(4, 12), True, {
            "0.weight": ("he", "relu"), "3.weight": ("he", "leaky_relu(negative_slope=0.2)"),
            "5.weight": ("xavier", "none")}),
        ZooModel("reversed_declaration", ReversedDeclaration, lambda: torch.randn(4, 8), True, {
            "fc1.weight": ("he", "elu(alpha=1)"), "fc2.weight": ("xavier", "tanh"), "out.weight": ("xavier", "none")}),
        ZooModel("cnn_bn_relu", cnn_bn_relu, lambda: torch.randn(2, 3, 8, 8), True, {
            "0.weight": ("he", "relu"), "4.weight": ("he", "relu"), "9.weight": ("he", "relu"),
            "12.weight": ("xavier", "none"), "1.weight": ("constant", None), "1.bias": ("constant", None)}),
        ZooModel("residual_block", ResidualBlock, lambda: torch.randn(2, 3, 8, 8), True, {
            "stem.weight": ("he", "relu"), "conv1.weight": ("he", "relu"), "conv2.weight": ("he", "relu"),
            "head.weight": ("xavier", "none")}),
        ZooModel("lstm_classifier", LSTMClassifier, lambda: torch.randint(1, 40, (3, 7)), True, {
            "embed.weight": ("normal", None), "lstm.weight_ih_l0": ("xavier", None),
            "lstm.weight_hh_l0": ("orthogonal", None), "lstm.weight_hh_l1": ("orthogonal", None),
            "lstm.bias_ih_l1": ("constant", None), "head.weight": ("xavier", "none")}),
        ZooModel("gru_bidirectional", GRUTagger, lambda: torch.randn(2, 5, 6), True, {
            "gru.weight_ih_l0_reverse": ("xavier", None), "gru.weight_hh_l0_reverse": ("orthogonal", None),
            "proj.weight": ("xavier", "tanh"), "out.weight": ("xavier", "none")}),
        ZooModel("selu_net", selu_net, lambda: torch.randn(4, 20), True, {
            "0.weight": ("lecun", "selu"), "3.weight": ("lecun", "selu"), "5.weight": ("xavier", "none")}),
        ZooModel("transformer_block", TransformerBlock, lambda: torch.randn(2, 5, 16), True, {
            "attn.in_proj_weight": ("xavier", None), "attn.out_proj.weight": ("xavier", "none"),
            "fc_in.weight": ("he", "gelu"), "fc_out.weight": ("xavier", "none"),
            "norm1.weight": ("constant", None)}),
        ZooModel("tied_lm", TiedLM, lambda: torch.randint(0, 50, (2, 6)), True, {
            "hidden.weight": ("he", "silu"), "embed.weight": ("normal", None)}),
        ZooModel("functional_only", FunctionalOnly, lambda: torch.randn(4, 10), True, {
            "a.weight": ("he", "relu"), "b.weight": ("he", "leaky_relu(negative_slope=0.1)"),
            "c.weight": ("he", "silu"), "d.weight": ("he", "elu(alpha=0.5)"), "e.weight": ("he", "mish"),
            "f.weight": ("xavier", "none")}),
        ZooModel("dynamic_control", DynamicControl, lambda: torch.randn(4, 8), False, {
            "fc1.weight": ("he", "gelu"), "fc2.weight": ("xavier", "tanh"),
            "fc3.weight": ("xavier", "none")}),
        ZooModel("multi_consumer", MultiConsumer, lambda: torch.randn(4, 10), True, {
            "shared.weight": ("xavier", "relu+tanh")}),
        ZooModel("parametrized", Parametrized, lambda: torch.randn(4, 10), True, {
            "wn.weight": ("he", "relu"), "sn.weight": ("xavier", "tanh"), "out.weight": ("xavier", "none")}),
        ZooModel("with_unknown", WithUnknown, lambda: torch.randn(4, 6), True, {
            "fc.weight": ("he", "relu"), "scale.alpha": ("constant", None), "out.weight": ("xavier", "none")}),
        ZooModel("decoder", decoder, lambda: torch.randn(2, 4), True, {
            "0.weight": ("he", "relu"), "3.weight": ("he", "relu"), "5.weight": ("xavier", "sigmoid")}),
        ZooModel("relu_rnn", ReluRNN, lambda: torch.randn(6, 2, 5), True, {
            "rnn.weight_ih_l0": ("he", None), "rnn.weight_hh_l0": ("orthogonal", None),
            "head.weight": ("xavier", "none")}),
    ]
    return {m.name: m for m in models}


ZOO: dict[str, ZooModel] = _zoo()
