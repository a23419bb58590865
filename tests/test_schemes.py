"""The in-place schemes: variances, distributions, orthogonality, determinism and errors.

Distribution tests draw >= 20,000 samples from a seeded generator and require the sample std to
be within 2% of the target (the sampling error of a std with n = 20,000 is about 0.5%), and a
Kolmogorov-Smirnov test against the intended distribution with p > 0.001.
"""
import math
import warnings

import pytest
import torch
from scipy import stats
from torch import nn

import initwise
from initwise import (
    delta_orthogonal_, get_initializer, kaiming_normal_, orthogonal_, variance_scaling_,
)
from initwise.schemes import TRUNCATED_NORMAL_STD

SHAPE = (200, 150)  # 30,000 samples; fan_in 150, fan_out 200
FAN_IN, FAN_OUT = 150, 200
HE = math.sqrt(2 / FAN_IN)
XAVIER = math.sqrt(2 / (FAN_IN + FAN_OUT))
LECUN = math.sqrt(1 / FAN_IN)

CASES = [  # (function, kwargs, target std, distribution)
    (initwise.xavier_normal_, {}, XAVIER, "normal"),
    (initwise.xavier_uniform_, {}, XAVIER, "uniform"),
    (initwise.xavier_truncated_normal_, {}, XAVIER, "truncated_normal"),
    (initwise.xavier_normal_, {"gain": 5 / 3}, 5 / 3 * XAVIER, "normal"),
    (initwise.kaiming_normal_, {}, HE, "normal"),
    (initwise.kaiming_uniform_, {}, HE, "uniform"),
    (initwise.kaiming_truncated_normal_, {}, HE, "truncated_normal"),
    (initwise.kaiming_normal_, {"a": 0.2}, math.sqrt(2 / (1.04 * FAN_IN)), "normal"),
    (initwise.kaiming_uniform_, {"mode": "fan_out", "nonlinearity": "relu"}, math.sqrt(2 / FAN_OUT), "uniform"),
    (initwise.he_normal_, {}, HE, "normal"),
    (initwise.lecun_normal_, {}, LECUN, "normal"),
    (initwise.lecun_uniform_, {}, LECUN, "uniform"),
    (initwise.lecun_truncated_normal_, {}, LECUN, "truncated_normal"),
    (initwise.small_normal_, {}, 0.01, "normal"),
    (initwise.small_uniform_, {}, 0.01 / math.sqrt(3), "uniform"),
    (variance_scaling_, {"scale": 3.0, "mode": "fan_avg", "distribution": "uniform"},
     math.sqrt(3.0 / 175), "uniform"),
]


def _cdf(distribution, std):
    if distribution == "normal":
        return stats.norm(scale=std).cdf
    if distribution == "uniform":
        b = math.sqrt(3) * std
        return stats.uniform(loc=-b, scale=2 * b).cdf
    s = std / TRUNCATED_NORMAL_STD
    return stats.truncnorm(-2, 2, scale=s).cdf


@pytest.mark.parametrize("fn,kwargs,std,distribution", CASES, ids=lambda v: getattr(v, "__name__", None))
def test_std_and_distribution(fn, kwargs, std, distribution):
    t = torch.empty(SHAPE)
    out = fn(t, generator=torch.Generator().manual_seed(1), **kwargs)
    assert out is t
    x = t.flatten().double().numpy()
    assert abs(x.std() / std - 1) < 0.02
    assert abs(x.mean()) < 4 * std / math.sqrt(x.size)
    assert stats.kstest(x, _cdf(distribution, std)).pvalue > 1e-3
    if distribution == "uniform":
        assert abs(x).max() <= math.sqrt(3) * std * (1 + 1e-6)
    if distribution == "truncated_normal":
        assert abs(x).max() <= 2 * std / TRUNCATED_NORMAL_STD * (1 + 1e-6)


def test_truncated_normal_constant_is_the_truncated_std():
    assert stats.truncnorm(-2, 2).std() == pytest.approx(TRUNCATED_NORMAL_STD, abs=1e-15)


def test_ks_rejects_the_wrong_distribution():
    # the distribution test has power: a normal sample is not taken for a uniform of equal variance
    t = initwise.xavier_normal_(torch.empty(SHAPE), generator=torch.Generator().manual_seed(1))
    assert stats.kstest(t.flatten().double().numpy(), _cdf("uniform", XAVIER)).pvalue < 1e-6


def test_fans_override_for_fused_blocks():
    lstm = nn.LSTM(64, 100)
    fi, fo = initwise.fans(lstm.weight_ih_l0, lstm)
    initwise.xavier_normal_(lstm.weight_ih_l0, generator=torch.Generator().manual_seed(0), fans=(fi, fo))
    assert lstm.weight_ih_l0.std().item() == pytest.approx(math.sqrt(2 / 164), rel=0.02)


@pytest.mark.parametrize("shape", [(100, 40), (40, 100), (64, 8, 3, 3), (30, 30)])
@pytest.mark.parametrize("gain", [1.0, math.sqrt(2)])
def test_orthogonal(shape, gain):
    t = orthogonal_(torch.empty(shape), gain=gain, generator=torch.Generator().manual_seed(0))
    w = t.reshape(shape[0], -1).double()
    rows, cols = w.shape
    gram = w.T @ w if rows >= cols else w @ w.T
    assert torch.allclose(gram, gain ** 2 * torch.eye(min(rows, cols), dtype=torch.float64), atol=1e-5)
    assert torch.allclose(torch.linalg.svdvals(w), torch.full((min(rows, cols),), gain, dtype=torch.float64),
                          atol=1e-5)


def test_orthogonal_per_block():
    w = orthogonal_(torch.empty(4 * 32, 32), blocks=4, generator=torch.Generator().manual_seed(0)).double()
    for block in w.chunk(4):
        assert torch.allclose(block.T @ block, torch.eye(32, dtype=torch.float64), atol=1e-5)
    # the blocks are independent: the whole (128 x 32) matrix is not orthonormal
    assert not torch.allclose(w.T @ w, torch.eye(32, dtype=torch.float64), atol=1e-2)


def test_delta_orthogonal():
    t = delta_orthogonal_(torch.empty(16, 8, 3, 3), gain=2.0, generator=torch.Generator().manual_seed(0))
    centre = t[:, :, 1, 1].double()
    assert torch.allclose(centre.T @ centre, 4 * torch.eye(8, dtype=torch.float64), atol=1e-5)
    t[:, :, 1, 1] = 0
    assert t.abs().max() == 0
    x = torch.randn(4, 8, 10, 10)
    w = delta_orthogonal_(torch.empty(16, 8, 3, 3), generator=torch.Generator().manual_seed(1))
    y = torch.nn.functional.conv2d(x, w, padding=1)
    assert torch.allclose(y.square().sum(), x.square().sum(), rtol=1e-4)  # norm preserved


@pytest.mark.parametrize("groups", [1, 4, 64])
def test_delta_orthogonal_per_group_preserves_the_norm(groups):
    w = torch.empty(64, 64 // groups, 3, 3)
    delta_orthogonal_(w, blocks=groups, generator=torch.Generator().manual_seed(0))
    x = torch.randn(8, 64, 10, 10, generator=torch.Generator().manual_seed(1))
    y = torch.nn.functional.conv2d(x, w, padding=1, groups=groups)
    assert torch.allclose(y.square().sum(), x.square().sum(), rtol=1e-4)


@pytest.mark.parametrize("name", ["xavier_uniform", "kaiming_normal", "lecun_truncated_normal", "orthogonal",
                                  "small_normal", "small_uniform"])
def test_generator_determinism(name):
    fn = get_initializer(name)
    a = fn(torch.empty(50, 40), generator=torch.Generator().manual_seed(7))
    b = fn(torch.empty(50, 40), generator=torch.Generator().manual_seed(7))
    c = fn(torch.empty(50, 40), generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["xavier_normal", "kaiming_uniform", "lecun_truncated_normal", "orthogonal",
                                  "delta_orthogonal", "zeros", "small_normal"])
def test_dtypes_kept(dtype, name):
    t = torch.empty(64, 32, 3, dtype=dtype)
    get_initializer(name)(t, **({} if name == "zeros" else {"generator": torch.Generator().manual_seed(0)}))
    assert t.dtype == dtype
    assert torch.isfinite(t).all()


def test_leaf_parameter_with_requires_grad():
    p = nn.Parameter(torch.empty(30, 20))
    initwise.kaiming_normal_(p)
    assert p.requires_grad and p.grad_fn is None and p.is_leaf
    orthogonal_(p)
    initwise.zeros_(p)
    assert p.is_leaf and p.grad_fn is None


def test_zero_element_tensor_warns_and_does_nothing():
    t = torch.empty(0, 5)
    with pytest.warns(UserWarning, match="no elements"):
        assert initwise.xavier_normal_(t) is t


def test_meta_tensor_is_a_silent_noop():
    t = torch.empty(100, 50, device="meta")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ["xavier_normal", "kaiming_truncated_normal", "orthogonal", "zeros", "small_uniform"]:
            assert get_initializer(name)(t) is t


def test_trivial_schemes():
    assert initwise.zeros_(torch.ones(3, 4)).abs().sum() == 0
    assert torch.equal(initwise.constant_(torch.empty(3), 0.5), torch.full((3,), 0.5))


def test_registry_names():
    assert get_initializer("glorot_uniform") is initwise.xavier_uniform_
    assert get_initializer("glorot_normal") is initwise.xavier_normal_
    assert get_initializer("he_normal") is initwise.kaiming_normal_
    assert get_initializer("he_uniform") is initwise.kaiming_uniform_
    assert get_initializer("lecun_normal") is initwise.lecun_normal_
    assert get_initializer("lecun_uniform") is initwise.lecun_uniform_
    assert get_initializer("orthogonal") is initwise.orthogonal_
    assert get_initializer("zeros") is initwise.zeros_
    assert get_initializer("kaiming_normal_") is kaiming_normal_
    assert get_initializer("Xavier") is initwise.xavier_normal_
    assert get_initializer("small") is initwise.small_normal_
    assert set(initwise.SCHEME_NAMES) >= {"xavier_normal", "kaiming_uniform", "lecun_truncated_normal", "orthogonal"}


def test_errors():
    with pytest.raises(ValueError, match="Did you mean 'he_normal'"):
        get_initializer("he_norml")
    with pytest.raises(ValueError, match="unknown initializer 'frobnicate'.*Known names"):
        get_initializer("frobnicate")
    with pytest.raises(TypeError, match="string"):
        get_initializer(3)
    with pytest.raises(ValueError, match="floating-point.*int64"):
        initwise.xavier_normal_(torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="floating-point"):
        initwise.zeros_(torch.zeros(4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="mode must be one of"):
        variance_scaling_(torch.empty(4, 4), mode="fan_sum")
    with pytest.raises(ValueError, match="distribution must be one of"):
        variance_scaling_(torch.empty(4, 4), distribution="laplace")
    with pytest.raises(ValueError, match="scale must be a positive"):
        variance_scaling_(torch.empty(4, 4), scale=-1)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        initwise.kaiming_normal_(torch.empty(10))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        orthogonal_(torch.empty(10))
    with pytest.raises(ValueError, match="3 equal blocks"):
        orthogonal_(torch.empty(10, 4), blocks=3)
    with pytest.raises(ValueError, match="positive integer"):
        orthogonal_(torch.empty(10, 4), blocks=0)
    with pytest.raises(ValueError, match="convolution weight"):
        delta_orthogonal_(torch.empty(10, 4))
    with pytest.raises(ValueError, match="odd kernel sizes"):
        delta_orthogonal_(torch.empty(8, 8, 2, 3))
    with pytest.raises(ValueError, match="gain must be a positive number"):
        initwise.xavier_normal_(torch.empty(4, 4), gain=-1.0)
    with pytest.raises(ValueError, match="gain must be a positive number"):
        orthogonal_(torch.empty(4, 4), gain=0.0)
    with pytest.raises(ValueError, match="std must be a positive number"):
        initwise.small_normal_(torch.empty(3, 3), std=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        initwise.xavier_normal_([[1.0, 2.0]])
