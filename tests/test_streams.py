"""Streams: element i of a parameter depends only on (seed, name, i), whatever the range,
dtype or thread count; the distributions have the planned variance."""
from __future__ import annotations

import math

import pytest
import torch

from initwise import streams

B = streams.BLOCK
N = 2 * B + 12345  # three blocks, the last one partial


@pytest.fixture
def threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("distribution", streams.DISTRIBUTIONS)
def test_any_range_equals_the_same_slice_of_the_whole(distribution):
    full = streams.draw(7, "layer.weight", N, distribution=distribution, std=0.5)
    for start, stop in [(0, 1), (5, B + 7), (B, 2 * B), (B - 3, N), (N - 1, N), (N, N)]:
        part = streams.draw(7, "layer.weight", N, start, stop, distribution=distribution, std=0.5)
        assert torch.equal(part, full[start:stop]), (start, stop)
    out = torch.empty(N - 1000)
    streams.fill_(out, 7, "layer.weight", N, 1000, distribution=distribution, std=0.5)
    assert torch.equal(out, full[1000:])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_other_dtypes_get_the_float32_values_rounded(dtype):
    full = streams.draw(3, "w", N, std=0.02)
    t = torch.empty(N, dtype=dtype)
    streams.fill_(t, 3, "w", std=0.02)
    assert t.dtype == dtype and torch.equal(t, full.to(dtype))
    strided = torch.empty(N, 2)[:, 0]  # non-contiguous float32 goes through the buffer
    streams.fill_(strided, 3, "w", std=0.02)
    assert torch.equal(strided, full)


def test_streams_differ_by_seed_name_and_block_and_use_more_than_32_bits():
    a = streams.draw(1, "a", N)
    assert not torch.equal(a, streams.draw(2, "a", N))
    assert not torch.equal(a, streams.draw(1, "b", N))
    assert not torch.equal(a[:B], a[B:2 * B])
    # torch's manual_seed keeps 32 bits of a seed; block generators take a 256-bit key
    assert not torch.equal(a, streams.draw(1 + 2**32, "a", N))
    assert streams.stream_seed(1, "a") != streams.stream_seed(1, "b")
    assert torch.equal(torch.empty(10).normal_(generator=streams.param_generator(1, "a")),
                       torch.empty(10).normal_(generator=streams.block_generator(streams.stream_key(1, "a"), 0)))


@pytest.mark.parametrize("distribution", streams.DISTRIBUTIONS)
def test_same_bits_on_one_and_two_threads(distribution, threads):
    torch.set_num_threads(1)
    one = streams.draw(5, "w", N, distribution=distribution, std=0.1)
    torch.set_num_threads(2)
    assert torch.equal(one, streams.draw(5, "w", N, distribution=distribution, std=0.1))


def test_orthogonal_same_bits_on_one_and_two_threads_and_orthogonal(threads):
    torch.set_num_threads(2)
    two = streams.orthogonal(5, "w", 384, 256, blocks=1, gain=2.0)
    lstm = streams.orthogonal(5, "h", 4 * 96, 96, blocks=4)
    torch.set_num_threads(1)
    assert torch.equal(two, streams.orthogonal(5, "w", 384, 256, blocks=1, gain=2.0))
    assert torch.equal(lstm, streams.orthogonal(5, "h", 4 * 96, 96, blocks=4))
    assert torch.allclose(two.T @ two, 4 * torch.eye(256, dtype=torch.float64), atol=1e-12)
    for b in range(4):
        q = lstm[b * 96:(b + 1) * 96]
        assert torch.allclose(q @ q.T, torch.eye(96, dtype=torch.float64), atol=1e-12)
    wide = streams.orthogonal(5, "x", 50, 200)
    assert torch.allclose(wide @ wide.T, torch.eye(50, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("distribution, bound", [("normal", None), ("uniform", math.sqrt(3)),
                                                  ("truncated_normal", 2 / streams.TRUNCATED_NORMAL_STD)])
def test_distributions_have_the_planned_variance(distribution, bound):
    x = streams.draw(11, "w", N, distribution=distribution, std=0.3).double()
    # N = 536,633 samples: the std of the sample std is ~std/sqrt(2N) = 0.1%; 1% tolerance
    assert x.std().item() == pytest.approx(0.3, rel=0.01)
    assert abs(x.mean().item()) < 0.003
    if bound is not None:
        assert x.abs().max().item() <= 0.3 * bound * (1 + 1e-6)
        assert x.abs().max().item() > 0.3 * bound * 0.99  # the support is used up to its edge
    else:
        assert (x.abs() > 3 * 0.3).double().mean().item() == pytest.approx(0.0027, rel=0.1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="distribution"):
        streams.draw(1, "w", 10, distribution="cauchy")
    with pytest.raises(ValueError, match="std"):
        streams.draw(1, "w", 10, std=float("nan"))
    with pytest.raises(ValueError, match="range"):
        streams.draw(1, "w", 10, 5, 11)
    with pytest.raises(TypeError, match="seed"):
        streams.draw(1.5, "w", 10)
    with pytest.raises(TypeError, match="1-D"):
        streams.fill_(torch.empty(3, 3), 1, "w")
