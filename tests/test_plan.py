"""Plans: standard/torch/uniform policies, rules, ties, parametrizations, JSON, apply."""
from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from initwise.api import init, plan
from initwise.plan import Plan, PlanEntry, stream_seed

try:
    from tests.zoo import ZOO, SeedMLP, UntraceableConv
except ImportError:
    from zoo import ZOO, SeedMLP, UntraceableConv


def params(model):
    return {k: v.detach().clone() for k, v in model.named_parameters()}


def same_params(a, b):
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


# ----------------------------------------------------------------------------- zoo
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_standard_plan_matches_expectations(name):
    zm = ZOO[name]
    model = zm.build()
    p = plan(model, zm.example_input())
    for pname, (family, act) in zm.expect.items():
        entry = p[pname]
        assert entry.family == family, (pname, entry.scheme, entry.reason)
        if act is not None:
            assert entry.activation == act, pname
    # every parameter tensor is listed exactly once, nothing silently skipped
    listed = [n for e in p for n in (e.name, *e.shared_with, *e.writes)]
    assert len(listed) == len(set(listed))
    for n, _ in model.named_parameters(remove_duplicate=False):
        assert n in listed, n


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_json_round_trip_and_fresh_copy_gets_identical_weights(name):
    zm = ZOO[name]
    x = zm.example_input()
    a = zm.build(seed=1)
    p = init(a, x, seed=123)
    text = p.to_json()
    loaded = Plan.from_json(text)
    assert loaded == p and loaded.to_json() == text
    b = zm.build(seed=2)  # different construction-time weights
    loaded.apply(b, seed=123)
    assert same_params(a, b)


# ----------------------------------------------------------------------------- the seed example
def test_seed_example_exact_schemes_and_std():
    from initwise.gains import second_moment
    from initwise.policies.standard import TARGET_LOGITS

    p = plan(SeedMLP())  # a guessed N(0, 1) input: E[x^2] = 1 exactly
    assert p["fc1.weight"].scheme == "kaiming_orthogonal" and p["fc1.weight"].activation == "relu"
    assert p["fc2.weight"].scheme == "xavier_orthogonal" and p["fc3.weight"].scheme == "xavier_normal"
    # He before the ReLU: E[relu'^2] = 1/2, so chi_1 = 1 needs s = 2: var 2/fan_in, as He et al.
    assert p["fc1.weight"].std == pytest.approx(math.sqrt(2 / 10), rel=1e-9)
    assert p["fc1.weight"].gain == pytest.approx(math.sqrt(2), rel=1e-5)
    # tanh in its linear regime: its input gets E[z^2] = 1 from the ReLU output's E[x^2] = 1
    assert p["fc2.weight"].std == pytest.approx(math.sqrt(1 / 50), rel=1e-9)
    # the sigmoid at the output gets logits of E[z^2] = TARGET_LOGITS from tanh's E[tanh(z)^2]
    q = second_moment(torch.tanh)
    assert p["fc3.weight"].std == pytest.approx(math.sqrt(TARGET_LOGITS / (30 * q)), rel=1e-6)
    assert all(p[f"fc{i}.bias"].scheme == "zeros" for i in (1, 2, 3))
    assert p.method == "forward"


# ----------------------------------------------------------------------------- distributions
def wide(act: nn.Module) -> nn.Module:
    """600 outputs: beyond ORTHOGONAL_MAX, so the default plan draws it from its distribution."""
    return nn.Sequential(nn.Linear(400, 600), act, nn.Linear(600, 2))


@pytest.mark.parametrize("act, expected_std", [
    (nn.ReLU(), math.sqrt(2 / 400)),
    (nn.LeakyReLU(0.2), math.sqrt(2 / (1.04 * 400))),
    (nn.Tanh(), math.sqrt(1 / 400)),
    (nn.SELU(), math.sqrt(1 / 400)),
])
@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_sampled_std_matches_plan(act, expected_std, distribution):
    model = wide(act)
    p = init(model, distribution=distribution, seed=0)
    entry = p["0.weight"]
    assert entry.std == pytest.approx(expected_std, rel=1e-9)
    assert entry.distribution == distribution
    w = model[0].weight.detach().double()  # 240,000 samples: std error ~0.15%
    assert w.mean().abs() < 4 * expected_std / math.sqrt(w.numel())
    assert w.std().item() == pytest.approx(expected_std, rel=0.01)
    if distribution == "uniform":
        assert w.abs().max() <= math.sqrt(3) * expected_std + 1e-7
        assert w.abs().max() > 0.99 * math.sqrt(3) * expected_std
    if distribution == "truncated_normal":
        assert w.abs().max() <= 2 * expected_std / 0.87962566103423978 + 1e-6


def test_he_gain_for_smooth_activations_puts_them_at_the_edge_of_chaos():
    from initwise.moments import act_moments

    for module in (nn.GELU(), nn.SiLU(), nn.ELU(), nn.Mish()):
        entry = plan(wide(module))["0.weight"]  # N(0, 1) input: E[x^2] = 1
        assert entry.family == "he"
        s = entry.gain ** 2  # the pre-activation's E[z^2]
        assert entry.std == pytest.approx(entry.gain / math.sqrt(400), rel=1e-5)
        # chi_1 = s E[phi'(z)^2] = 1 for z ~ N(0, s): the gradient keeps its scale
        assert s * act_moments(module, 0.0, s).slope2 == pytest.approx(1.0, abs=1e-4), module


def test_multi_consumer_gets_the_smallest_std_and_says_so():
    e = plan(ZOO["multi_consumer"].build())["shared.weight"]
    # relu asks var 2/fan_in, tanh (linear regime) 1/fan_in: the smaller wins
    assert e.family == "xavier" and e.std == pytest.approx(math.sqrt(1 / 10), rel=1e-6)
    assert "most conservative" in e.reason and "relu" in e.reason and "tanh" in e.reason


# ----------------------------------------------------------------------------- recurrent / attention / embedding
def test_lstm_orthogonal_per_gate_block_and_block_fans():
    zm = ZOO["lstm_classifier"]
    model = zm.build()
    p = init(model, seed=0)
    hh = model.lstm.weight_hh_l0.detach().double()
    for block in hh.chunk(4):
        assert torch.allclose(block @ block.T, torch.eye(16, dtype=torch.float64), atol=1e-5)
    ih = p["lstm.weight_ih_l0"]
    assert (ih.fan_in, ih.fan_out) == (12, 16)
    assert ih.std == pytest.approx(math.sqrt(2 / 28))
    assert p["lstm.weight_hh_l0"].params["blocks"] == 4
    assert torch.count_nonzero(model.lstm.bias_ih_l0) == 0


def test_embedding_normal_one_with_zero_padding_row():
    model = nn.Embedding(200, 64, padding_idx=3)
    p = init(model, seed=0)
    assert p["weight"].scheme == "normal" and p["weight"].std == 1.0
    w = model.weight.detach()
    assert torch.count_nonzero(w[3]) == 0
    rest = torch.cat([w[:3], w[4:]])  # 12,544 samples
    assert rest.std().item() == pytest.approx(1.0, rel=0.03)


def test_attention_projections_xavier_per_block():
    model = ZOO["transformer_block"].build()
    p = init(model, seed=0)
    e = p["attn.in_proj_weight"]
    assert (e.fan_in, e.fan_out) == (16, 16) and e.std == pytest.approx(math.sqrt(2 / 32))
    assert torch.count_nonzero(model.attn.in_proj_bias) == 0
    assert torch.equal(model.norm1.weight, torch.ones(16)) and torch.count_nonzero(model.norm1.bias) == 0


def test_conv_transpose_fans():
    p = plan(ZOO["decoder"].build())
    e = p["3.weight"]  # ConvTranspose2d(8, 8, 4, stride=2, groups=2): weight (8, 4, 4, 4)
    # each output position receives in/groups * prod(k / stride) taps; each input feeds out/groups * prod(k)
    assert (e.fan_in, e.fan_out) == (4 * 16 / 4, 4 * 16)


# ----------------------------------------------------------------------------- policies
@pytest.mark.parametrize("policy, family", [
    ("xavier_uniform", "xavier"), ("he", "he"), ("lecun", "lecun"), ("orthogonal", "orthogonal"),
    ("zeros", "constant"), ("small", "normal"), ("glorot_normal", "xavier"),
])
def test_uniform_policy_applies_one_scheme_to_every_weight(policy, family):
    model = ZOO["cnn_bn_relu"].build()
    p = init(model, policy=policy, seed=0)
    assert p.method == "not needed"
    for e in p:
        t = dict(model.named_parameters())[e.name]
        if t.dim() >= 2:
            assert e.family == family, e.name
        elif e.layer == "BatchNorm2d" and e.name.endswith("weight"):
            assert torch.equal(t, torch.ones_like(t))
        else:
            assert torch.count_nonzero(t) == 0, e.name
    if policy == "he":
        assert p["9.weight"].gain == pytest.approx(math.sqrt(2))


def test_family_policy_takes_the_distribution_a_full_name_keeps_its_own():
    model = ZOO["seed_mlp"].build()
    assert plan(model, policy="he", distribution="uniform")["fc1.weight"].scheme == "kaiming_uniform"
    assert plan(model, policy="glorot", distribution="truncated_normal")["fc1.weight"].scheme == \
        "xavier_truncated_normal"
    assert plan(model, policy="he_normal", distribution="uniform")["fc1.weight"].scheme == "kaiming_normal"
    p = plan(model, rules={"fc2.*": "lecun"}, distribution="uniform")
    assert p["fc2.weight"].scheme == "lecun_uniform" and p["fc1.weight"].scheme == "kaiming_uniform"


def test_delta_orthogonal_policy_uses_orthogonal_for_linear_layers():
    p = plan(ZOO["cnn_bn_relu"].build(), policy="delta_orthogonal")
    assert p["0.weight"].scheme == "delta_orthogonal" and p["9.weight"].scheme == "orthogonal"


def test_torch_policy_reproduces_pytorch_default_distributions():
    model = nn.Sequential(nn.Linear(500, 200), nn.LSTM(200, 50))
    p = init(model, policy="torch", seed=0)
    w, b = model[0].weight.detach(), model[0].bias.detach()
    bound = 1 / math.sqrt(500)
    assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert b.abs().max() <= bound
    for name, t in model[1].named_parameters():
        assert t.abs().max() <= 1 / math.sqrt(50) + 1e-7, name
        assert p[f"1.{name}"].params["bound"] == pytest.approx(1 / math.sqrt(50))
    # torch's fan rule for transposed convolutions: dims 1 and 0
    e = plan(nn.ConvTranspose2d(6, 4, 3), policy="torch")["weight"]
    assert e.fan_in == 4 * 9


def test_unknown_policy_and_distribution():
    with pytest.raises(ValueError, match="unknown policy 'bogus'"):
        plan(nn.Linear(2, 2), policy="bogus")
    with pytest.raises(ValueError, match="distribution"):
        plan(nn.Linear(2, 2), distribution="cauchy")
    with pytest.raises(ValueError, match="constant"):
        plan(nn.Linear(2, 2), policy="constant")


# ----------------------------------------------------------------------------- rules
def test_rules_by_glob_type_module_and_activation():
    model = ZOO["lstm_classifier"].build()
    before = params(model)
    p = init(model, rules={"head.*": "zeros", nn.LSTM: "orthogonal", "embed.*": "keep"}, seed=0)
    assert torch.count_nonzero(model.head.weight) == 0
    assert p["lstm.weight_ih_l0"].scheme == "orthogonal" and p["lstm.weight_ih_l0"].params["blocks"] == 4
    assert p["lstm.bias_ih_l0"].scheme == "zeros"
    assert torch.equal(model.embed.weight, before["embed.weight"])
    assert p["head.weight"].reason.startswith("rule 'head.*' -> zeros")

    model = ZOO["seed_mlp"].build()
    p = plan(model, rules={"activation:tanh": "xavier_uniform", model.fc1: "lecun", nn.Sigmoid: "orthogonal"})
    assert p["fc2.weight"].scheme == "xavier_uniform"
    assert p["fc1.weight"].scheme == "lecun_normal"
    # fc3 feeds torch.sigmoid: the nn.Sigmoid class names the activation
    assert p["fc3.weight"].scheme == "orthogonal"


def test_rule_precedence_name_beats_type_beats_activation():
    model = ZOO["seed_mlp"].build()
    p = plan(model, rules={"fc1.weight": "zeros", nn.Linear: "lecun", "activation:relu": "orthogonal"})
    assert p["fc1.weight"].scheme == "zeros"
    assert p["fc1.bias"].scheme == "zeros"  # type rule: lecun for weights, biases stay 0
    assert p["fc2.weight"].scheme == "lecun_normal"


def test_conflicting_unknown_and_unmatched_rules_raise_before_writing():
    model = ZOO["seed_mlp"].build()
    before = params(model)
    bad = [
        ({"fc*": "zeros", "*.weight": "xavier"}, "conflicting rules for fc3.weight"),
        ({"head.*": "zeros"}, "matches no parameter"),
        ({"fc1.*": "xavierr"}, "unknown initializer"),
        ({"activation:swoosh": "he"}, "unknown activation"),
        ({3: "he"}, "rule key 3"),
        ({nn.LSTM: "orthogonal"}, "matches no parameter"),
        ({"fc1.*": 0.5}, "must be a scheme name"),
    ]
    for rules, message in bad:
        with pytest.raises((ValueError, TypeError), match=message):
            init(model, rules=rules, seed=0)
        assert same_params_dict(model, before)


def same_params_dict(model, before):
    return all(torch.equal(t, before[n]) for n, t in model.named_parameters())


# ----------------------------------------------------------------------------- ties, parametrizations, unknowns
def test_tied_parameters_initialized_once_and_listed():
    model = ZOO["tied_lm"].build()
    p = init(model, seed=0)
    e = p["embed.weight"]
    assert e.shared_with == ("lm_head.weight",) and p["lm_head.weight"] is e
    assert "tied" in e.reason
    assert model.lm_head.weight is model.embed.weight
    # the embedding decides its scale (N(0, 1)); the norm before the tied output layer brings the
    # initial logits to E[y^2] = TARGET_LOGITS
    from initwise.policies.standard import TARGET_LOGITS
    assert e.family == "normal" and e.std == 1.0
    assert p["norm.weight"].scheme == "constant" and "tied output layer" in p["norm.weight"].reason
    with torch.no_grad():
        logits = model(torch.randint(0, 50, (16, 32)))
    assert logits.square().mean().item() == pytest.approx(TARGET_LOGITS, rel=0.5)  # 16 wide: one draw
    assert sum(1 for x in p if x.name == "embed.weight") == 1


def test_parametrized_weights_written_through_the_original():
    model = ZOO["parametrized"].build()
    p = init(model, seed=0)
    e = p["wn.weight"]
    assert e.writes == ("wn.parametrizations.weight.original0", "wn.parametrizations.weight.original1")
    # weight norm: the effective weight equals the planned He weight exactly
    v = model.wn.parametrizations.weight.original1
    assert torch.allclose(model.wn.weight, v, atol=1e-6)
    fresh = ZOO["parametrized"].build(seed=5)
    Plan.from_json(p.to_json()).apply(fresh, seed=0)
    assert torch.allclose(fresh.wn.weight, model.wn.weight)
    assert "WeightNorm" in e.reason and "SpectralNorm" in p["sn.weight"].reason


def test_parametrization_without_right_inverse_fails_without_writing():
    class Square(nn.Module):
        def forward(self, w):
            return w * w

    model = ZOO["seed_mlp"].build()
    nn.utils.parametrize.register_parametrization(model.fc3, "weight", Square())
    before = params(model)
    with pytest.raises(ValueError, match="right_inverse"):
        init(model, seed=0)
    assert same_params_dict(model, before)
    init(model, rules={"fc3.weight": "keep"}, seed=0)  # the fix the message suggests works
    assert not same_params_dict(model, before)


def test_parameters_of_unknown_layers_are_planned_by_their_use():
    model = ZOO["with_unknown"].build()
    p = init(model, seed=0)
    e = p["scale.alpha"]  # multiplies the signal: starts at 1; the model's constant 0.5 is named
    assert e.scheme == "constant" and e.params["value"] == 1.0 and "multiplies the signal" in e.reason
    assert "'scale.alpha' (was 0.5)" in p.note and "keep" in p.note


def test_parameters_whose_use_cannot_be_read_are_kept_and_counted():
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.spare = nn.Parameter(torch.full((3, 3), 0.5))  # never used in forward

        def forward(self, x):
            return self.fc(x)

    model = Unused()
    p = init(model, seed=0)
    assert p["spare"].scheme == "keep" and "1 tensor(s) kept (9 elements)" in p.note and "'spare'" in p.note
    assert torch.equal(model.spare, torch.full((3, 3), 0.5))


# ----------------------------------------------------------------------------- seeds and apply
def test_seed_independent_of_registration_order():
    class A(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 2)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    class B(A):
        def __init__(self):
            nn.Module.__init__(self)
            self.fc2 = nn.Linear(6, 2)
            self.fc1 = nn.Linear(5, 6)

    a, b = A(), B()
    init(a, seed=7)
    init(b, seed=7)
    assert list(dict(a.named_parameters())) != list(dict(b.named_parameters()))
    assert all(torch.equal(t, dict(b.named_parameters())[n]) for n, t in a.named_parameters())
    c = A()
    init(c, seed=8)
    assert not torch.equal(c.fc1.weight, a.fc1.weight)
    assert stream_seed(7, "fc1.weight") != stream_seed(7, "fc2.weight")


def test_seed_none_is_recorded_and_follows_torch_manual_seed():
    a, b = SeedMLP(), SeedMLP()
    torch.manual_seed(3)
    pa = init(a)
    torch.manual_seed(3)
    pb = init(b)
    assert pa.seed is not None and pa.seed == pb.seed
    assert same_params(a, b)


def test_failure_half_way_through_apply_changes_nothing():
    model = ZOO["sequential_mlp"].build()
    p = plan(model)
    broken = Plan.from_dict(json.loads(p.to_json()))
    broken.entries[-1].scheme = "no_such_scheme"  # from_dict itself rejects it (test_plancheck)
    before = params(model)
    with pytest.raises(ValueError, match="unknown scheme 'no_such_scheme'"):
        broken.apply(model, seed=0)
    assert same_params_dict(model, before)


def test_plan_for_another_model_is_rejected():
    p = plan(SeedMLP())
    with pytest.raises(ValueError, match="another model"):
        p.apply(nn.Sequential(nn.Linear(10, 50)), seed=0)
    data = json.loads(p.to_json())
    data["entries"][0]["shape"] = [2, 30]
    with pytest.raises(ValueError, match="shape"):
        Plan.from_dict(data).apply(SeedMLP(), seed=0)
    other = SeedMLP()
    other.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not in the plan"):
        p.apply(other, seed=0)


def test_plan_reads_only():
    zm = ZOO["cnn_bn_relu"]
    model = zm.build()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    plan(model, zm.example_input())
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# ----------------------------------------------------------------------------- display and JSON
def test_table_rich_and_plain():
    p = plan(SeedMLP())
    for text in (str(p.table()), str(p.table(plain=True)), p.table(width=80).render()):
        assert "fc1.weight" in text and "kaiming_orthogonal" in text and "relu" in text
        assert "policy 'standard'" in text and "forward" in text
    assert str(p) == str(p.table())
    # one table type for plans and reports; it fits the width asked, numbers whole
    from initwise.table import Table
    t = p.table()
    assert isinstance(t, Table) and "fc1.weight" in t.column("parameter")
    for width in (80, 120):
        lines = t.render(width).splitlines()
        assert max(len(line) for line in lines) <= width, width
        assert all(e.std is None or f"{e.std:.4g}" in t.render(width) for e in p.entries[:3])


def test_from_json_errors(tmp_path):
    with pytest.raises(ValueError, match="not valid JSON"):
        Plan.from_json("{nope")
    with pytest.raises(ValueError, match="not an initwise plan"):
        Plan.from_json("{}")
    with pytest.raises(ValueError, match="plan entry 0 \\('x'\\), field 'shape': is missing"):
        Plan.from_json('{"entries": [{"name": "x"}]}')
    path = tmp_path / "plan.json"
    p = plan(SeedMLP())
    p.to_json(path)
    assert Plan.from_json(path) == p


def test_entry_family_names():
    base = dict(name="w", shape=(2, 2), layer="Linear", activation="relu", distribution="-",
                fan_in=2, fan_out=2, gain=None, std=None, reason="")
    for scheme, family in [("kaiming_uniform", "he"), ("xavier_truncated_normal", "xavier"),
                           ("lecun_uniform", "lecun"), ("zeros", "constant"), ("keep", "keep")]:
        assert PlanEntry(scheme=scheme, **base).family == family


# ----------------------------------------------------------------------------- review fixes
def test_torch_policy_matches_fresh_attention_and_transformer_modules():
    """Against freshly constructed torch modules: the same zero/constant tensors, and the std (and
    uniform bound) of every random tensor. Tolerance on a std: 3.5/sqrt(n) relative (about 5
    standard errors for normal samples, 8 for uniform); in_proj_weight has 49,152 samples."""
    def build():
        return nn.ModuleDict({
            "enc": nn.TransformerEncoderLayer(128, 4, 256),
            "mha": nn.MultiheadAttention(64, 4, add_bias_kv=True, kdim=32, vdim=48),
            "nobias": nn.MultiheadAttention(32, 2, bias=False),
            "tr": nn.Transformer(32, 2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64,
                             batch_first=True),
        })

    torch.manual_seed(0)
    ref = build()
    ours = build()
    p = init(ours, policy="torch", seed=0)
    fresh = dict(ref.named_parameters())
    assert fresh.keys() == dict(ours.named_parameters()).keys()
    for name, t in ours.named_parameters():
        r, t, e = fresh[name].detach(), t.detach(), p[name]
        assert bool((r == 0).all()) == bool((t == 0).all()), (name, e.reason)
        if r.min() == r.max():
            assert torch.equal(t, r), name
            continue
        tol = 3.5 / math.sqrt(r.numel())
        assert r.std().item() == pytest.approx(e.std, rel=tol), (name, e.reason)
        assert t.std().item() == pytest.approx(e.std, rel=tol), (name, e.reason)
        if e.distribution == "uniform":
            bound = math.sqrt(3) * e.std * (1 + 1e-6)
            assert r.abs().max() <= bound and t.abs().max() <= bound, name
    assert p["enc.self_attn.out_proj.bias"].scheme == "zeros"
    assert p["tr.encoder.layers.0.linear1.weight"].scheme == "xavier_uniform"


def test_tied_embedding_keeps_its_padding_row():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 4, padding_idx=0)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.embed.weight

        def forward(self, tokens):
            return self.out(self.embed(tokens))

    for policy in ("standard", "torch", "he", "orthogonal"):
        model = Tied()
        p = init(model, policy=policy, seed=0)
        w = model.embed.weight.detach()
        assert torch.count_nonzero(w[0]) == 0, policy
        assert torch.count_nonzero(w[1:]) == w[1:].numel(), policy
        assert p["embed.weight"].params["padding_idx"] == 0, policy
    assert "padding row 0" in p["embed.weight"].reason
    fresh = Tied()
    Plan.from_json(p.to_json()).apply(fresh, seed=0)
    assert torch.equal(fresh.embed.weight, model.embed.weight)
    # an untied embedding under a one-scheme policy keeps it too
    emb = nn.Embedding(10, 4, padding_idx=3)
    init(emb, policy="xavier_uniform", seed=0)
    assert torch.count_nonzero(emb.weight[3]) == 0


def test_plan_with_a_failing_example_input_raises_and_init_writes_nothing():
    model = UntraceableConv()
    before = params(model)
    for call in (plan, init):
        with pytest.raises(ValueError, match="forward pass of UntraceableConv failed with the given example_input"):
            call(model, torch.randn(2, 3, 31, 31))
    assert all(torch.equal(t, before[n]) for n, t in params(model).items())
    assert plan(model, torch.randn(2, 3, 32, 32))["conv.weight"].family == "he"


def test_order_fallback_is_stated_in_the_note_and_every_affected_reason():
    with pytest.warns(UserWarning, match="UntraceableConv"):
        p = plan(UntraceableConv())
    assert p.method == "order"
    assert "FALLBACK" in p.note and "guessed input of shape (2, 3, 16, 16)" in p.note and "failed" in p.note
    for name in ("conv.weight", "fc.weight"):
        reason = p[name].reason
        assert "guessed from declaration order" in reason, name
        assert "guessed input of shape (2, 3, 16, 16)" in reason and "example_input" in reason, name
    assert "declaration order" not in p["conv.bias"].reason  # biases do not depend on activations


@pytest.mark.parametrize("act", [nn.Hardsigmoid(), nn.Softmin(dim=-1)])
def test_sigmoid_and_softmax_relatives_get_xavier(act):
    model = nn.Sequential(nn.Linear(8, 16), act, nn.Linear(16, 2))
    entry = plan(model)["0.weight"]
    assert entry.family == "xavier"
    assert entry.std <= math.sqrt(1 / 8) + 1e-9  # at most unit input to the saturating unit


# ----------------------------------------------------------------------------- grouped convolutions
def _variance_ratio(conv: nn.Conv2d) -> float:
    """E[y^2] / E[x^2] of ``conv`` on N(0, 1) input, over the interior (no zero padding)."""
    x = torch.randn(8, conv.in_channels, 24, 24, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = conv(x)[..., 1:-1, 1:-1]
    return (y.pow(2).mean() / x.pow(2).mean()).item()


@pytest.mark.parametrize("policy", ["orthogonal", "delta_orthogonal"])
@pytest.mark.parametrize("groups", [1, 4, 64])
def test_orthogonal_policies_preserve_variance_of_grouped_and_depthwise_convs(policy, groups):
    # each group's (out/g, in/g) block is orthogonal on its own: every output channel's weights
    # have unit norm, so E[y^2] = E[x^2] (before the fix: 0.25 for 4 groups, 0.016 depthwise)
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=groups)
    p = init(conv, policy=policy, seed=0)
    assert p["weight"].scheme == policy
    assert _variance_ratio(conv) == pytest.approx(1.0, rel=0.10)
    # the planned std is the std of what was drawn
    assert conv.weight.std(unbiased=False).item() == pytest.approx(p["weight"].std, rel=0.05)


def test_delta_orthogonal_policy_falls_back_to_orthogonal_for_even_kernels():
    conv = nn.Conv2d(64, 64, 4)
    p = plan(conv, policy="delta_orthogonal")
    assert p["weight"].scheme == "orthogonal" and "no centre tap" in p["weight"].reason
    init(conv, policy="delta_orthogonal", seed=0)  # what was planned can be applied


# ----------------------------------------------------------------------------- residual nets
class _ResMLP(nn.Module):
    def __init__(self, n: int = 4, width: int = 64):
        super().__init__()
        self.fcs = nn.ModuleList(nn.Linear(width, width) for _ in range(n))
        self.head = nn.Linear(width, 2)

    def forward(self, h):
        for f in self.fcs:
            h = h + torch.relu(f(h))
        return self.head(h)


def _stream(model, x):
    """Std of the residual stream after each block (forward hooks on the sums)."""
    out = []
    h = x
    with torch.no_grad():
        for f in model.fcs:
            h = h + torch.relu(f(h))
            out.append(h.std().item())
    return out


def test_standard_plan_scales_residual_branches_so_the_stream_stays_bounded():
    model = _ResMLP(n=32)
    x = torch.randn(256, 64)
    p = init(model, x, seed=0)
    for i in range(32):
        e = p[f"fcs.{i}.weight"]
        assert e.family == "he" and e.std < math.sqrt(2 / 64)  # He, scaled down as a branch end
        assert "branch 1 of 32 on a residual stream" in e.reason
    assert "32 residual branch ends on 1 stream(s) scaled" in p.note
    s = _stream(model, x)
    assert s[-1] / x.std().item() <= math.sqrt(2) * 1.15  # variance at most doubled (+ sampling)
    # residual="none": no branch is rescaled; each layer still gets He for what reaches it, so every
    # branch adds about the stream's input variance: it grows ~linearly, to ~N times
    q = init(model, x, residual="none", seed=0)
    assert all("residual stream" not in q[f"fcs.{i}.weight"].reason for i in range(32))
    assert _stream(model, x)[-1] / x.std().item() > 4
    # He everywhere (one scheme, no propagation): each block multiplies the variance: it explodes
    init(model, x, policy="he_normal", seed=0)
    assert _stream(model, x)[-1] / x.std().item() > 1e3


class _LinearEndResMLP(nn.Module):
    """h + fc2(relu(fc1(h))): the branch ends in a linear layer, which may start at 0."""

    def __init__(self, n: int = 3, width: int = 32):
        super().__init__()
        self.fc1 = nn.ModuleList(nn.Linear(width, width) for _ in range(n))
        self.fc2 = nn.ModuleList(nn.Linear(width, width) for _ in range(n))

    def forward(self, h):
        for a, b in zip(self.fc1, self.fc2):
            h = h + b(torch.relu(a(h)))
        return h


def test_residual_zero_starts_linear_branch_ends_at_zero_and_they_still_learn():
    model = _LinearEndResMLP()
    p = init(model, torch.randn(8, 32), residual="zero", seed=0)
    assert all(p[f"fc2.{i}.weight"].scheme == "zeros" for i in range(3))
    assert all(p[f"fc1.{i}.weight"].family == "he" for i in range(3))
    assert "zeroed" in p.note
    x = torch.randn(8, 32)
    model(x).square().mean().backward()
    assert model.fc2[0].weight.grad.abs().sum() > 0  # the zeroed branch end still learns


def test_residual_zero_never_zeroes_a_layer_before_a_relu():
    p = plan(_ResMLP(), torch.randn(8, 64), residual="zero")
    assert all(p[f"fcs.{i}.weight"].family == "he" and p[f"fcs.{i}.weight"].std > 0 for i in range(4))
    assert "relu'(0) = 0" in p.note and "scaled instead" in p.note


def test_bad_residual_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="residual must be one of"):
        plan(_ResMLP(), residual="tiny")


def test_plain_mlp_and_one_scheme_policies_have_no_residual_note():
    assert "residual" not in plan(SeedMLP()).note
    assert "residual" not in plan(_ResMLP(), policy="he").note


# ----------------------------------------------------------------------------- effective weights
def test_spectral_norm_plan_reports_the_effective_std_it_measures():
    from torch.nn.utils.parametrizations import spectral_norm

    model = spectral_norm(nn.Linear(256, 256))
    p = plan(model)
    e = p["weight"]
    # the drawn std is Xavier's, but spectral norm divides by the top singular value (~2 sqrt(n) std)
    assert e.std == pytest.approx(math.sqrt(2 / 512))
    eff = e.params["effective_std"]
    assert eff < 0.85 * e.std and "effective weight of std" in e.reason
    assert "eff." in str(p.table(plain=True))
    init(model, seed=0)
    assert model.weight.detach().std(unbiased=False).item() == pytest.approx(eff, rel=0.05)


def test_orthogonal_parametrization_projection_is_reported_only_when_it_changes_the_std():
    from torch.nn.utils.parametrizations import orthogonal

    tall = orthogonal(nn.Linear(64, 256))  # Xavier std 0.079, orthogonal columns: 1/16
    e = plan(tall)["weight"]
    assert e.params["effective_std"] == pytest.approx(1 / 16, rel=0.01)
    square = orthogonal(nn.Linear(64, 64))  # Xavier and orthogonal stds agree: nothing to say
    assert "effective_std" not in plan(square)["weight"].params
    init(tall, seed=0)
    w = tall.weight.detach()
    assert torch.allclose(w.T @ w, torch.eye(64), atol=1e-4)


def test_orthogonal_parametrization_buffers_change_only_when_everything_is_written():
    from torch.nn.utils.parametrizations import orthogonal

    model = nn.Sequential(orthogonal(nn.Linear(16, 16)), nn.Linear(16, 4))
    p = plan(model)
    base = model[0].parametrizations.weight[0].base.clone()
    before = params(model)
    broken = Plan.from_dict(p.to_dict())
    broken.entries[-1].shape = (5, 5)  # the last entry no longer fits: nothing may be written
    with pytest.raises(ValueError, match="shape"):
        broken.apply(model, seed=0)
    assert torch.equal(model[0].parametrizations.weight[0].base, base)
    assert all(torch.equal(v, before[k]) for k, v in params(model).items())


def test_legacy_weight_norm_plans_direction_and_sets_magnitude_to_its_norm():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = nn.Sequential(nn.utils.weight_norm(nn.Linear(400, 300)), nn.ReLU(), nn.Linear(300, 2))
    p = plan(model)
    v, g = p["0.weight_v"], p["0.weight_g"]
    assert v.family == "he" and v.std == pytest.approx(math.sqrt(2 / 400)) and v.activation == "relu"
    assert g.scheme == "weight_norm_g" and g.params["of"] == "0.weight_v"
    init(model, seed=0)
    model(torch.randn(1, 400))  # the legacy hook recomputes weight = g v / ||v|| on forward
    w = model[0].weight.detach()
    assert torch.allclose(w, model[0].weight_v.detach(), atol=1e-6)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 400), rel=0.02)
    # a plan round-trips through JSON and applies to a fresh copy identically
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        fresh = nn.Sequential(nn.utils.weight_norm(nn.Linear(400, 300)), nn.ReLU(), nn.Linear(300, 2))
    Plan.from_json(p.to_json()).apply(fresh, seed=0)
    assert same_params(model, fresh)


@pytest.mark.parametrize("name", ["uniform", "normal", "eye", "ones", "dirac", "sparse"])
def test_schemes_without_a_whole_model_rule_are_not_policies(name):
    with pytest.raises(ValueError, match="cannot be used as a whole-model policy"):
        plan(nn.Linear(3, 3), policy=name)


def test_hidden_weights_are_drawn_orthogonal_with_the_family_std():
    model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    p = init(model, torch.randn(32, 16), seed=0)
    e = p["2.weight"]
    assert e.family == "he" and e.scheme == "kaiming_orthogonal" and "orthogonal matrix" in e.reason
    s = torch.linalg.svdvals(model[2].weight.detach().double())
    assert torch.allclose(s, torch.full_like(s, e.std * 8), rtol=1e-5)  # all singular values std * sqrt(64)
    tall = p["0.weight"]  # 64 x 16: semi-orthogonal, its 16 singular values std * sqrt(64)
    assert tall.scheme == "kaiming_orthogonal" and "tall hidden layer" in tall.reason
    s = torch.linalg.svdvals(model[0].weight.detach().double())
    assert s.numel() == 16 and torch.allclose(s, torch.full_like(s, tall.std * 8), rtol=1e-5)
    assert p["4.weight"].scheme == "xavier_normal"  # the output layer: Gaussian
    assert init(model, torch.randn(32, 16), seed=0, distribution="uniform")["2.weight"].scheme == "kaiming_uniform"
