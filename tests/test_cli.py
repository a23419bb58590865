"""The CLI's shared behaviour: help on every command, one-line errors, outputs checked first."""
import pytest

from initwise.cli import _ADDERS, build_parser, main

MODEL = """
from torch import nn
def make():
    return nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, 2))
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
    assert main(["diagnose", target, "--input-shape", "64,11"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "RuntimeError: mat1 and mat2 shapes cannot be multiplied" in err
    assert "--debug" in err
    with pytest.raises(RuntimeError):
        main(["--debug", "diagnose", target, "--input-shape", "64,11"])


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
