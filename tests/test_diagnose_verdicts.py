"""Issue 9, point 3: verdicts that match what trains, as a table of measured cases.

Each row: a model, an initialization, the verdict kinds that must be found and those that must
not. The healthy rows train (BatchNorm ResNets under torch's default and initwise, the zoo's
transformers in tests/test_zoo_real.py); the faulty ones do not (plain 50-layer ReLU MLPs under
Xavier or torch's default vanish, a 100-block residual MLP without normalization under He
everywhere explodes, zero init is a symmetry). A zero-initialized head or branch end is named as
deliberate, not as symmetry or vanishing.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
from torch import nn

import initwise
from tests.zoo_real import REAL_ZOO, ResidualMLP


pytestmark = pytest.mark.usefixtures("one_thread")


def mlp(depth: int, width: int = 64, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width, width))
        if i < depth - 1:
            layers.append(act())
    return nn.Sequential(*layers)


class BNBlock(nn.Module):
    def __init__(self, c: int, stride: int = 1, c_in: int | None = None):
        super().__init__()
        c_in = c_in or c
        self.c1, self.b1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=False), nn.BatchNorm2d(c)
        self.c2, self.b2 = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.down = (nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=False), nn.BatchNorm2d(c))
                     if stride != 1 or c_in != c else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.down(x) + self.b2(self.c2(torch.relu(self.b1(self.c1(x))))))


def bn_resnet() -> nn.Sequential:
    """A ResNet-18-like net with BatchNorm: two stages of 3 blocks, a strided projection."""
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         *[BNBlock(16) for _ in range(3)], BNBlock(32, 2, 16), *[BNBlock(32) for _ in range(2)],
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def he_everywhere(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)


def zero_all(model: nn.Module) -> None:
    for p in model.parameters():
        nn.init.zeros_(p)


def zero_head(model: nn.Module) -> None:
    initwise.init(model, torch.randn(8, 64), seed=0)
    nn.init.zeros_(model[-1].weight)


def zero_branch_ends(model: nn.Module) -> None:
    initwise.init(model, torch.randn(8, 16), seed=0)
    for b in model.blocks:
        nn.init.zeros_(b.fc2.weight)


def inited(scheme: str) -> Callable[[nn.Module], None]:
    return lambda m: initwise.apply_scheme(m, scheme, seed=0)


IMAGES = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))
VECTORS = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
FEATURES = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))

# (case, model builder, init, input, kinds that must be found, kinds that must not)
CASES = [
    ("bn_resnet/torch", bn_resnet, lambda m: None, IMAGES, {"healthy"}, set()),
    ("bn_resnet/initwise", bn_resnet, lambda m: initwise.init(m, IMAGES, seed=0), IMAGES, {"healthy"}, set()),
    ("relu_mlp50/xavier", lambda: mlp(50), inited("xavier_normal"), VECTORS, {"vanishing"}, {"healthy"}),
    ("relu_mlp50/torch", lambda: mlp(50), lambda m: None, VECTORS, {"vanishing"}, {"healthy"}),
    ("relu_mlp50/he", lambda: mlp(50), inited("he"), VECTORS, {"healthy"}, set()),
    ("resmlp100/he", lambda: ResidualMLP(blocks=100), he_everywhere, FEATURES, {"exploding"}, {"healthy"}),
    ("resmlp100/initwise", lambda: ResidualMLP(blocks=100), lambda m: initwise.init(m, FEATURES, seed=0),
     FEATURES, {"healthy"}, set()),
    ("mlp8/zeros", lambda: mlp(8), zero_all, VECTORS, {"symmetry"}, {"healthy"}),
    ("mlp8/zero_head", lambda: mlp(8), zero_head, VECTORS, {"zero_init", "healthy"},
     {"symmetry", "vanishing", "gradient_vanishing"}),
    ("resmlp20/zero_branch_ends", lambda: ResidualMLP(blocks=20), zero_branch_ends, FEATURES,
     {"zero_init", "healthy"}, {"symmetry", "vanishing", "gradient_vanishing"}),
]


@pytest.mark.parametrize("case,build,init,x,must,must_not", CASES, ids=[c[0] for c in CASES])
def test_expected_verdict(case, build, init, x, must, must_not):
    torch.manual_seed(0)
    model = build()
    init(model)
    report = initwise.diagnose(model, x)
    assert must <= report.kinds, (case, report.verdicts)
    assert not (must_not & report.kinds), (case, report.verdicts)
    assert report.healthy == ("healthy" in must), (case, report.verdicts)
    for f in report.findings:  # every quoted ratio is the ratio of its quoted values
        if f.ratio is not None and math.isfinite(f.ratio):
            a, b = f.values
            assert f.ratio == pytest.approx(b / a * f.correction, rel=1e-9), f


def test_exploding_residual_stream_is_judged_along_the_stream():
    """He everywhere on a 100-block residual MLP: E[relu(W1 x)^2] = Var(x) and Var(W2 h) = 2 Var(x),
    so Var(x + W2 relu(W1 x)) = 3 Var(x) per block and the stream explodes; the verdict names the
    stream, not a chain through sibling layers."""
    torch.manual_seed(0)
    model = ResidualMLP(blocks=100)
    he_everywhere(model)
    report = initwise.diagnose(model, FEATURES)
    text = next(f.text for f in report.findings if f.kind == "exploding")
    assert "the residual stream blocks" in text, text
    stream = report.streams[0]
    assert len(stream.points) == 100 and stream.points[0].block == "blocks.0"


def test_zero_head_is_named_with_its_place():
    torch.manual_seed(0)
    model = mlp(8)
    zero_head(model)
    report = initwise.diagnose(model, VECTORS)
    text = next(f.text for f in report.findings if f.kind == "zero_init")
    assert text.startswith("zero-initialized head: 14 (deliberate"), text
    assert report["14"].role == "head" and report["14"].zero


def test_zero_head_with_a_bias_is_named_even_when_rounding_leaves_a_spread():
    """A zero weight with a bias makes the same output for every sample, but the measured
    spread is float rounding (~1e-8 on the zoo's residual MLP), not exactly 0: the head is
    still found to be zero from its weights."""
    rm = REAL_ZOO["residual_mlp"]()
    with torch.no_grad():
        rm.model.head.weight.zero_()
    report = initwise.diagnose(rm.model, rm.example_input)
    assert 0 < report["head"].out_std < 1e-6  # the case this guards: a spread of rounding only
    assert report["head"].zero
    text = next(f.text for f in report.findings if f.kind == "zero_init")
    assert text.startswith("zero-initialized head: head (deliberate"), text


def test_zero_branch_ends_are_named():
    torch.manual_seed(0)
    model = ResidualMLP(blocks=20)
    zero_branch_ends(model)
    report = initwise.diagnose(model, FEATURES)
    text = next(f.text for f in report.findings if f.kind == "zero_init")
    assert text.startswith("zero-initialized branch ends: blocks.0.fc2, blocks.1.fc2"), text
    assert all(report[f"blocks.{i}.fc2"].role == "branch end" for i in range(20))
    # the stream is exactly the stem's output at every sum: the branches add 0
    s = report.streams[0]
    assert all(p.branch_std == 0 for p in s.points)
    assert all(p.std == pytest.approx(s.start, rel=1e-6) for p in s.points)


def test_stream_table_and_plot(tmp_path):
    """Point 4: the stream block by block in the table and in the plot."""
    torch.manual_seed(0)
    model = ResidualMLP(blocks=12)
    initwise.init(model, FEATURES, seed=0)
    report = initwise.diagnose(model, FEATURES)
    table = report.stream_table()
    assert len(table) == 13 and table.column("block")[1:4] == ["blocks.0", "blocks.1", "blocks.2"]
    stds = [float(v) for v in table.column("stream std")[1:]]
    assert stds == [float(f"{p.std:.3g}") for p in report.streams[0].points]
    path = report.plot(str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").stat().st_size > 10_000 and path.endswith("d.png")


def test_multihead_attention_is_one_measured_layer():
    """``nn.MultiheadAttention`` uses ``out_proj.weight`` in its own forward (out_proj is never
    called): it is one layer of the report, with both weights' gradients, and nothing is unused."""
    torch.manual_seed(0)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True,
                                                             norm_first=True), 4, enable_nested_tensor=False)
    report = initwise.diagnose(model, torch.randn(8, 10, 32))
    assert report.unused == [] and report.healthy, (report.unused, report.verdicts)
    names = [r.name for r in report.layers]
    assert "layers.0.self_attn" in names and "layers.0.self_attn.out_proj" not in names
    attn = report["layers.0.self_attn"]
    assert attn.grad_weight_std is not None and attn.grad_weight_std > 0
    # pre-norm: one stream of 8 sums (attention and MLP of 4 blocks)
    assert [len(s.points) for s in report.streams] == [8], report.streams
