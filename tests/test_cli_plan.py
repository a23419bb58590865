"""CLI: initwise recommend / plan / init."""
from __future__ import annotations

import json
import math
import textwrap

import pytest
import torch

from initwise.api import init, load_target
from initwise.cli import main

MODELS = textwrap.dedent("""
    import torch
    import torch.nn as nn

    class Seed(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(10, 50)
            self.fc2 = nn.Linear(50, 30)
            self.fc3 = nn.Linear(30, 1)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            if h.sum() > 0:          # fx cannot trace this
                h = h + 0
            return torch.sigmoid(self.fc3(torch.tanh(self.fc2(h))))

    def make():
        return Seed()

    def lstm():
        return nn.LSTM(4, 8)

    def broken():
        raise RuntimeError("boom")
""")


@pytest.fixture()
def target(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    return str(path)


def test_recommend(capsys):
    assert main(["recommend", "tanh", "--fan-in", "100", "--fan-out", "300"]) == 0
    out = capsys.readouterr().out
    assert "xavier_normal" in out and "1.59" in out and "1.66667" in out
    assert f"{math.sqrt(2 / 400):.6g}" in out
    assert main(["recommend", "leaky_relu", "--param", "negative_slope=0.2", "--fan-in", "50"]) == 0
    out = capsys.readouterr().out
    assert "kaiming_normal" in out and f"{math.sqrt(2 / 1.04 / 50):.6g}" in out
    assert main(["recommend", "gelu"]) == 0
    assert "n/a" in capsys.readouterr().out  # torch has no gain for gelu


def test_plan_prints_table_and_writes_json(target, tmp_path, capsys):
    out_json = tmp_path / "plan.json"
    assert main(["plan", f"{target}:make", "--input-shape", "1,10", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "fc1.weight" in out and "kaiming_orthogonal" in out and "forward" in out
    data = json.loads(out_json.read_text())
    schemes = {e["name"]: e["scheme"] for e in data["entries"]}
    assert schemes["fc1.weight"] == "kaiming_orthogonal" and schemes["fc3.weight"] == "xavier_normal"
    assert "example input" in data["note"]


def test_plan_policy_and_rules(target, capsys):
    assert main(["plan", f"{target}:make", "--policy", "orthogonal", "--rule", "fc3.*=zeros", "--plain"]) == 0
    out = capsys.readouterr().out
    assert "orthogonal" in out and "rule 'fc3.*' -> zeros" in out
    assert main(["plan", f"{target}:lstm", "--rule", "type:LSTM=keep"]) == 0
    assert "keep" in capsys.readouterr().out


def test_init_saves_the_same_weights_as_the_library(target, tmp_path, capsys):
    weights = tmp_path / "w.pt"
    assert main(["init", f"{target}:make", "--save", str(weights), "--seed", "4", "--quiet"]) == 0
    assert "state_dict written" in capsys.readouterr().out
    saved = torch.load(weights)
    model = load_target(f"{target}:make")
    init(model, seed=4)
    for k, v in model.state_dict().items():
        assert torch.equal(saved[k], v), k


def test_init_from_saved_plan(target, tmp_path):
    plan_json, w1, w2 = tmp_path / "p.json", tmp_path / "a.pt", tmp_path / "b.pt"
    assert main(["init", f"{target}:make", "--save", str(w1), "--json", str(plan_json), "--quiet",
                 "--policy", "lecun"]) == 0
    assert main(["init", f"{target}:make", "--save", str(w2), "--from-plan", str(plan_json), "--quiet"]) == 0
    a, b = torch.load(w1), torch.load(w2)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("argv, message", [
    (["plan", "{t}:broken"], "calling broken() failed: RuntimeError: boom"),
    (["plan", "{t}:nothing"], "has no attribute 'nothing'"),
    (["plan", "missing_file.py:make"], "does not exist"),
    (["plan", "{t}:make", "--policy", "bogus"], "unknown policy 'bogus'"),
    (["plan", "{t}:make", "--input-shape", "a,b"], "--input-shape must be comma-separated positive integers"),
    (["plan", "{t}:make", "--input-shape", "1,11"], "--input-shape 1,11: the forward pass of Seed fails"),
    (["plan", "{t}:make", "--rule", "nonsense"], "--rule must look like"),
    (["plan", "{t}:make", "--rule", "type:Nope=he"], "not a torch.nn layer type"),
    (["recommend", "swoosh"], "unknown activation 'swoosh'"),
    (["recommend", "relu", "--param", "oops"], "--param must look like"),
    (["recommend", "leaky_relu", "--param", "negative_slope=abc"], "negative_slope must be a number, got 'abc'"),
    (["recommend", "leaky_relu", "--param", "slope=0.2"], "has no parameter 'slope' (its parameters: negative_slope)"),
    (["recommend", "gelu", "--param", "approximate=foo"], "approximate argument must be either none or tanh"),
    (["init", "{t}:make", "--save", "{t}.pt", "--from-plan", "/nonexistent/p.json"], "--from-plan '/nonexistent/p.json': no such file"),
    (["init", "{t}:make", "--save", "{t}.pt", "--from-plan", "{t}"], "--from-plan '{t}' is not a plan"),
    (["init", "{t}:make", "--save", "{t}.pt", "--from-plan", "{t}", "--policy", "he"], "--from-plan fixes the plan; drop --policy"),
    (["init", "{t}:make", "--save", "{t}.pt", "--from-plan", "{t}", "--rule", "fc1.*=zeros",
      "--distribution", "uniform"], "--from-plan fixes the plan; drop --rule, --distribution"),
])
def test_errors_are_one_line(target, capsys, argv, message):
    argv = [a.replace("{t}", target) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.replace("{t}", target) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_debug_shows_the_traceback(target):
    with pytest.raises(ValueError, match="boom"):
        main(["--debug", "plan", f"{target}:broken"])


def test_help_texts():
    from initwise.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in ("recommend", "plan", "init"):
        p = sub.choices[name]
        for action in p._actions:
            assert action.help, (name, action.dest)
