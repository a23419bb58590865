"""Checks of the benchmark harnesses' own logic (their figures are measured, not tested)."""
from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
import hf_sweep
import lm_logit_scale
import noise_floor


def _init(model: nn.Module, batch: torch.Tensor, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen))


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def test_perturbed_scales_only_the_output_weight():
    base, same, moved = _model(), _model(), _model()
    x = torch.randn(5, 4)
    _init(base, x, 3)
    noise_floor.perturbed(_init, 0.0)(same, x, 3)
    noise_floor.perturbed(_init, 1e-3)(moved, x, 3)
    for (name, a), b, c in zip(base.named_parameters(), same.parameters(), moved.parameters()):
        assert torch.equal(a, b)  # eps 0: the method itself, bit for bit
        if name == "2.weight":
            assert torch.allclose(c, a * (1 + 1e-3), rtol=0, atol=1e-6) and not torch.equal(c, a)
        else:
            assert torch.equal(c, a)


BAD_ARGUMENTS = [
    *((noise_floor, argv) for argv in (["--eps", "0.5"], ["--eps", "0"], ["--seeds", "0"], ["--cases", "nope"],
                                       ["--methods", "nope"])),
    *((lm_logit_scale, argv) for argv in (["--targets", "-1"], ["--targets", "nan"], ["--seeds", "0"],
                                          ["--steps", "0"], ["--norm-gains", "0"], ["--norm-gains", "inf"],
                                          ["--width", "18"], ["--blocks", "0"])),
    *((hf_sweep, argv) for argv in (["--kind", "bogus"], ["--models", " , "])),
]


@pytest.mark.parametrize("script,argv", BAD_ARGUMENTS, ids=lambda v: v.__name__ if hasattr(v, "main") else " ".join(v))
def test_bad_arguments_are_refused(script, argv, capsys):
    """Every benchmark script's argument checks: exit status 2 and an error on stderr."""
    with pytest.raises(SystemExit) as err:
        script.main(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err


@pytest.fixture
def keep_threads():
    """The scripts run single-threaded, as the claims do; the suite keeps its threads."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_lm_logit_scale_sets_the_initial_logits_and_writes_its_table(tmp_path, keep_threads):
    """One seed, one step: zero logits start at exactly ln V; logits of E[y^2] = 0.2 start above
    it and below ln V + 0.15 (Gaussian logits of that variance: ln V + 0.1, the data's own
    alignment with the random logits moves it by a few hundredths)."""
    assert lm_logit_scale.main(["--targets", "0", "0.2", "--seeds", "1", "--steps", "1", "--no-torch",
                                "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "lm_logit_scale.json").read_text())["rows"]
    assert [r["target"] for r in rows] == [0.0, 0.2]
    assert rows[0]["initial_excess"] == pytest.approx(0.0, abs=1e-4)  # zero logits: exactly ln V
    assert 0.0 < rows[1]["initial_excess"] < 0.1 + 0.05
    assert "| initwise.init, head rescaled | 0.2 | 1 |" in (tmp_path / "lm_logit_scale.md").read_text()


def test_lm_logit_scale_norm_gain_keeps_the_initial_logits(tmp_path, keep_threads):
    """Moving a gain of 4 from the output layer into the final norm leaves the initial loss as it
    was (the same logits up to rounding), at the width and depth asked for."""
    assert lm_logit_scale.main(["--targets", "0.2", "--norm-gains", "1", "4", "--width", "16", "--blocks", "2",
                                "--seeds", "1", "--steps", "1", "--no-torch", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "lm_logit_scale.json").read_text())
    rows = report["rows"]
    assert (report["width"], report["blocks"]) == (16, 2)
    assert [r["gain"] for r in rows] == [1.0, 4.0]
    assert rows[0]["initial_excess"] == pytest.approx(rows[1]["initial_excess"], abs=1e-5)
    assert rows[0]["initial_excess"] > 0.005  # logits of E[y^2] = 0.2: visibly above ln V
    assert "| initwise.init, head rescaled | 0.2 | 4 |" in (tmp_path / "lm_logit_scale.md").read_text()


def test_hf_sweep_measures_a_model_and_reports_one_it_cannot_build(tmp_path, keep_threads):
    pytest.importorskip("transformers")
    assert hf_sweep.main(["--models", "gemma,no_such_type", "--out", str(tmp_path)]) == 0
    rows = {r["model"]: r for r in json.loads((tmp_path / "hf_sweep_causal.json").read_text())["rows"]}
    gemma = rows["gemma"]
    assert gemma["status"] == "ok" and gemma["finite"] and gemma["planned"] == 1.0
    assert abs(gemma["excess"]) < 0.1, gemma  # ln V + 53 before the (1 + weight) norms were read
    assert rows["no_such_type"]["status"] == "skipped" and rows["no_such_type"]["why"]
    assert "| gemma | ok | 100.0% |" in (tmp_path / "hf_sweep_causal.md").read_text()
