"""No silent wrong values: every number a scheme or a gain takes is checked, and a value that
would give inf, NaN or all-zero weights is a ValueError naming the argument."""
import math

import pytest
import torch

import initwise
from initwise.cli import main

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("call,match", [
    (lambda t: initwise.xavier_normal_(t, gain=1e200), "gain 1e\\+200 is out of range"),
    (lambda t: initwise.xavier_uniform_(t, gain=NAN), "gain must be a finite number"),
    (lambda t: initwise.xavier_normal_(t, gain=True), "gain must be a number, got bool"),
    (lambda t: initwise.xavier_normal_(t, gain=[1.0]), "gain must be a number, got list"),
    (lambda t: initwise.xavier_normal_(t, gain=torch.tensor(1.0)), "gain must be a number.*float\\(t\\)"),
    (lambda t: initwise.variance_scaling_(t, scale=INF), "scale must be a finite number"),
    (lambda t: initwise.variance_scaling_(t, scale=True), "scale must be a number, got bool"),
    (lambda t: initwise.variance_scaling_(t, fans=(NAN, 4)), "fan_in \\(fans\\[0\\]\\) must be a finite number"),
    (lambda t: initwise.variance_scaling_(t, fans=(INF, 4)), "fan_in \\(fans\\[0\\]\\) must be a finite number"),
    (lambda t: initwise.variance_scaling_(t, fans=(4, 0)), "fan_out \\(fans\\[1\\]\\) must be a positive number"),
    (lambda t: initwise.variance_scaling_(t, fans=(True, 4)), "fan_in .* must be a number, got bool"),
    (lambda t: initwise.variance_scaling_(t, fans=4), "fans must be a pair"),
    (lambda t: initwise.kaiming_normal_(t, a=True), "a must be a number, got bool"),
    (lambda t: initwise.kaiming_uniform_(t, a=NAN), "a must be a finite number"),
    (lambda t: initwise.kaiming_normal_(t, nonlinearity=None), "nonlinearity must be an activation name"),
    (lambda t: initwise.xavier_normal_(t, gain=1e-40), "below torch.float32's smallest normal"),
    (lambda t: initwise.xavier_normal_(t.half(), gain=1e6), "beyond what torch.float16 holds"),
    (lambda t: initwise.orthogonal_(t, gain=1e100), "beyond what torch.float32 holds"),
    (lambda t: initwise.orthogonal_(t, blocks=True), "blocks must be an integer, got bool"),
    (lambda t: initwise.small_normal_(t, std=INF), "std must be a finite number"),
    (lambda t: initwise.small_uniform_(t, bound="0.1"), "bound must be a number, got str"),
    (lambda t: initwise.constant_(t, NAN), "value must be a finite number"),
    (lambda t: initwise.constant_(t, 1e39), "beyond what torch.float32 holds"),
    (lambda t: initwise.normal_(t, std=1e38), "beyond what torch.float32 holds"),
    (lambda t: initwise.uniform_(t, 1.0, 0.0), "need a < b"),
])
def test_bad_numbers_are_value_errors_naming_the_argument(call, match):
    t = torch.empty(8, 8)
    before = t.clone()
    with pytest.raises(ValueError, match=match):
        call(t)
    assert torch.equal(t, before) or torch.isnan(before).any()  # nothing was written


def test_variance_scaling_std_checks_everything():
    with pytest.raises(ValueError, match="fan_in .* must be a finite number"):
        initwise.variance_scaling_std(1.0, "fan_in", NAN, 4)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        initwise.variance_scaling_std(-1.0, "fan_in", 4, 4)
    with pytest.raises(ValueError, match="not a finite positive number"):
        initwise.variance_scaling_std(1e-320, "fan_in", 1e10, 4)  # underflows to 0
    assert initwise.variance_scaling_std(2.0, "fan_in", 8, 3) == 0.5


@pytest.mark.parametrize("bad", [True, [0.1], "0.1", NAN, INF])
def test_leaky_relu_slope_must_be_a_number_as_in_torch(bad):
    with pytest.raises(ValueError, match="negative_slope must be a"):
        initwise.gain("leaky_relu", negative_slope=bad)
    if not isinstance(bad, float):
        with pytest.raises(ValueError):  # torch's calculate_gain raises ValueError too
            torch.nn.init.calculate_gain("leaky_relu", bad)


def test_parameters_of_every_kind_are_checked():
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        initwise.gain("elu", alpha=NAN)
    with pytest.raises(ValueError, match="approximate must be a string"):
        initwise.gain("gelu", approximate=1)
    with pytest.raises(TypeError, match="unexpected parameters \\['slope'\\]"):
        initwise.gain("leaky_relu", slope=0.1)
    assert initwise.gain("leaky_relu", negative_slope=0.2) == pytest.approx(math.sqrt(2 / 1.04))


@pytest.mark.parametrize("args,kwargs", [
    (("threshold",), {"threshold": 30.0}),  # 0 below 30: every N(0, 1) input
    (("hardshrink",), {"lambd": 20.0}),
    ((lambda z: z * 0,), {}),
])
def test_an_activation_zero_almost_everywhere_is_a_clear_value_error(args, kwargs):
    with pytest.raises(ValueError, match="0 for almost every input"):
        initwise.gain(*args, **kwargs)


def test_an_activation_with_non_finite_values_has_no_gain():
    with pytest.raises(ValueError, match="not finite"):
        initwise.gain(torch.log)  # NaN for z < 0
    with pytest.raises(ValueError, match="not finite"):
        initwise.gain("softplus", beta=0.0)


def test_recommend_never_gives_nan(capsys):
    with pytest.raises(ValueError, match="finite"):
        initwise.recommend("relu", fan_in=NAN)
    with pytest.raises(ValueError, match="finite"):
        initwise.recommend("tanh", fan_out=INF)
    for argv in (["recommend", "relu", "--fan-in", "nan"], ["recommend", "relu", "--fan-out", "inf"],
                 ["recommend", "leaky_relu", "--param", "negative_slope=nan"]):
        assert _exit_code(argv) == 2
        out = capsys.readouterr()
        assert "nan" not in out.out.lower() and "std" not in out.out and "error" in out.err


def _exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse rejects the option
        return exc.code
