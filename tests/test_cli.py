"""The CLI's shared behaviour: help on every command, one-line errors, outputs checked first."""
import pytest

from initwise.cli import _ADDERS, build_parser, main

MODEL = """
import torch
from torch import nn
def make():
    return nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))

class Fragile(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 2)

    def forward(self, x):
        if torch.is_grad_enabled():  # fails in diagnose's pass, not in the input-shape check
            raise RuntimeError("boom in forward")
        return self.fc(x)
"""


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(MODEL)
    return f"{path}:make"


def test_every_command_and_option_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert len(sub.choices) == len(_ADDERS)
    for name, command in sub.choices.items():
        assert command.description or command.format_usage(), name
        for action in command._actions:
            if action.dest != "help":
                assert action.help, f"initwise {name} {action.option_strings or action.dest} has no help"


def test_model_errors_are_one_line_without_debug(target, capsys):
    fragile = target.replace(":make", ":Fragile")
    assert main(["diagnose", fragile, "--input-shape", "64,10"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "RuntimeError: boom in forward" in err
    assert "--debug" in err
    with pytest.raises(RuntimeError):
        main(["--debug", "diagnose", fragile, "--input-shape", "64,10"])
    with pytest.raises(RuntimeError):  # --debug after the subcommand works too
        main(["diagnose", fragile, "--input-shape", "64,10", "--debug"])


def test_debug_before_or_after_the_command():
    parser = build_parser()
    assert parser.parse_args(["--debug", "recommend", "relu"]).debug is True
    assert parser.parse_args(["recommend", "relu", "--debug"]).debug is True
    assert parser.parse_args(["recommend", "relu"]).debug is False


@pytest.mark.parametrize("argv,message", [
    # the input shape: one parser, and one forward pass whenever it is given (fx traces these)
    (["plan", "{target}", "--input-shape", "2,x"], "comma-separated positive integers"),
    (["plan", "{target}", "--input-shape", "0,3"], "every size must be at least 1"),
    (["plan", "{target}", "--input-shape", ""], "comma-separated positive integers"),
    (["init", "{target}", "--save", "{tmp}/w.pt", "--input-shape", "2x10"],
     "comma-separated positive integers"),
    (["plan", "{target}", "--input-shape", "2,11"],
     "--input-shape 2,11: the forward pass of Sequential fails"),
    (["init", "{target}", "--save", "{tmp}/w.pt", "--input-shape", "2,11"],
     "--input-shape 2,11: the forward pass"),
    (["diagnose", "{target}", "--input-shape", "64,11"], "--input-shape 64,11: the forward pass"),
    (["diagnose", "{target}", "--input-shape", "64,x"], "comma-separated positive integers"),
    (["diagnose", "{target}", "--input-shape", "1,10"], "batch of at least 2"),
    # compare / sweep / claim: everything checked before data or a progress bar
    (["compare", "--arch", "cnn", "--dataset", "wine"], "needs image or 1-D signal data"),
    (["compare", "--depth", "0"], "argument --depth: must be an integer from 1 to 1000, got 0"),
    (["compare", "--arch", "cnn", "--depth", "1"], "needs depth >= 2"),
    (["compare", "--activation", "nosuch"], "unknown activation 'nosuch'"),
    (["compare", "--seeds", "0"], "argument --seeds: must be an integer from 1 to 100, got 0"),
    (["compare", "--steps", "0"], "argument --steps: must be an integer from 1 to 1000000, got 0"),
    (["compare", "--schemes", "he,constant"], "unknown scheme 'constant'"),
    (["compare", "--schemes", "orthogonal_hh"], "needs a recurrent arch"),
    (["sweep", "--depths", "0,2"], "--depths must be comma-separated integers from 1 to 1000"),
    (["sweep", "--arch", "cnn", "--dataset", "breast_cancer"], "needs image or 1-D signal"),
    (["claim", "he_relu_30", "--seeds", "0"], "argument --seeds: must be an integer from 1 to 100"),
    # diagnose: schemes and plot format checked before the work
    (["diagnose", "--mlp", "3", "--scheme", "he,constant"], "unknown --scheme 'constant'"),
    (["diagnose", "--mlp", "3", "--plot", "{tmp}/out.txt"], "format matplotlib writes"),
])
def test_validation_errors_come_before_any_work(target, tmp_path, capsys, monkeypatch, argv,
                                                message):
    import sys

    def no_work(*args, **kwargs):
        raise AssertionError("work started before validation")

    for module, name in (("initwise.experiments.compare", "load_dataset"),
                         ("initwise.experiments.claims", "compare"),
                         ("initwise.diagnose", "compare_schemes")):
        __import__(module)
        monkeypatch.setattr(sys.modules[module], name, no_work)
    argv = [a.format(target=target, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.err.count("\n") == 1
    assert captured.out == ""
    assert not (tmp_path / "w.pt").exists()


@pytest.mark.parametrize("argv,message", [
    (["init", "{target}", "--save", "{tmp}/missing/w.pt"], "does not exist or is not writable"),
    (["init", "{target}", "--save", "{tmp}"], "is a folder"),
    (["plan", "{target}", "--json", "{tmp}"], "is a folder"),
    (["compare", "--steps", "1", "--out", "{tmp}/models.py"], "is not a folder"),
])
def test_outputs_are_checked_before_any_work(target, tmp_path, capsys, argv, message):
    argv = [a.format(target=target, tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr()
    assert message in err.err and "\n" not in err.err.strip()
    assert err.out == ""  # nothing was run


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "recommend" in capsys.readouterr().out
