"""initwise.init / initwise.plan (the whole-model contract) and load_target."""
from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn

from initwise.api import init, load_target, plan
from initwise.plan import Plan

try:
    from tests.zoo import ZOO, SeedMLP, UntraceableConv
except ImportError:
    from zoo import ZOO, SeedMLP, UntraceableConv


def test_signatures_follow_the_contract():
    sig = inspect.signature(init)
    assert list(sig.parameters) == ["model", "example_input", "rules", "policy", "distribution", "residual",
                                    "include_frozen", "seed", "device"]
    assert sig.parameters["residual"].default == "scaled" and sig.parameters["include_frozen"].default is False
    assert sig.parameters["device"].default is None
    assert sig.parameters["policy"].default == "standard"
    assert sig.parameters["distribution"].default == "normal"
    assert sig.parameters["seed"].default is None
    assert sig.parameters["rules"].kind is inspect.Parameter.KEYWORD_ONLY
    assert list(inspect.signature(plan).parameters) == ["model", "example_input", "rules", "policy", "distribution",
                                                        "residual", "include_frozen"]


def test_init_returns_the_plan_it_applied():
    model = SeedMLP()
    p = init(model, seed=5)
    assert isinstance(p, Plan) and p.seed == 5
    assert [e.scheme for e in p] == [e.scheme for e in plan(model)]
    # std of fc1 (He, fan_in 10) is what the plan says, on 500 weights: loose 15% tolerance
    assert model.fc1.weight.std().item() == pytest.approx(p["fc1.weight"].std, rel=0.15)


@pytest.mark.parametrize("policy", ["he_normal", "xavier_uniform", "lecun", "orthogonal", "zeros", "small",
                                    "torch", "standard"])
def test_every_policy_runs_on_every_zoo_model(policy):
    for name, zm in ZOO.items():
        model = zm.build()
        p = init(model, zm.example_input(), policy=policy, seed=0)
        assert len(p) >= 1, name
        with torch.no_grad():  # the initialized model still runs and gives finite outputs
            out = model(zm.example_input())
        out = out[0] if isinstance(out, tuple) else out
        if not (policy == "zeros" and name == "parametrized"):  # weight norm of a zero weight is 0/0
            assert torch.isfinite(out).all(), name


def test_he_policy_on_deep_relu_mlp_keeps_the_signal():
    layers = []
    for _ in range(30):
        layers += [nn.Linear(256, 256), nn.ReLU()]
    model = nn.Sequential(*layers)
    x = torch.randn(1024, 256, generator=torch.Generator().manual_seed(0))
    init(model, policy="he_normal", seed=0)
    with torch.no_grad():
        he = model(x).pow(2).mean().sqrt().item()
    init(model, policy="xavier_normal", seed=0)
    with torch.no_grad():
        xavier = model(x).pow(2).mean().sqrt().item()
    # He keeps E[y^2] ~ constant over 30 ReLU layers; Xavier halves it per layer (2^-15 in RMS)
    assert 0.3 < he < 3.0
    assert xavier < 1e-3


def test_same_seed_same_weights_different_seed_different():
    a, b, c = SeedMLP(), SeedMLP(), SeedMLP()
    init(a, seed=11)
    init(b, seed=11)
    init(c, seed=12)
    assert torch.equal(a.fc2.weight, b.fc2.weight)
    assert not torch.equal(a.fc2.weight, c.fc2.weight)


def test_plan_does_not_write():
    model = SeedMLP()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plan(model, policy="zeros")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_dtype_and_requires_grad_preserved():
    model = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 2)).double()
    init(model, seed=0)
    assert model[0].weight.dtype == torch.float64 and model[0].weight.requires_grad
    assert model[0].weight.grad is None


def test_meta_model_without_device_is_an_error_and_with_device_is_filled():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="meta device.*device='cpu'"):
        init(model, seed=0)
    assert model[0].weight.is_meta
    p = init(model, seed=0, device="cpu")
    assert not model[0].weight.is_meta and p["0.weight"].family == "he"
    built = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    init(built, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), built.parameters()))


def test_plan_leaves_the_global_rng_alone_on_every_discovery_path():
    # fx traces seed_mlp; dynamic_control needs a forward pass with a guessed input (drawn from a
    # local generator); UntraceableConv falls back to declaration order after the guess fails
    models = [ZOO["seed_mlp"].build(), ZOO["dynamic_control"].build(), UntraceableConv()]
    torch.manual_seed(0)
    expected = torch.rand(5)
    for model in models:
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plan(model)
        assert torch.equal(torch.rand(5), expected), type(model).__name__


# ----------------------------------------------------------------------------- load_target
def write(tmp_path, body, name="models.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_load_target_from_file_and_module(tmp_path, monkeypatch):
    path = write(tmp_path, """
        import torch.nn as nn
        def factory():
            return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
        instance = nn.Linear(2, 2)
    """)
    model = load_target(f"{path}:factory")
    assert isinstance(model, nn.Sequential) and model[0].in_features == 3
    assert isinstance(load_target(f"{path}:instance"), nn.Linear)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert isinstance(load_target("models:factory"), nn.Sequential)
    assert isinstance(load_target("torch.nn:Identity"), nn.Identity)


@pytest.mark.parametrize("body, spec, message", [
    (None, "no_colon", "must look like"),
    (None, "{dir}/missing.py:f", "does not exist"),
    (None, "no_such_pkg_xyz.mod:f", "cannot import 'no_such_pkg_xyz.mod'"),
    ("def f(:\n", "{file}:f", "syntax error"),
    ("raise RuntimeError('at import')\n", "{file}:f", "error while importing.*RuntimeError: at import"),
    ("x = 1\n", "{file}:f", "has no attribute 'f'"),
    ("x = 1\n", "{file}:x", "not a factory"),
    ("def f():\n    raise KeyError('k')\n", "{file}:f", r"calling f\(\) failed: KeyError"),
    ("def f(n):\n    return n\n", "{file}:f", "must take no arguments"),
    ("def f():\n    return 3\n", "{file}:f", "returned a int, not an nn.Module"),
])
def test_load_target_errors_are_one_line_value_errors(tmp_path, body, spec, message):
    file = write(tmp_path, body) if body is not None else tmp_path / "models.py"
    spec = spec.format(dir=tmp_path, file=file)
    with pytest.raises(ValueError, match=message) as info:
        load_target(spec)
    assert "\n" not in str(info.value)


UNTRACEABLE = """
    import torch
    import torch.nn as nn

    class DD(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 30 * 30, 2)

        def forward(self, x):
            h = torch.relu(self.conv(x))
            if h.sum() > 0:
                h = h + 0
            return self.fc(h.flatten(1))

    def dd():
        return DD()
"""


def test_cli_plan_wrong_input_shape_fails_and_guess_failure_warns_on_stderr(tmp_path, capsys):
    from initwise.cli import main

    path = write(tmp_path, UNTRACEABLE)
    assert main(["plan", f"{path}:dd", "--input-shape", "2,3,31,31", "--plain"]) == 2
    err = capsys.readouterr().err
    assert "forward pass of DD fail" in err and "(2, 3, 31, 31)" in err
    assert "--input-shape" in err and err.count("\n") == 1 and "Traceback" not in err
    assert main(["plan", f"{path}:dd", "--input-shape", "2,3,32,32", "--plain"]) == 0
    assert "kaiming_normal" in capsys.readouterr().out
    # the fallback warning reaches stderr in a real run (default warning filters, no pytest capture)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    run = subprocess.run([sys.executable, "-m", "initwise.cli", "plan", f"{path}:dd", "--plain"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "UserWarning" in run.stderr and "could not follow the data flow of DD" in run.stderr
    assert "FALLBACK" in run.stdout and "guessed from declaration order" in run.stdout


def test_apply_scheme_rejects_a_non_string_scheme_with_type_error():
    from initwise.api import apply_scheme

    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    with pytest.raises(TypeError, match="scheme must be a name"):
        apply_scheme(model, 3)
    assert torch.equal(model.weight, before)
