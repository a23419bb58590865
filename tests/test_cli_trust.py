"""The CLI under interruption, a TARGET that exits, out-of-range numbers, outputs that would
replace an input, options that do not apply; --debug, --version, diagnose --input-dtype and
init --from-plan's seed."""
import os
import subprocess
import sys
import traceback

import pytest
import torch

from initwise.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MODELS = """
import os, signal, sys
import torch
from torch import nn

def make():
    return nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 3))

def interrupt():
    os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would, while the model is built
    return make()

def exits():
    sys.exit(3)

def broken_helper():
    raise RuntimeError("bad layer size")

def broken():
    return broken_helper()

class InterruptInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 3)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:  # after the input check: in the middle of the work
            os.kill(os.getpid(), signal.SIGINT)
        return self.fc(x)

class ExitInForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 3)

    def forward(self, x):
        if torch.is_grad_enabled():
            sys.exit("stop")
        return self.fc(x)

def tokens():
    return nn.Sequential(nn.Embedding(30, 6), nn.Flatten(), nn.Linear(6 * 5, 4), nn.ReLU(), nn.Linear(4, 2))
"""


@pytest.fixture
def models(tmp_path, monkeypatch):
    path = tmp_path / "models.py"
    path.write_text(MODELS)
    monkeypatch.chdir(tmp_path)
    return path


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:  # only --help and --version exit
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_ctrl_c_exits_130_with_one_line_and_no_output(models, tmp_path, capsys):
    code, out, err = run(["plan", f"{models}:interrupt", "--json", "plan.json"], capsys)
    assert code == 130 and out == "" and err.count("\n") == 1 and "interrupted" in err
    code, out, err = run(["diagnose", f"{models}:InterruptInForward", "--input-shape", "8,10",
                          "--json", "d.json", "--plot", "d.png"], capsys)
    assert code == 130 and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["models.py"]


def test_ctrl_c_in_a_real_process(models, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "initwise.cli", "init", f"{models}:interrupt", "--save",
                           "w.pt"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert not (tmp_path / "w.pt").exists()


def test_sys_exit_in_a_target_is_reported(models, capsys):
    code, out, err = run(["plan", f"{models}:exits"], capsys)
    assert code == 2 and "calling exits() called sys.exit(3)" in err and err.count("\n") == 1
    code, out, err = run(["diagnose", f"{models}:ExitInForward", "--input-shape", "4,10"], capsys)
    assert code == 1 and "the model's code called sys.exit('stop')" in err


def test_debug_shows_the_users_own_frames(models):
    with pytest.raises(ValueError) as info:
        main(["--debug", "plan", f"{models}:broken"])
    text = "".join(traceback.format_exception(info.value))
    assert "broken_helper" in text and str(models) in text and "bad layer size" in text


def test_version(capsys):
    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.startswith("initwise 0.1.0 (torch " + torch.__version__)


@pytest.mark.parametrize("argv,message", [
    (["demo", "--depth", "100000000"], "argument --depth: must be an integer from 1 to 1000"),
    (["demo", "--width", "8192", "--depth", "1000", "--profile"], "GiB in float32); the limit"),
    (["compare", "--depth", "100000000"], "argument --depth: must be an integer from 1 to 1000"),
    (["diagnose", "--mlp", "100000000"], "argument --mlp: must be an integer from 1 to 1000"),
    (["diagnose", "--mlp", "1000", "--width", "8192"], "GiB in float32"),
    (["diagnose", "--mlp", "3", "--batch", "1"], "argument --batch: must be an integer from 2 to 65536"),
    (["diagnose", "{models}:make", "--input-shape", "2,²"], "digits 0-9"),
    (["plan", "{models}:make", "--input-shape", "2,99999999999"], "above 2^31 - 1"),
    (["plan", "{models}:make", "--input-shape", "100000,100000"], "GiB in float32"),
    (["plan", "{models}:make", "--input-shape=-2,10"], "digits 0-9"),
    (["compare", "--lr", "nan"], "argument --lr: must be a finite number"),
    (["compare", "--momentum", "1"], "argument --momentum: must be in [0, 1)"),
    (["compare", "--seeds", "1e3"], "argument --seeds: must be an integer"),
    (["recommend", "relu", "--fan-in", "inf"], "argument --fan-in: must be a finite number"),
    (["recommend", "leaky_relu", "--param", "negative_slope=nan"], "must be a finite number"),
    (["init", "{models}:make", "--save", "w.pt", "--seed", "-1"], "argument --seed: must be an integer from 0"),
    (["diagnose", "--mlp", "2", "--threads", "0"], "argument --threads"),
    (["sweep", "--depths", "5,100000000"], "--depths must be comma-separated integers from 1 to 1000"),
])
def test_numbers_are_range_checked_up_front(models, capsys, argv, message):
    argv = [a.format(models=models) for a in argv]
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err and err.count("\n") == 1 and out == ""


@pytest.mark.parametrize("argv,message", [
    (["plan", "{models}:make", "--json", "{models}"], "is the TARGET's file"),
    (["init", "{models}:make", "--save", "{models}"], "is the TARGET's file"),
    (["diagnose", "{models}:make", "--input-shape", "4,10", "--json", "{models}"], "is the TARGET's file"),
    (["init", "{models}:make", "--save", "same.pt", "--json", "./same.pt"], "are the same file"),
    (["init", "{models}:make", "--save", "w.pt", "--from-plan", "p.json", "--json", "p.json"],
     "is the --from-plan input"),
])
def test_outputs_never_overwrite_an_input(models, capsys, argv, message):
    before = models.read_text()
    (models.parent / "p.json").write_text("{}")
    code, out, err = run([a.format(models=models) for a in argv], capsys)
    assert code == 2 and message in err and out == ""
    assert models.read_text() == before and (models.parent / "p.json").read_text() == "{}"


@pytest.mark.parametrize("argv,message", [
    (["diagnose", "--mlp", "3", "--input-shape", "4,256"], "--input-shape does not apply to --mlp"),
    (["diagnose", "--mlp", "3", "--input-dtype", "long"], "--input-dtype does not apply to --mlp"),
    (["diagnose", "{models}:make", "--input-shape", "4,10", "--width", "3"], "--width does not apply to a TARGET"),
    (["diagnose", "{models}:make", "--input-shape", "4,10", "--activation", "tanh"], "--activation does not apply"),
    (["diagnose", "{models}:make", "--input-shape", "4,10", "--input-dtype", "long"], "has no nn.Embedding"),
    (["demo", "--profile", "--out", "x"], "--out does not apply with --profile"),
    (["demo", "--no-profile", "--depth", "3"], "--depth does not apply with --no-profile"),
    (["demo", "--profile", "--no-profile"], "exclude each other"),
    (["compare", "--seq-mode", "row"], "--seq-mode does not apply to --arch mlp"),
    (["compare", "--optimizer", "adam", "--momentum", "0.5"], "--momentum does not apply to --optimizer adam"),
    (["compare", "--arch", "lstm", "--activation", "relu"], "--activation does not apply to --arch lstm"),
    (["claim", "--list", "--seeds", "2"], "--seeds does not apply to listing the claims"),
    (["claim", "zero_symmetry", "--list"], "TARGET"),
    (["plan", "{models}:make", "--input-dtype", "long"], "--input-dtype does not apply without --input-shape"),
])
def test_options_that_do_not_apply_are_errors(models, capsys, argv, message):
    code, out, err = run([a.format(models=models) for a in argv], capsys)
    if "TARGET" == message:
        assert code == 2 and "does not apply with --list" in err
        return
    assert code == 2 and message in err and err.count("\n") == 1


def test_diagnose_input_dtype_long(models, capsys):
    code, out, err = run(["diagnose", f"{models}:tokens", "--input-shape", "16,5", "--input-dtype", "long",
                          "--json", "tok.json"], capsys)
    assert code == 0, err
    assert (models.parent / "tok.json").exists()


def test_from_plan_uses_the_plans_seed(models, capsys):
    target = f"{models}:make"
    assert run(["init", target, "--seed", "3", "--save", "a.pt", "--json", "p.json", "--quiet"], capsys)[0] == 0
    code, out, _ = run(["init", target, "--from-plan", "p.json", "--save", "b.pt", "--quiet"], capsys)
    assert code == 0 and "(seed 3)" in out
    a, b = torch.load("a.pt"), torch.load("b.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, _, err = run(["init", target, "--from-plan", "p.json", "--seed", "4", "--save", "c.pt"], capsys)
    assert code == 2 and "records seed 3" in err and not os.path.exists("c.pt")
