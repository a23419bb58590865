"""Every file initwise writes is written atomically: under a file-size limit (a full disk, as far
as the writer can tell) the previous file survives intact, and no partial file or folder is
left behind."""
import json
import os
import resource
import signal
import subprocess
import sys

import pytest
import torch

import initwise
from initwise.atomic import staged_folder, torch_save, write_bytes, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIMIT = 4096  # bytes: RLIMIT_FSIZE of the child process; every new file below is larger

MODEL = """
from torch import nn
def make():
    return nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.ReLU()) for _ in range(12)], nn.Linear(64, 3))
"""

CHILD = r"""
import json, os, sys
import torch
import initwise
from initwise.cli import main

work, target = sys.argv[1], sys.argv[2]
out = {}

def attempt(key, fn):
    try:
        fn()
        out[key] = "no error"
    except OSError as exc:
        out[key] = f"OSError {exc.errno}"

model = initwise.load_target(target)
plan = initwise.plan(model)
attempt("to_json", lambda: plan.to_json(os.path.join(work, "plan.json")))
attempt("torch_save", lambda: initwise.atomic.torch_save(model.state_dict(), os.path.join(work, "weights.pt")))

def folder(name):
    with initwise.atomic.staged_folder(os.path.join(work, name)) as tmp:
        initwise.atomic.write_text(os.path.join(tmp, "small.txt"), "small")
        initwise.atomic.write_text(os.path.join(tmp, "big.txt"), "x" * 100000)

attempt("new_folder", lambda: folder("new_report"))
attempt("old_folder", lambda: folder("old_report"))
out["cli_init"] = main(["init", target, "--save", os.path.join(work, "cli.pt"), "--quiet"])
out["cli_plan"] = main(["plan", target, "--plain", "--json", os.path.join(work, "cli.json")])
out["cli_diagnose"] = main(["diagnose", target, "--input-shape", "64,64",
                            "--json", os.path.join(work, "diag.json")])
print("RESULT " + json.dumps(out))
"""


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


@pytest.fixture(scope="module")
def limited_run(tmp_path_factory):
    """Good files first (no limit), then a child process under a 4 KiB file-size limit tries to
    replace every one of them."""
    work = tmp_path_factory.mktemp("atomic")
    (work / "models.py").write_text(MODEL)
    target = f"{work / 'models.py'}:make"
    model = initwise.load_target(target)
    good = {}
    plan = initwise.init(model, seed=1)
    plan.to_json(work / "plan.json")
    plan.to_json(work / "cli.json")
    torch.save(model.state_dict(), work / "weights.pt")
    torch.save(model.state_dict(), work / "cli.pt")
    (work / "diag.json").write_text('{"old": true}\n')
    (work / "old_report").mkdir()
    (work / "old_report" / "small.txt").write_text("old small")
    (work / "old_report" / "big.txt").write_text("old big")
    for name in ("plan.json", "cli.json", "weights.pt", "cli.pt", "diag.json"):
        good[name] = (work / name).read_bytes()
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(work), target], capture_output=True,
                          text=True, env=env, preexec_fn=_limit_file_size, timeout=120, cwd=str(work))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    return work, good, json.loads(lines[-1][len("RESULT "):]), proc.stderr


def test_limit_makes_the_writes_fail(limited_run):
    _, _, result, stderr = limited_run
    assert result["to_json"].startswith("OSError") and result["torch_save"].startswith("OSError")
    assert result["new_folder"].startswith("OSError") and result["old_folder"].startswith("OSError")
    assert result["cli_init"] == 2 and result["cli_plan"] == 2 and result["cli_diagnose"] == 2
    assert "File too large" in stderr


def test_previous_files_survive_intact_and_load(limited_run):
    work, good, _, _ = limited_run
    for name, data in good.items():
        assert (work / name).read_bytes() == data, name
    assert initwise.Plan.from_json(work / "plan.json").seed == 1
    state = torch.load(work / "weights.pt")
    assert set(state) == set(torch.load(work / "cli.pt"))


def test_no_partial_file_or_folder_is_left(limited_run):
    work, _, _, _ = limited_run
    assert not (work / "new_report").exists()
    assert (work / "old_report" / "small.txt").read_text() == "old small"
    assert (work / "old_report" / "big.txt").read_text() == "old big"
    leftovers = [p.name for p in work.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_an_error_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    write_text(path, "old")
    with pytest.raises(RuntimeError):
        with initwise.atomic.atomic_open(path) as fh:
            fh.write("new, half")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]
    write_bytes(path, b"new")
    assert path.read_bytes() == b"new"


def test_permissions_and_symlinks_as_open_does(tmp_path):
    path = tmp_path / "real.json"
    write_text(path, "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask
    link = tmp_path / "link.json"
    link.symlink_to(path)
    write_text(link, "[1]")
    assert link.is_symlink() and path.read_text() == "[1]"


def test_staged_folder_appears_complete_or_not_at_all(tmp_path):
    out = tmp_path / "deep" / "report"
    with pytest.raises(KeyboardInterrupt):
        with staged_folder(out) as tmp:
            write_text(os.path.join(tmp, "a.txt"), "a")
            raise KeyboardInterrupt
    assert not (tmp_path / "deep").exists() and os.listdir(tmp_path) == []
    with staged_folder(out) as tmp:
        write_text(os.path.join(tmp, "a.txt"), "a")
        os.mkdir(os.path.join(tmp, "sub"))
        torch_save({"w": torch.ones(2)}, os.path.join(tmp, "sub", "w.pt"))
    assert (out / "a.txt").read_text() == "a" and torch.load(out / "sub" / "w.pt")["w"].sum() == 2
    (out / "keep.txt").write_text("mine")
    with staged_folder(out) as tmp:
        write_text(os.path.join(tmp, "a.txt"), "b")
    assert (out / "a.txt").read_text() == "b" and (out / "keep.txt").read_text() == "mine"
    assert sorted(os.listdir(tmp_path / "deep")) == ["report"]


def test_cli_creates_no_out_folder_when_validation_fails(tmp_path, monkeypatch):
    from initwise.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--schemes", "nonsense", "--out", "report"]) == 2
    assert main(["sweep", "--depths", "2", "--seeds", "0", "--out", "report2"]) == 2
    assert os.listdir(tmp_path) == []
