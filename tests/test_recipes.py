"""Recipe policies: each recipe's std on a GPT-like and a ResNet-like model against its formula
(exact values), the errors where a recipe's assumptions fail, and the drawn values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import initwise
from initwise.plan import Plan
from initwise.policies import RECIPES, normalize_policy
from initwise.streams import truncated_std

T3 = truncated_std(3.0)   # std of a standard normal cut at +-3: 0.98664


# ----------------------------------------------------------------------------- models
class Block(nn.Module):
    """Pre-norm llama block: separate q/k/v, SDPA, SwiGLU MLP ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, d: int, heads: int, norm: bool = True) -> None:
        super().__init__()
        self.heads = heads
        self.n1 = nn.RMSNorm(d) if norm else nn.Identity()
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d, bias=False) for _ in range(4))
        self.n2 = nn.RMSNorm(d) if norm else nn.Identity()
        self.w1, self.w3 = nn.Linear(d, 2 * d, bias=False), nn.Linear(d, 2 * d, bias=False)
        self.w2 = nn.Linear(2 * d, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        y = self.n1(x)
        q, k, v = (m(y).view(b, t, self.heads, -1).transpose(1, 2) for m in (self.wq, self.wk, self.wv))
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.wo(a)
        y = self.n2(x)
        return x + self.w2(F.silu(self.w1(y)) * self.w3(y))


class GPTLike(nn.Module):
    def __init__(self, vocab: int = 50, d: int = 16, heads: int = 2, blocks: int = 3, norm: bool = True) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, heads, norm) for _ in range(blocks))
        self.norm = nn.RMSNorm(d) if norm else nn.Identity()
        self.out = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids)
        for layer in self.layers:
            x = layer(x)
        return self.out(self.norm(x))


class BasicBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))`` (no norm), or ``relu(x + bn2(conv2(relu(bn1(conv1 x)))))``."""

    def __init__(self, c: int, bn: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=not bn)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=not bn)
        self.bn1 = nn.BatchNorm2d(c) if bn else nn.Identity()
        self.bn2 = nn.BatchNorm2d(c) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))


class ResNetLike(nn.Module):
    def __init__(self, c: int = 8, blocks: int = 4, classes: int = 10, bn: bool = False) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1)
        self.blocks = nn.ModuleList(BasicBlock(c, bn) for _ in range(blocks))
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for b in self.blocks:
            x = b(x)
        return self.fc(x.mean(dim=(2, 3)))


IDS = torch.randint(0, 50, (2, 8), generator=torch.Generator().manual_seed(0))
IMG = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
L, D, C = 3, 16, 8          # GPT-like: blocks, width; ResNet-like: channels
CONV_IN = C * 9             # fan-in of a 3x3 convolution of C channels


def std_of(plan: Plan) -> dict[str, float]:
    return {e.name: e.std for e in plan}


def gpt_plan(policy: str, **kw) -> Plan:
    torch.manual_seed(0)
    return initwise.plan(GPTLike(**kw), IDS, policy=policy)


def res_plan(policy: str, **kw) -> Plan:
    torch.manual_seed(0)
    return initwise.plan(ResNetLike(**kw), IMG, policy=policy)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)


def check(plan: Plan, want: dict[str, float]) -> None:
    got = std_of(plan)
    bad = {k: (got[k], v) for k, v in want.items() if not close(got[k], v)}
    assert not bad, bad


def xavier(fan_in: int, fan_out: int, gain: float = 1.0) -> float:
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


# ----------------------------------------------------------------------------- GPT-like
def test_gpt2_recipe_on_the_gpt_like_model():
    p = gpt_plan("gpt2")
    want = {"tok.weight": 0.02, "out.weight": 0.02}
    for l in range(L):
        for w in ("wq", "wk", "wv", "w1", "w3"):
            want[f"layers.{l}.{w}.weight"] = 0.02
        for w in ("wo", "w2"):   # the residual projections: 0.02 / sqrt(2L)
            want[f"layers.{l}.{w}.weight"] = 0.02 / math.sqrt(2 * L)
        assert p[f"layers.{l}.n1.weight"].params == {"value": 1.0}
    check(p, want)
    assert p.policy == "gpt2" and p["layers.0.wo.weight"].scheme == "normal"


def test_torchtitan_recipe_on_the_gpt_like_model():
    p = gpt_plan("torchtitan")
    want = {"tok.weight": 1.0, "out.weight": T3 / math.sqrt(D)}
    for l in range(L):
        for w in ("wq", "wk", "wv", "w1"):
            want[f"layers.{l}.{w}.weight"] = 0.02
        for w in ("wo", "w2", "w3"):  # torchtitan's FeedForward.init_weights gives w3 init_std too
            want[f"layers.{l}.{w}.weight"] = 0.02 / math.sqrt(2 * (l + 1))
    check(p, want)
    out = p["out.weight"]
    assert out.scheme == "kaiming_truncated_normal" and out.params["cut"] == 3.0


def test_olmo_mitchell_recipe_on_the_gpt_like_model():
    p = gpt_plan("olmo_mitchell")
    want = {"tok.weight": T3 / math.sqrt(D), "out.weight": T3 / math.sqrt(D)}
    for l in range(L):
        for w in ("wq", "wk", "wv", "w1", "w3"):
            want[f"layers.{l}.{w}.weight"] = T3 / math.sqrt(D)
        want[f"layers.{l}.wo.weight"] = T3 / math.sqrt(D) / math.sqrt(2 * (l + 1))
        want[f"layers.{l}.w2.weight"] = T3 / math.sqrt(2 * D) / math.sqrt(2 * (l + 1))  # d_in of w2 is 2D
    check(p, want)
    assert all(e.params.get("cut") == 3.0 for e in p if e.name.endswith("weight") and e.scheme != "constant")


def test_t_fixup_recipe_on_the_gpt_like_model():
    p = gpt_plan("t_fixup")
    enc = 0.67 * L ** -0.25               # 2 branches per block: the paper's encoder factor
    want = {"tok.weight": D ** -0.5 * (9 * L) ** -0.25, "out.weight": xavier(D, 50)}
    for l in range(L):
        want[f"layers.{l}.wq.weight"] = want[f"layers.{l}.wk.weight"] = xavier(D, D)
        want[f"layers.{l}.wv.weight"] = want[f"layers.{l}.wo.weight"] = xavier(D, D, enc)
        for w in ("w1", "w3"):
            want[f"layers.{l}.{w}.weight"] = xavier(D, 2 * D, enc)
        want[f"layers.{l}.w2.weight"] = xavier(2 * D, D, enc)
    check(p, want)
    assert p["layers.0.wv.weight"].scheme == "xavier_uniform"


def test_deepnorm_recipe_on_the_gpt_like_model():
    p = gpt_plan("deepnorm")
    beta = (8 * L) ** -0.25
    want = {}
    for l in range(L):
        want[f"layers.{l}.wq.weight"] = want[f"layers.{l}.wk.weight"] = xavier(D, D)
        want[f"layers.{l}.wv.weight"] = want[f"layers.{l}.wo.weight"] = xavier(D, D, beta)
        for w in ("w1", "w3"):
            want[f"layers.{l}.{w}.weight"] = xavier(D, 2 * D, beta)
        want[f"layers.{l}.w2.weight"] = xavier(2 * D, D, beta)
    check(p, want)
    assert "alpha = " + f"{(2 * L) ** 0.25:.4g}" in p.note and "model's forward" in p.note


def test_skipinit_recipe_on_the_gpt_like_model():
    p = gpt_plan("skipinit")
    for l in range(L):
        assert p[f"layers.{l}.wo.weight"].scheme == "zeros" and p[f"layers.{l}.w2.weight"].scheme == "zeros"
        assert p[f"layers.{l}.w1.weight"].std > 0   # the rest: the standard policy
    assert p["layers.0.wq.weight"].reason.startswith("attention query")


def test_fixup_on_the_gpt_like_model_needs_no_norms():
    with pytest.raises(ValueError, match="normalization layer"):
        gpt_plan("fixup")
    p = gpt_plan("fixup", norm=False)  # without norms: Fixup applies (2L branches)
    total = 2 * L
    for l in range(L):
        assert p[f"layers.{l}.wo.weight"].scheme == p[f"layers.{l}.w2.weight"].scheme == "zeros"
        # attention branch: wq, wk, wv, wo are m = 4 layers
        assert close(p[f"layers.{l}.wq.weight"].std, D ** -0.5 * total ** (-1 / 6))
        # MLP branch: w1 (feeds silu: its He gain), w3 (linear: gain 1), w2: m = 3
        w1 = p[f"layers.{l}.w1.weight"]
        assert close(w1.std, initwise.gain("silu") / math.sqrt(D) * total ** (-1 / 4))
        assert close(p[f"layers.{l}.w3.weight"].std, D ** -0.5 * total ** (-1 / 4))
    assert p["out.weight"].scheme == "zeros"


# ----------------------------------------------------------------------------- ResNet-like
def test_recipes_on_the_resnet_like_model():
    n = 4   # blocks = branches
    gp, tt, om = res_plan("gpt2"), res_plan("torchtitan"), res_plan("olmo_mitchell")
    for l in range(n):
        c1, c2 = f"blocks.{l}.conv1.weight", f"blocks.{l}.conv2.weight"
        assert close(gp[c1].std, 0.02) and close(gp[c2].std, 0.02 / math.sqrt(n))
        assert close(tt[c1].std, 0.02) and close(tt[c2].std, 0.02 / math.sqrt(2 * (l + 1)))
        assert close(om[c1].std, T3 / math.sqrt(CONV_IN))
        assert close(om[c2].std, T3 / math.sqrt(CONV_IN) / math.sqrt(2 * (l + 1)))
    assert close(tt["fc.weight"].std, T3 / math.sqrt(C)) and close(om["stem.weight"].std, T3 / math.sqrt(27))
    assert gp["stem.bias"].scheme == "zeros"


def test_fixup_and_deepnorm_on_the_resnet_like_model():
    n = 4
    fx, dn = res_plan("fixup"), res_plan("deepnorm")
    for l in range(n):   # m = 2 layers per branch: He times L^(-1/2); the last one 0
        assert close(fx[f"blocks.{l}.conv1.weight"].std, math.sqrt(2 / CONV_IN) * n ** -0.5)
        assert fx[f"blocks.{l}.conv2.weight"].scheme == "zeros"
        for c in ("conv1", "conv2"):
            assert close(dn[f"blocks.{l}.{c}.weight"].std, xavier(CONV_IN, CONV_IN, (8 * n) ** -0.25))
    assert fx["fc.weight"].scheme == "zeros" and fx["fc.bias"].scheme == "zeros"
    assert fx["stem.weight"].std > 0


def test_skipinit_zeroes_the_batchnorm_that_ends_each_branch():
    p = res_plan("skipinit", bn=True)
    for l in range(4):
        assert p[f"blocks.{l}.bn2.weight"].scheme == "zeros"       # zero_init_residual
        assert p[f"blocks.{l}.bn1.weight"].params == {"value": 1.0}
        assert p[f"blocks.{l}.conv2.weight"].std > 0
    with pytest.raises(ValueError, match="normalization"):
        res_plan("fixup", bn=True)


# ----------------------------------------------------------------------------- failures
def test_recipes_that_scale_branches_refuse_a_model_without_them():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(4, 8)
    for name in ("t_fixup", "deepnorm", "fixup", "skipinit"):
        with pytest.raises(ValueError, match="no residual sum"):
            initwise.plan(mlp, x, policy=name)
    p = initwise.plan(mlp, x, policy="gpt2")   # base rules apply to any model
    assert all(close(e.std, 0.02) for e in p if e.name.endswith("weight"))


def test_t_fixup_needs_attention_and_value_projections_it_can_split():
    with pytest.raises(ValueError, match="attention"):
        res_plan("t_fixup")

    class FusedQKV(nn.Module):   # one Linear for q, k, v: which rows are v is the model's own layout
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(16, 48), nn.Linear(16, 16)

        def forward(self, x):
            q, k, v = self.qkv(x).view(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-2, -1) / 8 ** 0.5, dim=-1) @ v
            return x + self.proj(a.transpose(1, 2).reshape(2, 5, 16))

    for name in ("t_fixup", "deepnorm"):
        with pytest.raises(ValueError, match="'0.qkv.weight' holds it fused"):
            initwise.plan(nn.Sequential(FusedQKV(), FusedQKV()), torch.randn(2, 5, 16), policy=name)


def test_multihead_attention_gets_its_value_third_scaled():
    """nn.MultiheadAttention stacks q, k, v in in_proj_weight's rows: only the last third is scaled
    (params.block_gains), drawn from the same stream as the rest."""
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.TransformerEncoder(layer, 3, enable_nested_tensor=False))
    x = torch.randn(2, 5, 4)
    p = initwise.init(model, x, policy="deepnorm", seed=0)
    beta = (8 * 3) ** -0.25
    name = "1.layers.1.self_attn.in_proj_weight"
    e = p[name]
    assert e.params["block_gains"] == [1.0, 1.0, beta] and close(e.std, xavier(16, 16))
    assert close(p["1.layers.1.self_attn.out_proj.weight"].std, xavier(16, 16, beta))
    w = model[1].layers[1].self_attn.in_proj_weight.detach().clone()
    rest = Plan.from_json(p.to_json())
    rest[name].params.pop("block_gains")
    rest.apply(model, seed=0)
    v = model[1].layers[1].self_attn.in_proj_weight.detach()
    assert torch.equal(w[:32], v[:32]) and torch.allclose(w[32:], v[32:] * beta, rtol=1e-6, atol=0)
    for l in range(3):
        t = initwise.plan(model, x, policy="t_fixup")[f"1.layers.{l}.self_attn.in_proj_weight"]
        assert close(t.params["block_gains"][2], 0.67 * 3 ** -0.25)


def test_skipinit_refuses_a_branch_that_ends_in_a_relu():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 8)

        def forward(self, x):
            return x + torch.relu(self.fc(x))

    model = nn.Sequential(Block(), Block())
    with pytest.raises(ValueError, match="relu"):
        initwise.plan(model, torch.randn(4, 8), policy="skipinit")
    with pytest.raises(ValueError, match="relu"):
        initwise.plan(model, torch.randn(4, 8), policy="fixup")


def test_recipes_need_a_recorded_forward_pass():
    class Untraceable(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            raise RuntimeError("no")

    with pytest.warns(UserWarning):
        with pytest.raises(ValueError, match="recorded forward pass"):
            initwise.plan(Untraceable(), policy="gpt2")


def test_rules_beat_the_recipe():
    torch.manual_seed(0)
    p = initwise.plan(GPTLike(), IDS, policy="gpt2", rules={"out.weight": "standard", "layers.0.wo.weight": "zeros"})
    assert p["out.weight"].scheme == "xavier_normal" and not close(p["out.weight"].std, 0.02)  # the standard choice
    assert p["layers.0.wo.weight"].scheme == "zeros" and close(p["layers.1.wo.weight"].std, 0.02 / math.sqrt(2 * L))
    assert "decided elsewhere" in p.note


def test_policy_names():
    assert RECIPES == ("gpt2", "torchtitan", "olmo_mitchell", "t_fixup", "deepnorm", "fixup", "skipinit")
    assert normalize_policy("Megatron") == "gpt2" and normalize_policy("olmo") == "olmo_mitchell"
    with pytest.raises(ValueError, match="a recipe"):
        normalize_policy("gpt3")


# ----------------------------------------------------------------------------- drawn values
def test_init_draws_each_recipe_and_the_plan_round_trips():
    for name in RECIPES:
        torch.manual_seed(0)
        model = GPTLike(norm=name != "fixup")
        p = initwise.init(model, IDS, policy=name, seed=3)
        again = Plan.from_json(p.to_json())          # every entry consistent with its formula
        assert again == p
        torch.manual_seed(1)
        other = GPTLike(norm=name != "fixup")
        again.apply(other, seed=3)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_trunc3_draws_have_the_std_and_the_cut():
    """OLMo's trunc_normal_(std=s, a=-3s, b=3s) on a 256x256 weight (65,536 samples)."""
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 4))
    initwise.init(model, torch.randn(8, 256), policy="olmo_mitchell", seed=0)
    w = model[0].weight.detach().double()
    s = 256 ** -0.5
    assert w.abs().max() <= 3 * s * (1 + 1e-6)
    assert abs(w.std().item() / (T3 * s) - 1) < 0.01          # 1% on 65,536 samples (~5 sigma)
    assert (w.abs() > 2.9 * s).any()                           # cut at 3 s, not at 2 s


def test_gpt2_recipe_matches_huggingface_gpt2_init():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(n_positions=32, n_embd=32, n_layer=4, n_head=2, vocab_size=64,
                                  resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = transformers.GPT2LMHeadModel(cfg)
    ids = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(0))
    p = initwise.plan(model, ids, policy="gpt2")
    for name, e in ((e.name, e) for e in p):   # HF's _init_weights: 0.02, c_proj 0.02 / sqrt(2 n_layer)
        if name.endswith("c_proj.weight"):
            assert close(e.std, 0.02 / math.sqrt(2 * cfg.n_layer)), name
        elif name.endswith(("c_attn.weight", "c_fc.weight", "wte.weight", "wpe.weight", "lm_head.weight")):
            assert close(e.std, 0.02), name
        elif ".ln_" in name or "ln_f" in name:
            assert e.scheme in ("constant", "zeros"), name


def test_block_gains_are_checked():
    from initwise.plan import PlanEntry
    good = PlanEntry("w", (6, 4), "Linear", "-", "xavier_normal", "normal", 4, 2, 1.0, math.sqrt(2 / 6), "",
                     params={"block_gains": [1.0, 1.0, 0.5]})
    good.check()
    for bad in ([1.0, 0.5, 0.5, 1.0], [], "0.5", [1.0, -1.0, 1.0]):
        e = PlanEntry(**{**good.__dict__, "params": {"block_gains": bad}})
        with pytest.raises(ValueError, match="block_gains"):
            e.check()
