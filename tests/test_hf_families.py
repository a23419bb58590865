"""Model families beyond the zoo: Gemma, Gemma 2, GPT-Neo's eager attention, Mamba.

Gemma's RMSNorm scales by ``1 + weight`` (its identity is weight 0), Gemma 2 adds a norm at the
end of every branch, caps its attention and output logits with ``c tanh(x / c)`` and writes its
attention out as matmul, softmax, matmul; Mamba reads ``A_log`` as ``-exp(A_log)`` in a scan the
propagation cannot follow. Models from small configs, random weights, no download.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import initwise
from initwise.graph import record
from initwise.nodes import scale_offset

transformers = pytest.importorskip("transformers", reason="these models come from transformers")

SMALL = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=4, head_dim=16, max_position_embeddings=64)


def _gemma(kind: str) -> nn.Module:
    cfg = {"gemma": transformers.GemmaConfig, "gemma2": transformers.Gemma2Config}[kind](**SMALL)
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(cfg).eval()


def _gpt_neo() -> nn.Module:
    """GPT-Neo writes its attention out (matmul, softmax, matmul), unscaled."""
    cfg = transformers.GPTNeoConfig(vocab_size=256, hidden_size=64, num_layers=2, num_heads=4,
                                    attention_types=[[["global", "local"], 1]], max_position_embeddings=64,
                                    embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0)
    torch.manual_seed(0)
    return transformers.GPTNeoForCausalLM(cfg).eval()


def _ids(seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 256, (4, 32), generator=torch.Generator().manual_seed(seed))


class _OffsetNorm(nn.Module):
    """RMS-normalizes and scales by ``offset + weight``."""

    def __init__(self, d: int, offset: float) -> None:
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * (self.offset + self.weight)

    def extra_repr(self) -> str:
        return f"offset={self.offset}"


class _TwoArgNorm(nn.Module):
    """A gated norm whose forward needs a second tensor: the probe cannot call it."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight * gate


def test_scale_offset_reads_the_form_of_the_norm():
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm
    assert scale_offset(GemmaRMSNorm(32)) == 1.0
    assert scale_offset(_OffsetNorm(32, 2.0)) == 2.0
    assert scale_offset(_OffsetNorm(32, 0.0)) == 0.0
    assert scale_offset(LlamaRMSNorm(32)) == 0.0
    assert scale_offset(nn.LayerNorm(32)) == 0.0
    assert scale_offset(_TwoArgNorm(32)) == 0.0          # cannot be probed: the usual form
    assert scale_offset(nn.Linear(4, 4)) == 0.0          # not a norm
    with torch.device("meta"):
        meta = GemmaRMSNorm(32)
    assert scale_offset(meta) == 1.0                     # the probe brings its own values


@pytest.mark.parametrize("kind", ["gemma", "gemma2"])
def test_gemma_starts_near_log_vocab_with_its_norms_at_the_identity(kind):
    model = _gemma(kind)
    plan = initwise.init(model, {"input_ids": _ids()}, seed=0)
    norms = [e for e in plan if e.name.endswith("layernorm.weight") and "post" not in e.name]
    assert norms and all(e.scheme == "zeros" and "1 + weight" in e.reason for e in norms)
    assert all(float(model.get_parameter(e.name).abs().max()) == 0.0 for e in norms)
    # the tied output layer reaches its logits target through the final norm's gain, 1 + weight
    final = plan["model.norm.weight"]
    assert final.scheme == "constant" and -1.0 < final.params["value"] < -0.9, final
    ids = _ids(1)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    z = out.logits.float()
    assert float(z.square().mean()) == pytest.approx(initwise.policies.standard.TARGET_LOGITS, rel=0.5)
    assert abs(float(out.loss) - math.log(256)) < 0.1, float(out.loss)  # was +53 (Gemma) and +24 (Gemma 2)


def test_gemma2_attention_written_out_is_planned_as_attention():
    model = _gemma("gemma2")
    plan = initwise.plan(model, {"input_ids": _ids()})
    q, k, v = (plan[f"model.layers.0.self_attn.{n}_proj.weight"] for n in "qkv")
    # the scale 1/sqrt(query_pre_attn_scalar) = 1/16 is read through the softcap c tanh(x / c)
    assert "attention query" in q.reason and "scale 0.0625" in q.reason, q.reason
    assert "attention key" in k.reason and "scale 0.0625" in k.reason, k.reason
    assert "attention" not in v.reason and "E[y^2] = 1" in v.reason, v.reason  # a value, not a key


def test_residual_zero_on_a_one_plus_weight_branch_end_starts_each_block_as_the_identity():
    """Gemma 2 ends each branch in a (1 + weight) norm: weight -1 is a gain of 0."""
    model = _gemma("gemma2")
    plan = initwise.init(model, {"input_ids": _ids()}, seed=0, residual="zero")
    ends = [e for e in plan if "post_attention_layernorm" in e.name or "post_feedforward_layernorm" in e.name]
    assert ends and all(e.scheme == "constant" and e.params["value"] == -1.0 for e in ends), ends[:2]
    graph = record(model, {"input_ids": _ids()})
    assert sum(1 for n in graph.nodes if n.info.get("scale_offset") == 1.0) == 9  # 4 per block + final
    hidden = model(input_ids=_ids(), output_hidden_states=True).hidden_states
    assert torch.equal(hidden[0], hidden[1])  # the first block adds exactly 0


def test_eager_gpt_neo_values_are_not_planned_as_keys():
    plan = initwise.plan(_gpt_neo(), {"input_ids": _ids()})
    v = plan["transformer.h.0.attn.attention.v_proj.weight"]
    k = plan["transformer.h.0.attn.attention.k_proj.weight"]
    assert "attention key" in k.reason and "attention" not in v.reason, (k.reason, v.reason)


def test_mamba_keeps_what_its_scan_reads_through_exp_and_starts_finite():
    cfg = transformers.MambaConfig(vocab_size=256, hidden_size=64, state_size=16, num_hidden_layers=2,
                                   expand=2, conv_kernel=4)
    torch.manual_seed(0)
    model = transformers.MambaForCausalLM(cfg).eval()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("A_log")}
    plan = initwise.init(model, {"input_ids": _ids()}, seed=0)
    # A = -exp(A_log): a use that says nothing of the value it should start at, so it is kept
    assert all(plan[n].scheme == "keep" for n in before)
    assert all(torch.equal(model.get_parameter(n), t) for n, t in before.items())
    # the skip D x inside the scan is no residual branch the rule can scale from its prediction
    assert all(plan[f"backbone.layers.{i}.mixer.D"].params.get("value") == 1.0 for i in range(2))
    assert "out of range" in plan.note, plan.note
    ids = _ids(1)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert bool(torch.isfinite(out.logits).all())  # was NaN: D scaled x3.5e37
    assert abs(float(out.loss) - math.log(256)) < 0.1, float(out.loss)
    # A_log's rows are all log(1..N) by design: they are no units of the mixer's output
    assert "symmetry" not in initwise.diagnose(model, {"input_ids": _ids(2)}).kinds


def test_opt_reaches_its_logits_through_the_projection_before_its_tied_head():
    """OPT with word_embed_proj_dim != hidden_size: embed (32) -> project_in -> blocks (64) ->
    project_out -> the tied output layer (32). The projection's std sets the logits, the
    embedding keeps its scale, and diagnose finds nothing to flag."""
    cfg = transformers.OPTConfig(vocab_size=256, hidden_size=64, word_embed_proj_dim=32, num_hidden_layers=2,
                                 num_attention_heads=4, ffn_dim=128, max_position_embeddings=64, dropout=0.0,
                                 attention_dropout=0.0)
    torch.manual_seed(0)
    model = transformers.OPTForCausalLM(cfg)
    plan = initwise.init(model, {"input_ids": _ids()}, seed=0)
    assert plan["model.decoder.embed_tokens.weight"].std == 1.0
    assert "tied output layer after it" in plan["model.decoder.project_out.weight"].reason
    ids = _ids(1)
    with torch.no_grad():
        out = model(input_ids=ids, labels=ids)
    assert float(out.logits.square().mean()) == pytest.approx(initwise.policies.standard.TARGET_LOGITS, rel=0.5)
    assert abs(float(out.loss) - math.log(256)) < 0.1, float(out.loss)
    report = initwise.diagnose(model, {"input_ids": _ids(2)})
    assert report.kinds == {"healthy"}, [f.text for f in report.findings]


def test_skipinit_on_one_plus_weight_branch_ends_gives_them_a_gain_of_zero():
    model = _gemma("gemma2")
    plan = initwise.init(model, {"input_ids": _ids()}, seed=0, policy="skipinit")
    ends = [e for e in plan if "post_attention_layernorm" in e.name or "post_feedforward_layernorm" in e.name]
    assert ends and all(e.scheme == "constant" and e.params["value"] == -1.0 for e in ends), ends[:2]
    hidden = model(input_ids=_ids(), output_hidden_states=True).hidden_states
    assert torch.equal(hidden[0], hidden[1])


def test_meta_gemma_needs_its_scale_buffer_and_then_matches_the_normal_build_bit_for_bit():
    cfg = transformers.GemmaConfig(**SMALL)
    torch.manual_seed(0)
    normal = transformers.AutoModelForCausalLM.from_config(cfg)
    initwise.init(normal, {"input_ids": _ids()}, seed=0)
    with torch.device("meta"):
        meta = transformers.AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(ValueError, match="embed_scale"):  # its value is nowhere on meta: a clear error
        initwise.init(meta, {"input_ids": _ids()}, seed=0, device="cpu")
    assert all(p.is_meta for p in meta.parameters())      # and nothing written
    meta.model.embed_tokens.embed_scale = torch.tensor(math.sqrt(SMALL["hidden_size"]))  # buffers on a device
    initwise.init(meta, {"input_ids": _ids()}, seed=0, device="cpu")
    a, b = normal.state_dict(), meta.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("policy", ["t_fixup", "deepnorm"])
def test_recipes_on_eager_attention_scale_values_not_keys(policy):
    """The walk to the attention probabilities stops at the block: from block 1's keys it used to
    reach block 0's softmax, and the key projection was scaled as a value."""
    plan = initwise.plan(_gpt_neo(), {"input_ids": _ids()}, policy=policy)
    for block in (0, 1):
        q, k, v = (plan[f"transformer.h.{block}.attn.attention.{n}_proj.weight"] for n in "qkv")
        assert q.std == k.std > v.std, (block, q.std, k.std, v.std)
        assert "value/output projection" in v.reason and "value/output projection" not in k.reason
