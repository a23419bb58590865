"""Random streams: element ``i`` of parameter ``name`` is a function of ``(seed, name, i)``.

The flattened (row-major) tensor is cut into fixed blocks of :data:`BLOCK` elements. Block
``j`` of parameter ``name`` draws from its own CPU ``torch.Generator`` (Mersenne Twister) whose
whole 19,968-bit state is SHAKE-256 of ``(SHA-256(f"{seed}:{name}"), j)`` (:func:`block_generator`;
``manual_seed`` would use only 32 bits of a seed, so two of a large model's blocks would share
a stream with probability ~blocks^2 / 2^33). A block is always drawn whole and in float32, so
the value of an element does not depend on

* the layout: a shard (rows of a rank, any range of the flattened tensor) draws only the blocks
  it overlaps, at most two of them partly wasted (:func:`draw`, :func:`fill_`);
* the number of processes or of torch threads: the CPU draws are serial per block, the
  rejection step of the truncated normal is exact, and whole-matrix work (the QR of
  :func:`orthogonal`) runs on one thread in float64 (:func:`one_thread`);
* the dtype or the device: every dtype gets the float32 values rounded (bfloat16/float16) or
  widened (float64), and a CUDA tensor gets the CPU values copied.

Distributions, each a whole-block function of the block's generator:

* ``normal``: ``normal_(0, std)`` (torch's Box-Muller);
* ``uniform``: ``uniform_(-b, b)``, ``b = sqrt(3) std`` (same variance);
* ``truncated_normal``: the inverse CDF of a uniform, ``sqrt(2) erfinv(u) s`` with
  ``u ~ U(-erf(sqrt 2), erf(sqrt 2))`` (a standard normal cut at +-2) and
  ``s = std / 0.87962566103423978``, the std of that cut normal, so the variance is ``std^2``
  (elementwise after the uniform draw, so thread-independent). ``cut=c`` cuts at ``+-c``
  instead (``s = std / truncated_std(c)``; OLMo's and torchtitan's ``trunc_normal_(std=s,
  a=-3s, b=3s)`` is ``cut=3`` with ``std = 0.98664 s``).

Why this design, measured (``python benchmarks/bench_scale.py --streams``, 2-core AVX-512 VM,
1 thread, 16M float32 elements, ns per element, ranges over runs): a raw ``t.normal_()`` of the
whole tensor 4.2-4.4; per-block ``normal`` 2.6-3.1 (0.6-0.7x: a 1 MiB block stays in cache),
``uniform`` 2.3-2.7, ``truncated_normal`` 3.2-3.8 (0.8-0.9x); a counter-based generator in
torch integer ops (murmur3 finalizer on int64 counters + Box-Muller, 12 passes) 5.3 (1.25x the
raw fill, 2x these blocks), so the blocks won. The cost of a block's generator (~20 us) is 3%
of drawing it. A CUDA tensor is filled from CPU draws, so on a GPU machine initialization runs
at the CPU's speed (~0.3 s per 100M parameters per core), the price of equal bits on every
device.

Limits: torch's CPU Box-Muller uses a vectorized log/sincos on AVX2/AVX-512 machines and libm
elsewhere, so ``normal`` and ``truncated_normal`` values can differ in the last bit between
machines of different CPU vector classes (``torch.backends.cpu.get_cpu_capability()``);
``uniform`` is the same everywhere. The streams are new in this version: weights for a seed
differ from earlier initwise versions.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import math
import struct
from typing import Iterator

import torch

__all__ = ["BLOCK", "truncated_std", "stream_key", "stream_seed", "param_generator", "block_generator", "draw", "fill_",
           "orthogonal", "one_thread", "DISTRIBUTIONS"]

#: Elements per block of a stream (1 MiB of float32).
BLOCK = 1 << 18
DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")
#: Standard deviation of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STD = 0.87962566103423978
_CUT = 2.0
#: Where ``truncated_normal`` is cut unless told (in standard deviations of the normal).
TRUNCATED_CUT = _CUT
_MT_WORDS = 624        # Mersenne Twister state: 624 32-bit words
_STATE_OFFSET = 24     # torch's CPU generator state: int64 seed, int left, int seeded, uint64 next, then the words
_template: bytes | None = None


def stream_key(seed: int, name: str) -> bytes:
    """The 256-bit key of parameter ``name``'s stream: SHA-256 of ``f"{seed}:{name}"``."""
    _check_seed(seed)
    if not isinstance(name, str):
        raise TypeError(f"name must be a parameter name (str), got {type(name).__name__}")
    return hashlib.sha256(f"{seed}:{name}".encode()).digest()


def stream_seed(seed: int, name: str) -> int:
    """The first 63 bits of :func:`stream_key`, as an int (a short label of the stream)."""
    return int.from_bytes(stream_key(seed, name)[:8], "little") & ((1 << 63) - 1)


def _check_seed(seed: int) -> None:
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")


def _state_template() -> bytes:
    """A CPU generator state, checked to have the layout :func:`block_generator` writes."""
    global _template  # a constant computed once, not state that changes results
    if _template is None:
        g = torch.Generator()
        g.manual_seed(0x1234ABCD)
        raw = bytes(g.get_state().tolist())
        seed, left, seeded = struct.unpack_from("<qii", raw, 0)
        first = struct.unpack_from("<Q", raw, _STATE_OFFSET)[0]
        if (seed, left, seeded, first) != (0x1234ABCD, 1, 1, 0x1234ABCD):
            raise RuntimeError("initwise.streams: this torch's CPU generator state has an unknown layout; "
                               f"please report it with your torch version ({torch.__version__})")
        _template = raw
    return _template


def block_generator(key: bytes, block: int) -> torch.Generator:
    """The CPU generator of block ``block`` of the stream with key ``key`` (:func:`stream_key`).

    Its 624-word Mersenne Twister state is SHAKE-256 of ``key`` and the block index, written
    with ``Generator.set_state`` (``left = 1``, so the first draw twists the state once)."""
    words = hashlib.shake_256(b"initwise-stream-1" + key + block.to_bytes(8, "little")).digest(4 * _MT_WORDS)
    state = bytearray(_state_template())
    wide = bytearray(8 * _MT_WORDS)  # each 32-bit word stored as a little-endian uint64
    for k in range(4):
        wide[k::8] = words[k::4]
    state[_STATE_OFFSET:_STATE_OFFSET + len(wide)] = wide
    struct.pack_into("<qiiQ", state, 0, 0, 1, 1, 0)
    g = torch.Generator()
    g.set_state(torch.frombuffer(state, dtype=torch.uint8))
    return g


def param_generator(seed: int, name: str) -> torch.Generator:
    """The generator of block 0 of parameter ``name``'s stream (what a tensor of at most
    :data:`BLOCK` elements draws from)."""
    return block_generator(stream_key(seed, name), 0)


# ----------------------------------------------------------------------------- one block
def truncated_std(cut: float = _CUT) -> float:
    """Standard deviation of a standard normal truncated to ``[-cut, cut]``:
    ``sqrt(1 - 2 c phi(c) / (2 Phi(c) - 1))`` (0.87963 at 2, 0.98664 at 3)."""
    if not (isinstance(cut, (int, float)) and not isinstance(cut, bool) and math.isfinite(cut) and cut > 0):
        raise ValueError(f"cut must be a finite number > 0 (in standard deviations), got {cut!r}")
    if cut == _CUT:
        return TRUNCATED_NORMAL_STD
    density = math.exp(-0.5 * cut * cut) / math.sqrt(2.0 * math.pi)
    return math.sqrt(1.0 - 2.0 * cut * density / math.erf(cut / math.sqrt(2.0)))


def _check(distribution: str, std: float, cut: float = _CUT) -> None:
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}; got {distribution!r}")
    if not (isinstance(std, (int, float)) and math.isfinite(std) and std >= 0):
        raise ValueError(f"std must be a finite number >= 0, got {std!r}")
    truncated_std(cut)


def _draw_block(out: torch.Tensor, g: torch.Generator, distribution: str, std: float, cut: float = _CUT) -> None:
    """Fill ``out`` (a contiguous 1-D float32 CPU tensor: one whole block) from ``g``."""
    if distribution == "normal":
        out.normal_(0.0, std, generator=g)
    elif distribution == "uniform":
        bound = math.sqrt(3.0) * std
        out.uniform_(-bound, bound, generator=g)
    else:  # inverse CDF: u ~ U(Phi(-c), Phi(c)) mapped to [-1, 1], x = sqrt(2) erfinv(u) s
        edge = math.erf(cut / math.sqrt(2.0))
        scale = std / truncated_std(cut)
        out.uniform_(-edge, edge, generator=g)
        out.erfinv_().mul_(math.sqrt(2.0) * scale).clamp_(-cut * scale, cut * scale)


def _blocks(numel: int, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """``(j, block start, block stop)`` of the blocks that overlap ``[start, stop)``."""
    for j in range(start // BLOCK, (stop - 1) // BLOCK + 1 if stop > start else start // BLOCK):
        yield j, j * BLOCK, min((j + 1) * BLOCK, numel)


def _range(numel: int, start: int, stop: int | None) -> tuple[int, int]:
    stop = numel if stop is None else stop
    if not (isinstance(numel, int) and numel >= 0):
        raise ValueError(f"numel must be an int >= 0, got {numel!r}")
    if not 0 <= start <= stop <= numel:
        raise ValueError(f"range [{start}, {stop}) is not inside the {numel} elements of the tensor")
    return start, stop


# ----------------------------------------------------------------------------- ranges
def draw(seed: int, name: str, numel: int, start: int = 0, stop: int | None = None, *,
         distribution: str = "normal", std: float = 1.0, cut: float = _CUT) -> torch.Tensor:
    """Elements ``[start, stop)`` of the flattened ``numel``-element parameter ``name``, as a
    new 1-D float32 CPU tensor (only the blocks overlapping the range are drawn). ``cut``: where
    a ``truncated_normal`` is cut, in its standard deviations (default 2)."""
    _check(distribution, std, cut)
    start, stop = _range(numel, start, stop)
    return fill_(torch.empty(stop - start, dtype=torch.float32), seed, name, numel, start,
                 distribution=distribution, std=std, cut=cut)


def fill_(flat: torch.Tensor, seed: int, name: str, numel: int | None = None, start: int = 0, *,
          distribution: str = "normal", std: float = 1.0, cut: float = _CUT) -> torch.Tensor:
    """Write elements ``[start, start + len(flat))`` of parameter ``name``'s stream (``numel``
    elements in all, default ``len(flat)``) into the 1-D tensor ``flat``, in place, in its dtype
    and on its device.

    Whole blocks go straight into a contiguous float32 CPU ``flat``; others pass through a
    block-sized float32 buffer, so the extra memory is one block per thread. The blocks are
    shared out to ``torch.get_num_threads()`` Python threads (each block is drawn serially by one
    of them, so the bits do not depend on how many there are)."""
    if not isinstance(flat, torch.Tensor) or flat.dim() != 1 or not flat.is_floating_point():
        raise TypeError("fill_ expects a 1-D floating-point tensor (use tensor.view(-1))")
    _check(distribution, std, cut)
    numel = flat.numel() if numel is None else numel
    start, stop = _range(numel, start, start + flat.numel())
    key = stream_key(seed, name)
    direct = flat.dtype == torch.float32 and flat.device.type == "cpu" and flat.is_contiguous()

    def run(blocks: list[tuple[int, int, int]]) -> None:
        buf = None
        with torch.no_grad():  # grad mode is per thread
            for j, a, b in blocks:
                lo, hi = max(a, start), min(b, stop)
                if direct and (lo, hi) == (a, b):
                    _draw_block(flat[a - start:b - start], block_generator(key, j), distribution, std, cut)
                    continue
                if buf is None or buf.numel() != b - a:
                    buf = torch.empty(b - a, dtype=torch.float32)
                _draw_block(buf, block_generator(key, j), distribution, std, cut)
                flat[lo - start:hi - start].copy_(buf[lo - a:hi - a])

    blocks = list(_blocks(numel, start, stop))
    workers = min(torch.get_num_threads(), len(blocks))
    if workers <= 1:
        run(blocks)
    else:
        with concurrent.futures.ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, [blocks[w::workers] for w in range(workers)]))
    return flat


# ----------------------------------------------------------------------------- whole matrices
@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch thread (restored after), so that LAPACK/BLAS and reductions
    give the same bits whatever ``torch.get_num_threads()`` is."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def orthogonal(seed: int, name: str, rows: int, cols: int, blocks: int = 1, gain: float = 1.0) -> torch.Tensor:
    """A ``rows x cols`` float64 CPU matrix, ``blocks`` row blocks each (semi-)orthogonal times
    ``gain`` (Saxe et al. 2014), from parameter ``name``'s stream.

    The stream's first ``rows * cols`` elements (N(0, 1)) form a Gaussian matrix ``G``; block
    ``b`` is the Q factor of the QR of its rows (of their transpose when the block is wide), with
    the signs of R's diagonal folded in, which makes it Haar-distributed (Mezzadri 2007). The QR
    runs in float64 on one thread: the same bits for every layout and thread count. Each rank of
    a sharded tensor computes the whole matrix (O(rows cols min(rows/blocks, cols)) flops) and
    keeps its part."""
    if blocks < 1 or rows % blocks:
        raise ValueError(f"{rows} rows cannot be split into {blocks} equal blocks")
    g = draw(seed, name, rows * cols).view(rows, cols)
    r = rows // blocks
    parts = []
    with one_thread():
        for b in range(blocks):
            a = g[b * r:(b + 1) * r].double()
            tall = r >= cols
            q, rr = torch.linalg.qr(a if tall else a.T)
            d = torch.diagonal(rr)
            q = q * torch.where(d == 0, torch.ones_like(d), torch.sign(d))
            parts.append(q if tall else q.T)
    return torch.cat(parts).mul_(gain)
