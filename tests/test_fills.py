"""torch.nn.init parity: uniform_, normal_, trunc_normal_, ones_, eye_, dirac_, sparse_,
seed=, mode="fan_geo_avg", checked against torch's own functions."""
import math

import pytest
import torch
from scipy import stats

import initwise
from initwise import SCHEME_NAMES, get_initializer

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def gen(seed=7):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_uniform_and_normal_give_torchs_values(dtype):
    ours, theirs = torch.empty(300, 70, dtype=dtype), torch.empty(300, 70, dtype=dtype)
    torch.nn.init.uniform_(theirs, -0.3, 0.7, generator=gen())
    assert torch.equal(initwise.uniform_(ours, -0.3, 0.7, generator=gen()), theirs)
    torch.nn.init.normal_(theirs, 0.5, 0.02, generator=gen())
    assert torch.equal(initwise.normal_(ours, 0.5, 0.02, generator=gen()), theirs)
    torch.nn.init.uniform_(theirs, generator=gen())  # defaults U(0, 1), N(0, 1)
    assert torch.equal(initwise.uniform_(ours, generator=gen()), theirs)


@pytest.mark.parametrize("mean,std,a,b", [
    (0.0, 1.0, -2.0, 2.0),      # torch's default: mostly redraws outside
    (0.0, 0.02, -2.0, 2.0),     # absolute cut far outside: nothing cut
    (0.0, 1.0, 0.5, 1.0),       # 15% of the mass: uniform proposal with rejection
    (1.0, 2.0, -1.0, 0.0),      # mean outside [a, b]
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_trunc_normal_gives_torchs_values(mean, std, a, b, dtype):
    if torch.__version__.split("+")[0] != "2.13.0":
        pytest.skip(f"value parity is checked against torch 2.13.0's algorithm (found {torch.__version__}); "
                    "the distribution test below runs on every version")
    ours, theirs = torch.empty(4000, dtype=dtype), torch.empty(4000, dtype=dtype)
    torch.nn.init.trunc_normal_(theirs, mean, std, a, b, generator=gen(11))
    assert torch.equal(initwise.trunc_normal_(ours, mean, std, a, b, generator=gen(11)), theirs)


@pytest.mark.parametrize("mean,std,cut", [(0.0, 0.02, 2.0), (1.0, 3.0, 1.0), (0.0, 1.0, 0.2)])
def test_trunc_normal_cut_in_stds_has_the_truncated_normal_distribution(mean, std, cut):
    """20,000 samples against scipy's truncnorm on [-cut, cut] stds (KS p > 1e-3); every value
    inside the cut; same values as the absolute form a, b = mean -+ cut * std."""
    t = initwise.trunc_normal_(torch.empty(20_000, dtype=torch.float64), mean, std, cut=cut, seed=0)
    assert t.min() >= mean - cut * std and t.max() <= mean + cut * std
    p = stats.kstest(t.numpy(), stats.truncnorm(-cut, cut, loc=mean, scale=std).cdf).pvalue
    assert p > 1e-3
    same = initwise.trunc_normal_(torch.empty(20_000, dtype=torch.float64), mean, std,
                                  mean - cut * std, mean + cut * std, seed=0)
    assert torch.equal(t, same)
    theirs = torch.nn.init.trunc_normal_(torch.empty(20_000, dtype=torch.float64), mean, std,
                                         mean - cut * std, mean + cut * std)
    assert stats.ks_2samp(t.numpy(), theirs.numpy()).pvalue > 1e-3


def test_trunc_normal_errors():
    t = torch.empty(10)
    with pytest.raises(ValueError, match="not both"):
        initwise.trunc_normal_(t, cut=2.0, a=-1.0)
    with pytest.raises(ValueError, match="a < b"):
        initwise.trunc_normal_(t, a=1.0, b=1.0)
    with pytest.raises(ValueError, match="cut must be a positive number"):
        initwise.trunc_normal_(t, cut=0)
    with pytest.raises(ValueError, match="std must be a finite number"):
        initwise.trunc_normal_(t, std=float("nan"))


def test_ones_eye_dirac_are_torchs():
    for shape in [(3, 5), (5, 3), (4, 4)]:
        assert torch.equal(initwise.eye_(torch.randn(shape)), torch.nn.init.eye_(torch.randn(shape)))
    assert torch.equal(initwise.ones_(torch.randn(3, 2)), torch.ones(3, 2))
    for shape, groups in [((6, 4, 3), 1), ((6, 4, 3, 3), 2), ((8, 2, 3, 3, 3), 4), ((4, 6, 5), 1),
                          ((6, 6, 4, 4), 3)]:
        ours = initwise.dirac_(torch.randn(shape), groups)
        assert torch.equal(ours, torch.nn.init.dirac_(torch.randn(shape), groups)), shape
    x = torch.randn(2, 4, 9)  # the dirac conv is the identity on its channels
    w = initwise.dirac_(torch.empty(4, 4, 3))
    assert torch.allclose(torch.nn.functional.conv1d(x, w, padding=1), x)
    with pytest.raises(ValueError, match="2-D"):
        initwise.eye_(torch.empty(2, 2, 2))
    with pytest.raises(ValueError, match="cannot be split into 4 groups"):
        initwise.dirac_(torch.empty(6, 2, 3), groups=4)
    with pytest.raises(ValueError, match="groups must be an integer"):
        initwise.dirac_(torch.empty(6, 2, 3), groups=2.0)


def test_sparse_zeros_per_column_and_torchs_normal_values():
    rows, cols, sparsity = 10, 3000, 0.3
    ours = initwise.sparse_(torch.empty(rows, cols), sparsity, std=0.05, generator=gen())
    theirs = torch.nn.init.sparse_(torch.empty(rows, cols), sparsity, std=0.05, generator=gen())
    assert ((ours == 0).sum(0) == math.ceil(sparsity * rows)).all()
    kept = (ours != 0) & (theirs != 0)
    assert kept.float().mean() > 0.4 and torch.equal(ours[kept], theirs[kept])  # same normal draws
    # each row is zeroed in 30% of the columns: binomial(3000, 0.3), 5 sigma = 0.042
    assert ((ours == 0).float().mean(1) - sparsity).abs().max() < 5 * math.sqrt(0.3 * 0.7 / cols)
    nonzero = ours[ours != 0]
    assert stats.kstest(nonzero.numpy() / 0.05, "norm").pvalue > 1e-3
    assert torch.equal(initwise.sparse_(torch.empty(rows, cols), sparsity, 0.05, seed=3),
                       initwise.sparse_(torch.empty(rows, cols), sparsity, 0.05, seed=3))
    with pytest.raises(ValueError, match="from 0 to 1"):
        initwise.sparse_(torch.empty(3, 3), 1.5)


def test_fan_geo_avg_is_the_geometric_mean_of_the_fans():
    assert initwise.variance_scaling_std(2.0, "fan_geo_avg", 100, 400) == pytest.approx(math.sqrt(2 / 200), rel=1e-12)
    t = initwise.variance_scaling_(torch.empty(400, 100, dtype=torch.float64), 2.0, "fan_geo_avg", seed=0)
    assert t.std().item() == pytest.approx(math.sqrt(2 / 200), rel=0.01)  # 40,000 samples: 0.35% se


RANDOM = {
    "variance_scaling_": {}, "xavier_normal_": {}, "xavier_uniform_": {}, "xavier_truncated_normal_": {},
    "kaiming_normal_": {}, "kaiming_uniform_": {}, "kaiming_truncated_normal_": {}, "lecun_normal_": {},
    "lecun_uniform_": {}, "lecun_truncated_normal_": {}, "orthogonal_": {}, "small_normal_": {},
    "small_uniform_": {}, "uniform_": {}, "normal_": {}, "trunc_normal_": {}, "sparse_": {"sparsity": 0.5},
}


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_seed_is_a_generator_seeded_with_it(name):
    fn = getattr(initwise, name)
    a = fn(torch.empty(16, 8), seed=5, **RANDOM[name])
    b = fn(torch.empty(16, 8), generator=gen(5), **RANDOM[name])
    assert torch.equal(a, b) and not torch.equal(a, fn(torch.empty(16, 8), seed=6, **RANDOM[name]))
    with pytest.raises(ValueError, match="not both"):
        fn(torch.empty(16, 8), seed=5, generator=gen(5), **RANDOM[name])
    for bad in (True, -1, 2**64, 1.0, "1"):
        with pytest.raises(ValueError, match="seed"):
            fn(torch.empty(16, 8), seed=bad, **RANDOM[name])


def test_delta_orthogonal_takes_a_seed():
    a = initwise.delta_orthogonal_(torch.empty(8, 8, 3, 3), seed=2)
    assert torch.equal(a, initwise.delta_orthogonal_(torch.empty(8, 8, 3, 3), generator=gen(2)))


def test_every_tensor_function_with_generator_takes_seed():
    import inspect

    for name in initwise.schemes.__all__:
        fn = getattr(initwise, name, None)
        if callable(fn) and "generator" in inspect.signature(fn).parameters:
            assert "seed" in inspect.signature(fn).parameters, name


def test_registry_has_torch_and_keras_names():
    for name in ("uniform", "normal", "trunc_normal", "ones", "eye", "dirac", "sparse", "variance_scaling"):
        assert name in SCHEME_NAMES
    assert get_initializer("eye_") is initwise.eye_
    assert get_initializer("identity") is initwise.eye_          # Keras
    assert get_initializer("random_normal") is initwise.normal_  # Keras
    assert get_initializer("random_uniform") is initwise.uniform_
    assert get_initializer("truncated_normal") is initwise.trunc_normal_
    assert get_initializer("ones") is initwise.ones_
    for name in ("ones_", "eye_", "dirac_", "uniform_", "normal_", "trunc_normal_", "sparse_"):
        assert name in initwise.__all__


def test_meta_and_empty_tensors():
    for fn in (initwise.uniform_, initwise.normal_, initwise.trunc_normal_, initwise.ones_, initwise.eye_):
        t = torch.empty(3, 4, device="meta")
        assert fn(t) is t
    with pytest.warns(UserWarning, match="no elements"):
        initwise.normal_(torch.empty(0, 4))
