"""The write path: meta one-pass equals the normal path, shards and threads give the same
bits, everything is checked before the first write, an edited std is honoured, memory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

import initwise
from initwise import streams, write
from initwise.plan import Plan, PlanEntry

try:
    from tests.zoo import ZOO
except ImportError:
    from zoo import ZOO

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def state(model):
    return {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}


def same_state(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def tiny_llama(tie=True):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                      tie_word_embeddings=tie)
    return lambda: LlamaForCausalLM(cfg)


# ----------------------------------------------------------------------------- meta one pass
@pytest.mark.parametrize("name", ["cnn_bn_relu", "lstm_classifier", "transformer_block", "tied_lm", "decoder"])
def test_meta_one_pass_gives_the_bits_of_the_normal_path(name):
    zm = ZOO[name]
    built = zm.build()
    plan = initwise.init(built, zm.example_input(), seed=3)
    with torch.device("meta"):
        model = zm.factory()
    initwise.init(model, zm.example_input(), seed=3, device="cpu")  # planned on the meta model itself
    assert same_state(state(model), state(built))
    assert not any(t.is_meta for t in model.state_dict().values())
    with torch.device("meta"):
        again = zm.factory()
    plan.apply(again, seed=3, device="cpu")  # the plan of the model built normally
    assert same_state(state(again), state(built))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def _norms_one(plan):
    """The plan with the (custom) RMSNorm weights it keeps set to 1, as their module does."""
    for e in plan:
        if e.scheme == "keep" and e.name.endswith("norm.weight"):
            e.scheme, e.params = "constant", {"value": 1.0}
    return plan


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_transformers_llama_rebuilds_rotary_buffers_and_keeps_ties(dtype):
    make = tiny_llama()
    built = make().to(dtype)
    initwise.init(built, seed=0)  # its RMSNorm weights are planned (a norm's scale: 1)
    with torch.device("meta"):
        model = make().to(dtype)
    initwise.init(model, seed=0, device="cpu")  # planned on the meta model itself
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == dtype
    assert same_state(state(model), state(built))
    for key in ("inv_freq", "original_inv_freq"):  # non-persistent buffers: not in state_dict
        assert torch.equal(getattr(model.model.rotary_emb, key), getattr(built.model.rotary_emb, key))
    ids = torch.arange(12).view(2, 6)
    with torch.no_grad():
        assert torch.equal(model(ids).logits, built(ids).logits)


def test_parameters_only_on_meta_keep_their_real_buffers():
    """What accelerate's init_empty_weights (include_buffers=False) gives: buffers are real."""
    zm = ZOO["cnn_bn_relu"]
    built = zm.build()
    initwise.init(built, seed=1)
    model = zm.build(seed=9)
    for module in model.modules():
        for k, p in list(module._parameters.items()):
            if p is not None:
                module._parameters[k] = nn.Parameter(p.to("meta"), requires_grad=p.requires_grad)
    initwise.init(model, seed=1, device="cpu")
    assert same_state(state(model), state(built))


def test_meta_model_needs_a_device_and_unfillable_tensors_are_errors_before_anything_changes():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="meta device.*device="):
        initwise.init(model, seed=0)
    class Unused(nn.Module):  # a parameter the forward never uses: kept, but meta has no values
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.spare = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return self.fc(x)

    with torch.device("meta"):
        unknown = Unused()
    with pytest.raises(ValueError, match="'spare' is on the meta device but the plan keeps it"):
        initwise.init(unknown, seed=0, device="cpu")
    assert all(p.is_meta for p in unknown.parameters())
    initwise.init(unknown, rules={"spare": "zeros"}, seed=0, device="cpu")  # the fix the error gives
    assert not any(p.is_meta for p in unknown.parameters())

    class Counter(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.register_buffer("steps", torch.zeros(()))

        def forward(self, x):
            return self.fc(x)

    with torch.device("meta"):
        counter = Counter()
    with pytest.raises(ValueError, match="buffer 'steps' of Counter is on the meta device"):
        initwise.init(counter, seed=0, device="cpu")
    assert counter.fc.weight.is_meta and counter.steps.is_meta
    with pytest.raises(ValueError, match="device='meta'"):
        initwise.init(counter, seed=0, device="meta")
    with pytest.raises(ValueError, match="device="):
        initwise.init(counter, seed=0, device="no-such-device")


def test_mixed_meta_and_real_parameters_without_device_are_an_error():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    model[2].weight = nn.Parameter(model[2].weight.detach().to("meta"))
    before = model[0].weight.detach().clone()
    with pytest.raises(ValueError, match="meta device"):
        initwise.init(model, seed=0)
    assert torch.equal(model[0].weight, before)
    initwise.init(model, seed=0, device="cpu")
    assert model[2].weight.device.type == "cpu"


# ----------------------------------------------------------------------------- all or nothing
def _inference_last_layer():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    with torch.inference_mode():
        model[2] = nn.Linear(6, 2)
    return model, "'2.weight' is an inference tensor"


def _expanded():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 2))
    model[2].weight = nn.Parameter(torch.zeros(2, 1).expand(2, 6))
    return model, "'2.weight' is an expanded view"


def _overlapping_views():
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6))
    model[2].bias = nn.Parameter(model[0].weight.detach()[2])  # a row of another parameter
    return model, "'0.weight' and '2.bias' share memory"


@pytest.mark.parametrize("make", [_inference_last_layer, _expanded, _overlapping_views])
def test_bad_tensors_are_refused_before_the_first_write(make):
    model, message = make()
    before = state(model)
    with pytest.raises(ValueError, match=message):
        initwise.init(model, seed=0)
    assert same_state(state(model), before)


def test_exactly_tied_distinct_parameters_are_written_once():
    model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh())
    model[2].weight = nn.Parameter(model[0].weight.detach())  # same memory, another Parameter
    p = initwise.init(model, seed=0, distribution="uniform")
    assert torch.equal(model[0].weight, model[2].weight)
    std = p["0.weight"].std
    assert torch.equal(model[0].weight.view(-1), streams.draw(0, "0.weight", 64, distribution="uniform", std=std))
    other = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh())
    other[2].weight = nn.Parameter(other[0].weight.detach())  # He before the ReLU, Xavier before tanh
    p = initwise.init(other, seed=0)  # one tensor: planned once, the most conservative choice
    assert p["0.weight"].shared_with == ("2.weight",) and "tied" in p["0.weight"].reason
    assert torch.equal(other[0].weight, other[2].weight)


def test_failure_in_any_entry_changes_nothing():
    model = ZOO["sequential_mlp"].build()
    data = initwise.plan(model).to_dict()
    before = state(model)
    for field, value, message in [("scheme", "orthogonal", "blocks|orthogonal"), ("std", float("nan"), "std"),
                                  ("distribution", "uniform", "distribution"), ("shape", [1, 2], "shape")]:
        broken = json.loads(json.dumps(data))
        broken["entries"][-2][field] = value
        if field == "scheme":
            broken["entries"][-2]["params"] = {"blocks": 3}
        with pytest.raises(ValueError, match=message):
            Plan.from_dict(broken).apply(model, seed=0)
        assert same_state(state(model), before), field


# ----------------------------------------------------------------------------- values
def test_an_edited_std_is_honoured():
    model = nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 100))
    plan = initwise.plan(model)
    for dist in ("normal", "uniform", "truncated_normal"):
        edited = Plan.from_dict(plan.to_dict())
        e = edited["0.weight"]
        e.std, e.distribution, e.scheme = 0.5, dist, f"kaiming_{dist}"
        edited.apply(model, seed=0)
        w = model[0].weight.detach().double()  # 20,000 samples: std within 2%
        assert w.std().item() == pytest.approx(0.5, rel=0.02), dist


def test_every_dtype_gets_the_float32_values_rounded():
    make = ZOO["lstm_classifier"].factory
    base = make()
    initwise.init(base, seed=4)
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        model = make().to(dtype)
        initwise.init(model, seed=4)
        for (n, p), q in zip(model.named_parameters(), base.parameters()):
            assert p.dtype == dtype, n
            if dtype == torch.float64:  # orthogonal weights are float64 matrices, exact in float64
                assert torch.equal(p.float(), q), n
            else:
                assert torch.equal(p, q.detach().to(dtype)), (n, dtype)


@pytest.mark.parametrize("policy", ["standard", "orthogonal", "delta_orthogonal", "xavier_truncated_normal"])
def test_same_bits_on_one_and_two_threads(policy):
    n = torch.get_num_threads()
    models = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            model = nn.Sequential(nn.Conv2d(3, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 36, 300),
                                  nn.Tanh(), nn.Linear(300, 10))
            initwise.init(model, policy=policy, seed=2)
            models[threads] = state(model)
    finally:
        torch.set_num_threads(n)
    assert same_state(models[1], models[2])


@pytest.mark.parametrize("scheme, extra", [
    ("kaiming_normal", {}), ("xavier_uniform", {}), ("lecun_truncated_normal", {}),
    ("orthogonal", {"blocks": 2}), ("normal", {"padding_idx": [1, 7]})])
def test_any_box_of_a_tensor_equals_that_part_of_the_whole(scheme, extra):
    shape = (12, 5, 7)
    dist = {"normal": "normal"}.get(scheme, scheme.split("_", 1)[1] if "_" in scheme else "-")
    entry = PlanEntry(name="t.weight", shape=shape, layer="X", activation="-", scheme=scheme,
                      distribution="-" if scheme == "orthogonal" else dist, fan_in=35, fan_out=84,
                      gain=1.0, std=0.1, reason="", params=extra)
    full = write.draw(entry, 5)
    for box in [(slice(3, 9), slice(0, 5), slice(0, 7)), (slice(0, 12), slice(1, 4), slice(0, 7)),
                (slice(0, 12), slice(0, 5), slice(2, 3)), (slice(7, 8), slice(4, 5), slice(6, 7))]:
        local = torch.empty([b.stop - b.start for b in box], dtype=torch.bfloat16)
        write._write(entry, local, box, 5)
        assert torch.equal(local, full[box].bfloat16()), box


# ----------------------------------------------------------------------------- memory
_MEMORY = textwrap.dedent("""
    import json, sys, torch, initwise
    from torch import nn
    torch.set_num_threads(1)
    dtype = getattr(torch, sys.argv[1])
    def peak_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1])
    def rss_kib():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    def make():
        return nn.Sequential(*[nn.Linear(1024, 1024, dtype=dtype) for _ in range(24)])
    plan = initwise.plan(make())
    if sys.argv[2] == "normal":
        model = make()
    else:
        with torch.device("meta"):
            model = make()
    before = rss_kib()
    open("/proc/self/clear_refs", "w").write("5")  # reset the high-water mark to the current RSS
    plan.apply(model, seed=0, device="cpu" if sys.argv[2] == "meta" else None)
    out = (peak_kib() - before) * 1024
    print(json.dumps(out))
""")


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_peak_memory_is_one_tensor_beyond_the_parameters(dtype):
    """24 Linear(1024, 1024): the normal path writes in place (extra <= 0.1x the parameters +
    the largest tensor); the meta path allocates the parameters once (<= 1.1x + largest). The
    old path staged every tensor in float32 first (2x, 3.1x for bfloat16)."""
    extra = {}
    # each path in a fresh process (freed memory is not reused); a fixed mmap threshold stops
    # glibc's heap from keeping freed 1-2 MiB blocks resident (+0.4x at random), which would
    # measure the allocator's policy rather than what initwise allocates
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    for path in ("normal", "meta"):
        out = subprocess.run([sys.executable, "-c", _MEMORY, dtype, path], capture_output=True, text=True,
                             cwd=ROOT, timeout=120, env=env)
        assert out.returncode == 0, out.stderr
        extra[path] = json.loads(out.stdout)
    size = 2 if dtype == "bfloat16" else 4
    params = 24 * (1024 * 1024 + 1024) * size
    largest = 1024 * 1024 * size
    assert extra["normal"] <= 0.1 * params + largest, extra
    assert extra["meta"] <= 1.1 * params + largest, extra
    assert extra["meta"] >= 0.9 * params, extra  # the measurement sees the allocation


# ----------------------------------------------------------------------------- GPU
@needs_cuda
def test_cuda_model_and_meta_to_cuda_equal_the_cpu_bits():
    zm = ZOO["cnn_bn_relu"]
    cpu = zm.build()
    initwise.init(cpu, seed=3)
    gpu = zm.build().cuda()
    initwise.init(gpu, seed=3)
    with torch.device("meta"):
        meta = zm.factory()
    initwise.init(meta, seed=3, device="cuda")
    for model in (gpu, meta):
        assert all(t.is_cuda for t in model.state_dict().values())
        assert same_state({k: v.cpu() for k, v in state(model).items()}, state(cpu))


@needs_cuda
def test_parameters_on_two_devices_are_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    model[2].cuda()
    before = state(model)
    with pytest.raises(ValueError, match="parameter '0.weight' is on cpu"):
        initwise.init(model[:1], seed=0, device="cuda")
    with pytest.raises(ValueError, match="2 devices"):
        initwise.init(model, seed=0)
    assert same_state({k: v.cpu() for k, v in state(model).items()}, {k: v.cpu() for k, v in before.items()})
