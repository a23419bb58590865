"""gain(): exact values, torch's calculate_gain, numeric gains for any callable."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from initwise import GAIN_NAMES, activation_name, gain
from initwise.gains import second_moment


@pytest.mark.parametrize("name,expected", [
    ("identity", 1.0), ("linear", 1.0), ("relu", math.sqrt(2.0)), ("selu", 1.0),
    ("leaky_relu", math.sqrt(2.0 / (1 + 0.01 ** 2))),
])
def test_exact_values(name, expected):
    assert gain(name) == pytest.approx(expected, abs=1e-12)


def test_leaky_relu_slope_and_parametrised_modules():
    assert gain("leaky_relu", negative_slope=0.2) == pytest.approx(math.sqrt(2 / 1.04), abs=1e-12)
    assert gain(nn.LeakyReLU(0.2)) == pytest.approx(math.sqrt(2 / 1.04), abs=1e-12)
    assert gain(nn.ELU(alpha=0.5)) == pytest.approx(gain("elu", alpha=0.5), abs=1e-12)
    assert gain("elu", alpha=0.5) != pytest.approx(gain("elu", alpha=1.0), abs=1e-3)
    assert gain("softplus", beta=2.0) != pytest.approx(gain("softplus"), abs=1e-3)


def test_quadrature_is_exact_for_kinked_functions():
    # E[relu(z)^2] = 1/2, E[z^2] = 1, E[clip(z,-1,1)^2] = 1 - 2(phi(1) + ... ) closed form below
    assert second_moment(torch.relu) == pytest.approx(0.5, abs=1e-12)
    assert second_moment(lambda z: z) == pytest.approx(1.0, abs=1e-12)
    pdf1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    p_in = math.erf(1 / math.sqrt(2))  # P(|z| < 1)
    hardtanh_moment = (p_in - 2 * pdf1) + (1 - p_in)  # E[z^2; |z|<1] + P(|z|>1)
    assert second_moment(F.hardtanh) == pytest.approx(hardtanh_moment, abs=1e-12)
    assert second_moment(F.selu) == pytest.approx(1.0, abs=1e-9)  # Klambauer et al.'s fixed point


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "elu", "gelu", "silu", "mish", "softplus", "softsign"])
def test_numeric_gains_agree_with_monte_carlo(name):
    phi = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "elu": F.elu, "gelu": F.gelu, "silu": F.silu,
           "mish": F.mish, "softplus": F.softplus, "softsign": F.softsign}[name]
    z = torch.randn(2_000_000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    mc = 1 / phi(z).square().mean().sqrt().item()
    # Monte Carlo relative error of a second moment with 2e6 samples is < 0.2% here
    assert gain(name) == pytest.approx(mc, rel=2e-3)


def test_tanh_convention_difference_is_documented_value():
    assert gain("tanh") == pytest.approx(1.5925, abs=1e-4)
    assert gain("tanh", convention="torch") == pytest.approx(5 / 3)


@pytest.mark.parametrize("name,param", [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                                        ("relu", None), ("leaky_relu", 0.3), ("selu", None)])
def test_torch_convention_matches_calculate_gain(name, param):
    kwargs = {"negative_slope": param} if param is not None else {}
    assert gain(name, convention="torch", **kwargs) == torch.nn.init.calculate_gain(name, param)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")
def test_callables_and_modules():
    assert gain(lambda z: torch.clamp(z, min=0)) == pytest.approx(math.sqrt(2), abs=1e-12)
    assert gain(nn.ReLU()) == math.sqrt(2)
    assert gain(nn.Tanh()) == gain("tanh")
    assert gain(F.gelu) == gain("gelu")
    assert gain(torch.sigmoid) == gain("sigmoid")
    assert gain(nn.PReLU(init=0.25)) == pytest.approx(math.sqrt(2 / (1 + 0.0625)), abs=1e-7)
    # a numpy-only callable works too
    import numpy as np
    assert gain(lambda z: np.maximum(z, 0)) == pytest.approx(math.sqrt(2), abs=1e-12)
    # a custom module with float32 parameters

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return self.s * x

    assert gain(Scaled()) == pytest.approx(0.5, abs=1e-6)


def test_activation_name():
    assert activation_name(nn.LeakyReLU(0.2)) == ("leaky_relu", {"negative_slope": 0.2})
    assert activation_name(nn.GELU(approximate="tanh")) == ("gelu", {"approximate": "tanh"})
    assert activation_name(nn.ReLU6()) == ("relu6", {})
    assert activation_name(F.relu) == ("relu", {})
    assert activation_name(torch.Tensor.sigmoid) == ("sigmoid", {})
    assert activation_name(nn.Linear(2, 2)) is None
    assert activation_name(print) is None


def test_functional_and_module_forms_agree():
    pairs = [(nn.Hardsigmoid(), F.hardsigmoid), (nn.LogSigmoid(), F.logsigmoid), (nn.Tanhshrink(), F.tanhshrink),
             (nn.Softshrink(0.5), F.softshrink), (nn.Hardshrink(0.5), F.hardshrink)]
    for module, fn in pairs:
        assert activation_name(module)[0] == activation_name(fn)[0]
        assert gain(module) == pytest.approx(gain(fn), abs=1e-12)
    # RReLU acts (in eval) as a leaky ReLU with the mean slope
    assert gain(nn.RReLU(0.1, 0.3)) == pytest.approx(math.sqrt(2 / (1 + 0.2 ** 2)), abs=1e-12)
    assert activation_name(nn.Softmin(dim=-1)) == ("softmin", {})
    assert gain(nn.Softmin(dim=-1)) == 1.0  # a logit layer, like softmax


@pytest.mark.parametrize("phi", [lambda z: torch.softmax(z, 0), lambda z: z / z.norm(),
                                 lambda z: z - z.mean()])
def test_non_elementwise_functions_are_rejected(phi):
    with pytest.raises(TypeError, match="not elementwise"):
        gain(phi)


def test_activation_params():
    from initwise.gains import activation_params
    assert activation_params("leaky_relu") == {"negative_slope": 0.01}
    assert activation_params("gelu") == {"approximate": "none"}
    assert activation_params("tanh") == {}
    with pytest.raises(ValueError, match="unknown activation"):
        activation_params("swoosh")


def test_errors():
    with pytest.raises(ValueError, match="unknown activation 'swishy'.*known names: .*relu"):
        gain("swishy")
    with pytest.raises(ValueError, match="no gain for 'gelu'.*convention='initwise'"):
        gain("gelu", convention="torch")
    with pytest.raises(ValueError, match="convention"):
        gain("relu", convention="keras")
    with pytest.raises(TypeError, match="unexpected parameters"):
        gain("relu", negative_slope=0.1)
    with pytest.raises(TypeError, match="name, a callable or an nn.Module"):
        gain(3.0)
    with pytest.raises(TypeError, match="elementwise"):
        gain(lambda z: z.sum())
    with pytest.raises(ValueError, match="bad parameters.*gelu"):
        gain("gelu", approximate="bogus")
    assert "relu" in GAIN_NAMES and "softsign" in GAIN_NAMES
