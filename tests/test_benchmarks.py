"""Checks of the benchmark harnesses' own logic (their figures are measured, not tested)."""
from __future__ import annotations

import os
import sys

import pytest
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
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


@pytest.mark.parametrize("argv", [["--eps", "0.5"], ["--eps", "0"], ["--seeds", "0"],
                                  ["--cases", "nope"], ["--methods", "nope"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as err:
        noise_floor.main(argv)
    assert err.value.code == 2
    assert "error" in capsys.readouterr().err
