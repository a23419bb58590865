"""The demo's depth profile is measured, and shows what the papers predict."""
import pytest

from initwise.cli import main
from initwise.depthprofile import DEMO_SCHEMES, depth_profile, format_profile


@pytest.fixture(scope="module")
def relu_rows():
    return {r.label: r for r in depth_profile("relu", depth=30, width=128, batch=256, seed=0)}


def test_relu_profile(relu_rows):
    assert all(s == 0 for s in relu_rows["zeros"].stds)
    assert relu_rows["small N(0, 0.01)"].stds[-1] < 1e-30  # x(0.01 * sqrt(128) / sqrt 2) per layer
    he = relu_rows["he_normal"].stds
    # He preserves the scale: E[relu(y)^2] stays 1, so the std stays within a factor 3 of layer 1
    assert 1 / 3 < he[-1] / he[0] < 3
    # Xavier halves the second moment per ReLU layer: std x 1/sqrt(2) each layer
    xavier = relu_rows["xavier_normal"].stds
    assert xavier[-1] / xavier[0] < 2 ** (-29 / 2) * 10


def test_same_seed_same_numbers_and_schemes_differ():
    a = depth_profile("tanh", depth=5, width=32, batch=64, seed=3)
    b = depth_profile("tanh", depth=5, width=32, batch=64, seed=3)
    assert a == b
    assert len({r.stds for r in a}) == len(DEMO_SCHEMES) - 1  # xavier and lecun coincide at fan_in == fan_out


def test_format_and_cli(capsys, relu_rows):
    text = format_profile(list(relu_rows.values()), "relu", depth=30, width=128)
    assert "he_normal" in text and "spread@30" in text
    assert main(["demo", "--profile", "--depth", "12", "--width", "32", "--batch", "64"]) == 0
    out = capsys.readouterr().out
    for label in DEMO_SCHEMES:
        assert label in out
    assert "12-layer relu MLP" in out and "12-layer tanh MLP" in out


def test_bad_input():
    with pytest.raises(ValueError, match="unknown activation"):
        depth_profile("swoosh", depth=3)
    with pytest.raises(ValueError, match="depth >= 1"):
        depth_profile("relu", depth=0)
