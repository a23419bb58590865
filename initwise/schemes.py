"""In-place weight initializers, torch-style: each fills a tensor and returns it.

Every variance-preserving scheme is a special case of :func:`variance_scaling_`, which draws
with variance ``scale / n`` where ``n`` is ``fan_in``, ``fan_out`` or their mean:

=========================  =================  ==========  ==================================
scheme                     variance           mode        paper
=========================  =================  ==========  ==================================
xavier (glorot)            gain^2 * 2/(fi+fo)  fan_avg    Glorot & Bengio 2010, eq. 12/16
kaiming (he), slope ``a``  2 / ((1+a^2) n)     fan_in     He et al. 2015, eq. 10/15
lecun                      1 / fan_in          fan_in     LeCun et al. 1998; Klambauer 2017
orthogonal                 singular values = gain          Saxe et al. 2014
=========================  =================  ==========  ==================================

Each comes in three distributions with the SAME variance ``std^2``:

* ``normal``: ``N(0, std^2)``;
* ``uniform``: ``U(-b, b)`` with ``b = sqrt(3) * std`` (a uniform on ``[-b, b]`` has variance
  ``b^2 / 3``);
* ``truncated_normal``: a normal cut at ``+-2`` of its own scale ``s`` and rescaled,
  ``s = std / 0.87962566103423978``, since a standard normal truncated at ``+-2`` has standard
  deviation ``0.87962566...``. The samples lie within ``+-2 s``. (Keras's ``*_normal``
  initializers are these truncated normals; initwise's ``*_normal`` are plain normals with the
  same variance.)

``mode="fan_geo_avg"`` uses ``n = sqrt(fan_in * fan_out)`` (JAX's ``variance_scaling``).

All random functions accept ``generator=`` (a ``torch.Generator`` on the tensor's device) or
``seed=`` (an int: ``generator=torch.Generator(tensor.device).manual_seed(seed)``) and keep the
tensor's dtype (float32/float64 tensors are filled directly; float16/bfloat16 ones get float32
samples, rounded on copy). Every number is checked first: a gain, scale, fan or std that is not
a finite positive number (a bool, a list, NaN, inf), or that gives weights the dtype cannot
hold (overflow to inf, underflow to 0), is a ``ValueError`` naming the argument.

torch.nn.init's remaining functions (``uniform_``, ``normal_``, ``trunc_normal_``, ``ones_``,
``eye_``, ``dirac_``, ``sparse_``) are in :mod:`initwise.fills`, re-exported here and in the
registry; they fill the tensor directly, as torch does, and give torch's values for the same
generator state.
They run under ``torch.no_grad()``, so leaf parameters with ``requires_grad`` are filled without
an autograd record. Meta tensors are left as they are (nothing to fill); a tensor with no
elements is left as it is with a warning; integer tensors raise ``ValueError``.
"""
from __future__ import annotations

import difflib
import math
from typing import Callable

import torch

from .checks import check_std_fits, fans_pair, fillable, generator_for, integer, number
from .fans import fans as _fans
from .fills import dirac_, eye_, normal_, ones_, sparse_, trunc_normal_, uniform_
from .gains import gain as _gain

__all__ = [
    "TRUNCATED_NORMAL_STD", "variance_scaling_std", "variance_scaling_",
    "xavier_normal_", "xavier_uniform_", "xavier_truncated_normal_",
    "kaiming_normal_", "kaiming_uniform_", "kaiming_truncated_normal_",
    "he_normal_", "he_uniform_", "he_truncated_normal_",
    "lecun_normal_", "lecun_uniform_", "lecun_truncated_normal_",
    "orthogonal_", "delta_orthogonal_", "zeros_", "constant_", "small_normal_", "small_uniform_",
    "ones_", "eye_", "dirac_", "uniform_", "normal_", "trunc_normal_", "sparse_",
    "get_initializer", "canonical_name", "SCHEME_NAMES",
]

#: Standard deviation of a standard normal truncated to [-2, 2].
TRUNCATED_NORMAL_STD = 0.87962566103423978
_TRUNCATION = 2.0
_MODES = ("fan_in", "fan_out", "fan_avg", "fan_geo_avg")
_DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")

Fans = tuple[int, int]


def _check_gain(gain: float, what: str) -> float:
    g = number(gain, "gain", what, positive=True)
    if not (math.isfinite(g * g) and g * g > 0):
        raise ValueError(f"{what}: gain {gain!r} is out of range (its square is {g * g!r}); "
                         "use a gain between 1e-150 and 1e150")
    return g


def _check_choice(value: object, name: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"{what}: {name} must be one of {', '.join(choices)}; got {value!r}")
    return value  # type: ignore[return-value]


def _fill_(tensor: torch.Tensor, std: float, distribution: str, generator: torch.Generator | None) -> torch.Tensor:
    """Fill ``tensor`` with samples of mean 0 and standard deviation ``std`` from ``distribution``.

    float32/float64 tensors are filled directly; half-precision ones get float32 samples, copied.
    """
    direct = tensor.dtype in (torch.float32, torch.float64)
    out = tensor if direct else torch.empty(tensor.shape, dtype=torch.float32, device=tensor.device)
    with torch.no_grad():
        if distribution == "normal":
            out.normal_(0.0, std, generator=generator)
        elif distribution == "uniform":
            bound = math.sqrt(3.0) * std
            out.uniform_(-bound, bound, generator=generator)
        else:  # truncated normal by inverse CDF: u ~ U(Phi(-2), Phi(2)), x = sqrt(2) erfinv(2u - 1)
            lo = 0.5 * (1.0 + math.erf(-_TRUNCATION / math.sqrt(2.0)))
            out.uniform_(2.0 * lo - 1.0, 1.0 - 2.0 * lo, generator=generator)
            out.erfinv_().mul_(math.sqrt(2.0) * std / TRUNCATED_NORMAL_STD)
            bound = _TRUNCATION * std / TRUNCATED_NORMAL_STD
            out.clamp_(-bound, bound)
        return tensor if direct else tensor.copy_(out)


def variance_scaling_std(scale: float, mode: str, fan_in: int | float, fan_out: int | float) -> float:
    """``sqrt(scale / n)`` with ``n = fan_in``, ``fan_out``, ``(fan_in + fan_out) / 2``
    (``"fan_avg"``) or ``sqrt(fan_in * fan_out)`` (``"fan_geo_avg"``). ``ValueError`` unless
    ``scale`` and both fans are finite positive numbers and the result is finite and > 0."""
    what = "variance_scaling_std"
    scale = number(scale, "scale", what, positive=True)
    _check_choice(mode, "mode", _MODES, what)
    fan_in, fan_out = fans_pair((fan_in, fan_out), what)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2,
         "fan_geo_avg": math.sqrt(fan_in) * math.sqrt(fan_out)}[mode]
    std = math.sqrt(scale / n)
    if not (math.isfinite(std) and std > 0):
        raise ValueError(f"{what}: scale {scale!r} over {mode} {n!r} gives std {std!r}, not a finite "
                         "positive number")
    return std


def variance_scaling_(
    tensor: torch.Tensor,
    scale: float = 1.0,
    mode: str = "fan_in",
    distribution: str = "normal",
    generator: torch.Generator | None = None,
    fans: Fans | None = None,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Fill ``tensor`` with zero-mean samples of variance ``scale / n`` (in place).

    ``n`` is ``fan_in`` (``mode="fan_in"``), ``fan_out``, ``(fan_in + fan_out) / 2``
    (``"fan_avg"``) or ``sqrt(fan_in * fan_out)`` (``"fan_geo_avg"``), computed from the shape
    ``(out, in, *kernel)`` unless ``fans=(fan_in, fan_out)`` is given (use
    :func:`initwise.fans` with the layer for grouped/transposed convolutions, embeddings and
    fused gate weights). ``distribution`` is ``"normal"``, ``"uniform"`` (bound
    ``sqrt(3) * std``) or ``"truncated_normal"`` (cut at ``+-2`` and rescaled so its variance is
    the target). Same as Keras / JAX ``variance_scaling``.
    """
    number(scale, "scale", "variance_scaling_", positive=True)
    return _scaled(tensor, scale, mode, distribution, generator, fans, seed, "variance_scaling_",
                   f"scale {scale!r}")


def _scaled(tensor: torch.Tensor, scale: float, mode: str, distribution: str,
            generator: torch.Generator | None, fans: Fans | None, seed: int | None, what: str,
            source: str) -> torch.Tensor:
    """variance_scaling_ for ``what`` (the public function's name, for the messages);
    ``source`` names the argument that set ``scale`` (a gain, or the scale itself)."""
    _check_choice(distribution, "distribution", _DISTRIBUTIONS, what)
    _check_choice(mode, "mode", _MODES, what)
    if fans is not None:
        fans = fans_pair(fans, what)
    if not math.isfinite(scale) or not scale > 0:
        raise ValueError(f"{what}: {source} gives the variance scale {scale!r}, not a finite positive number")
    if not fillable(tensor, what):
        return tensor
    generator = generator_for(tensor, generator, seed, what)
    fan_in, fan_out = fans if fans is not None else _fans(tensor)
    try:
        std = variance_scaling_std(scale, mode, fan_in, fan_out)
    except ValueError as exc:
        raise ValueError(f"{what}: {source} with fans ({fan_in}, {fan_out}): {exc}") from None
    check_std_fits(std, tensor, what, f"{source} with {mode} of fans ({fan_in}, {fan_out})")
    return _fill_(tensor, std, distribution, generator)


# ------------------------------------------------------------------------------- Xavier / Glorot
def xavier_normal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None,
                   fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """Glorot & Bengio (2010): ``N(0, std^2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    gain = _check_gain(gain, "xavier_normal_")
    return _scaled(tensor, gain * gain, "fan_avg", "normal", generator, fans, seed, "xavier_normal_",
                   f"gain {gain!r}")


def xavier_uniform_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None,
                    fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """Glorot & Bengio (2010) eq. 16: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    gain = _check_gain(gain, "xavier_uniform_")
    return _scaled(tensor, gain * gain, "fan_avg", "uniform", generator, fans, seed, "xavier_uniform_",
                   f"gain {gain!r}")


def xavier_truncated_normal_(tensor: torch.Tensor, gain: float = 1.0, generator: torch.Generator | None = None,
                             fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """Glorot & Bengio (2010) as a truncated normal with variance ``gain^2 * 2 / (fan_in + fan_out)``."""
    gain = _check_gain(gain, "xavier_truncated_normal_")
    return _scaled(tensor, gain * gain, "fan_avg", "truncated_normal", generator, fans, seed, "xavier_truncated_normal_",
                   f"gain {gain!r}")


# ------------------------------------------------------------------------------- Kaiming / He
def _kaiming_scale(a: float, nonlinearity: str, what: str) -> float:
    a = number(a, "a", what)
    if not isinstance(nonlinearity, str):
        raise ValueError(f"{what}: nonlinearity must be an activation name such as 'relu', got "
                         f"{type(nonlinearity).__name__} {nonlinearity!r}")
    if nonlinearity.strip().lower() == "leaky_relu":
        return _gain("leaky_relu", negative_slope=a) ** 2
    return _gain(nonlinearity) ** 2


def kaiming_normal_(tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: torch.Generator | None = None, fans: Fans | None = None,
                    *, seed: int | None = None) -> torch.Tensor:
    """He et al. (2015) eq. 10: ``N(0, gain^2 / n)``; for (leaky) ReLU ``gain^2 = 2 / (1 + a^2)``.

    ``n`` is ``fan_in`` (forward signal, eq. 10) or ``fan_out`` (backward signal, eq. 14).
    The gain of other nonlinearities is initwise's ``1 / sqrt(E[phi(z)^2])`` (see
    :func:`initwise.gain`), which for tanh and selu differs from torch's ``calculate_gain``.
    """
    what = "kaiming_normal_"
    return _scaled(tensor, _kaiming_scale(a, nonlinearity, what), mode, "normal", generator, fans, seed,
                   what, f"nonlinearity {nonlinearity!r} (a={a!r})")


def kaiming_uniform_(tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: torch.Generator | None = None, fans: Fans | None = None,
                     *, seed: int | None = None) -> torch.Tensor:
    """He et al. (2015) as ``U(-b, b)``, ``b = gain * sqrt(3 / n)`` (variance ``gain^2 / n``)."""
    what = "kaiming_uniform_"
    return _scaled(tensor, _kaiming_scale(a, nonlinearity, what), mode, "uniform", generator, fans, seed,
                   what, f"nonlinearity {nonlinearity!r} (a={a!r})")


def kaiming_truncated_normal_(tensor: torch.Tensor, a: float = 0.0, mode: str = "fan_in",
                              nonlinearity: str = "leaky_relu", generator: torch.Generator | None = None,
                              fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """He et al. (2015) as a truncated normal with variance ``gain^2 / n``."""
    what = "kaiming_truncated_normal_"
    return _scaled(tensor, _kaiming_scale(a, nonlinearity, what), mode, "truncated_normal", generator, fans, seed,
                   what, f"nonlinearity {nonlinearity!r} (a={a!r})")


he_normal_ = kaiming_normal_
he_uniform_ = kaiming_uniform_
he_truncated_normal_ = kaiming_truncated_normal_


# ------------------------------------------------------------------------------- LeCun
def lecun_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None,
                  fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """LeCun et al. (1998): ``N(0, 1 / fan_in)``; with SELU it makes a self-normalizing net
    (Klambauer et al. 2017)."""
    return _scaled(tensor, 1.0, "fan_in", "normal", generator, fans, seed, "lecun_normal_", "scale 1")


def lecun_uniform_(tensor: torch.Tensor, generator: torch.Generator | None = None,
                   fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """LeCun as ``U(-b, b)``, ``b = sqrt(3 / fan_in)``."""
    return _scaled(tensor, 1.0, "fan_in", "uniform", generator, fans, seed, "lecun_uniform_", "scale 1")


def lecun_truncated_normal_(tensor: torch.Tensor, generator: torch.Generator | None = None,
                            fans: Fans | None = None, *, seed: int | None = None) -> torch.Tensor:
    """LeCun as a truncated normal with variance ``1 / fan_in``."""
    return _scaled(tensor, 1.0, "fan_in", "truncated_normal", generator, fans, seed, "lecun_truncated_normal_", "scale 1")


# ------------------------------------------------------------------------------- orthogonal
def _orthogonal_matrix(rows: int, cols: int, generator: torch.Generator | None,
                       device: torch.device) -> torch.Tensor:
    """A ``rows x cols`` float64 matrix with orthonormal columns (rows >= cols) or rows.

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q, which makes Q
    Haar-distributed (Mezzadri 2007).
    """
    big, small = max(rows, cols), min(rows, cols)
    a = torch.empty(big, small, dtype=torch.float32, device=device).normal_(generator=generator)
    q, r = torch.linalg.qr(a.double())
    d = torch.diagonal(r)
    q = q * torch.where(d == 0, 1.0, torch.sign(d))
    return q if rows >= cols else q.T


def orthogonal_(tensor: torch.Tensor, gain: float = 1.0, blocks: int = 1,
                generator: torch.Generator | None = None, *, seed: int | None = None) -> torch.Tensor:
    """Saxe et al. (2014): a (semi-)orthogonal matrix scaled by ``gain``; all singular values
    equal ``gain``.

    The tensor is viewed as a matrix ``(rows, prod(other dims))``. A tall matrix gets
    ``W^T W = gain^2 I``, a wide one ``W W^T = gain^2 I``. With ``blocks > 1`` the rows are split
    into ``blocks`` equal blocks (the gates of an LSTM/GRU ``weight_hh``, the q/k/v of an
    attention ``in_proj_weight``), each made orthogonal on its own.
    """
    gain = _check_gain(gain, "orthogonal_")
    integer(blocks, "blocks", "orthogonal_", minimum=1)
    if isinstance(tensor, torch.Tensor) and tensor.dim() < 2:
        raise ValueError(
            f"orthogonal_ needs a tensor with at least 2 dimensions, got shape {list(tensor.shape)}"
        )
    if not fillable(tensor, "orthogonal_"):
        return tensor
    check_std_fits(gain, tensor, "orthogonal_", f"gain {gain!r}")  # every entry is at most gain
    generator = generator_for(tensor, generator, seed, "orthogonal_")
    rows = tensor.shape[0]
    if rows % blocks:
        raise ValueError(
            f"orthogonal_: {rows} rows of shape {list(tensor.shape)} cannot be split into {blocks} equal blocks"
        )
    cols = tensor.numel() // rows
    parts = [_orthogonal_matrix(rows // blocks, cols, generator, tensor.device) for _ in range(blocks)]
    with torch.no_grad():
        return tensor.copy_((torch.cat(parts) * gain).reshape(tensor.shape))


def delta_orthogonal_(tensor: torch.Tensor, gain: float = 1.0,
                      generator: torch.Generator | None = None, blocks: int = 1, *,
                      seed: int | None = None) -> torch.Tensor:
    """Xiao et al. (2018): a convolution kernel that is zero except at its spatial centre, where
    it is an orthogonal ``(out, in)`` matrix times ``gain``. The convolution then preserves the
    norm of its input exactly when ``out >= in`` (dynamical isometry for deep CNNs).

    For a grouped convolution pass ``blocks=groups``: the weight ``(out, in/groups, *k)`` holds
    one ``(out/groups, in/groups)`` matrix per group (consecutive rows), each made orthogonal
    on its own. Kernel sizes must be odd (a centre tap exists).
    """
    if isinstance(tensor, torch.Tensor) and not 3 <= tensor.dim() <= 5:
        raise ValueError(
            "delta_orthogonal_ needs a convolution weight (out, in, *kernel) with 1 to 3 spatial "
            f"dimensions, got shape {list(tensor.shape)}"
        )
    gain = _check_gain(gain, "delta_orthogonal_")
    integer(blocks, "blocks", "delta_orthogonal_", minimum=1)
    if isinstance(tensor, torch.Tensor) and any(k % 2 == 0 for k in tensor.shape[2:]):
        raise ValueError(
            f"delta_orthogonal_ needs odd kernel sizes (a centre tap), got shape {list(tensor.shape)}"
        )
    if not fillable(tensor, "delta_orthogonal_"):
        return tensor
    check_std_fits(gain, tensor, "delta_orthogonal_", f"gain {gain!r}")  # every entry is at most gain
    generator = generator_for(tensor, generator, seed, "delta_orthogonal_")
    out_ch, in_ch, *kernel = tensor.shape
    if out_ch % blocks:
        raise ValueError(f"delta_orthogonal_: {out_ch} output channels cannot be split into {blocks} equal blocks")
    centre = (slice(None), slice(None), *(k // 2 for k in kernel))
    parts = [_orthogonal_matrix(out_ch // blocks, in_ch, generator, tensor.device) for _ in range(blocks)]
    with torch.no_grad():
        tensor.zero_()
        tensor[centre] = (torch.cat(parts) * gain).to(tensor.dtype)
    return tensor


# ------------------------------------------------------------------------------- trivial ones
def zeros_(tensor: torch.Tensor) -> torch.Tensor:
    """Fill with 0. As the only init of a layer's weights it keeps all its units identical
    (symmetry is never broken): shown here as the failure it is, and right for biases."""
    if fillable(tensor, "zeros_"):
        with torch.no_grad():
            tensor.zero_()
    return tensor


def constant_(tensor: torch.Tensor, value: float) -> torch.Tensor:
    """Fill with ``value`` (e.g. 1 for a norm layer's scale; torch calls the argument ``val``).
    ``ValueError`` when ``value`` is not a finite number or the dtype cannot hold it."""
    value = number(value, "value", "constant_")
    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and abs(value) > torch.finfo(tensor.dtype).max:
        raise ValueError(f"constant_: value {value!r} is beyond what {tensor.dtype} holds "
                         f"(max {torch.finfo(tensor.dtype).max:.3g})")
    if fillable(tensor, "constant_"):
        with torch.no_grad():
            tensor.fill_(value)
    return tensor


def small_normal_(tensor: torch.Tensor, std: float = 0.01, generator: torch.Generator | None = None, *,
                  seed: int | None = None) -> torch.Tensor:
    """``N(0, std^2)`` with a fixed small ``std`` regardless of the fans: the classic "small random
    numbers" init, whose signal shrinks by ``std * sqrt(fan_in)`` per layer and vanishes in deep
    networks (Glorot & Bengio 2010, section 4.2)."""
    std = number(std, "std", "small_normal_", positive=True)
    if fillable(tensor, "small_normal_"):
        check_std_fits(std, tensor, "small_normal_", f"std {std!r}")
        _fill_(tensor, std, "normal", generator_for(tensor, generator, seed, "small_normal_"))
    return tensor


def small_uniform_(tensor: torch.Tensor, bound: float = 0.01, generator: torch.Generator | None = None, *,
                   seed: int | None = None) -> torch.Tensor:
    """``U(-bound, bound)`` with a fixed small bound regardless of the fans (see small_normal_)."""
    bound = number(bound, "bound", "small_uniform_", positive=True)
    if fillable(tensor, "small_uniform_"):
        check_std_fits(bound, tensor, "small_uniform_", f"bound {bound!r}")
        _fill_(tensor, bound / math.sqrt(3.0), "uniform", generator_for(tensor, generator, seed, "small_uniform_"))
    return tensor


# ------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., torch.Tensor]] = {
    "zeros": zeros_,
    "constant": constant_,
    "small_normal": small_normal_,
    "small_uniform": small_uniform_,
    "xavier_normal": xavier_normal_,
    "xavier_uniform": xavier_uniform_,
    "xavier_truncated_normal": xavier_truncated_normal_,
    "kaiming_normal": kaiming_normal_,
    "kaiming_uniform": kaiming_uniform_,
    "kaiming_truncated_normal": kaiming_truncated_normal_,
    "lecun_normal": lecun_normal_,
    "lecun_uniform": lecun_uniform_,
    "lecun_truncated_normal": lecun_truncated_normal_,
    "orthogonal": orthogonal_,
    "delta_orthogonal": delta_orthogonal_,
    "variance_scaling": variance_scaling_,
    # torch.nn.init parity (initwise.fills)
    "ones": ones_,
    "eye": eye_,
    "dirac": dirac_,
    "uniform": uniform_,
    "normal": normal_,
    "trunc_normal": trunc_normal_,
    "sparse": sparse_,
}
SCHEME_NAMES: tuple[str, ...] = tuple(_REGISTRY)

_SCHEME_ALIASES = {
    # short names
    "zero": "zeros", "small": "small_normal", "xavier": "xavier_normal", "glorot": "xavier_normal",
    "he": "kaiming_normal", "kaiming": "kaiming_normal", "lecun": "lecun_normal",
    # He and Glorot spellings (Keras names among them)
    "he_normal": "kaiming_normal", "he_uniform": "kaiming_uniform",
    "he_truncated_normal": "kaiming_truncated_normal",
    "glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform",
    "glorot_truncated_normal": "xavier_truncated_normal",
    # Keras / JAX names of the torch.nn.init parity functions
    "one": "ones", "identity": "eye", "random_normal": "normal", "random_uniform": "uniform",
    "truncated_normal": "trunc_normal",
}


def canonical_name(name: str) -> str:
    """The registry's name for ``name``: case-insensitive, trailing ``_`` allowed, aliases
    resolved (``"he_normal_"`` -> ``"kaiming_normal"``, ``"glorot_uniform"`` -> ``"xavier_uniform"``).
    """
    if not isinstance(name, str):
        raise TypeError(f"a scheme name must be a string, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_").rstrip("_")
    key = _SCHEME_ALIASES.get(key, key)
    if key in _REGISTRY:
        return key
    known = sorted(set(_REGISTRY) | set(_SCHEME_ALIASES))
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"unknown initializer {name!r}.{hint} Known names: {', '.join(known)}")


def get_initializer(name: str) -> Callable[..., torch.Tensor]:
    """The in-place initializer called ``name`` (our names, torch-style names with or without the
    trailing ``_``, short names ``xavier``/``he``/``lecun``/``small``, and the Keras names
    ``glorot_uniform``, ``glorot_normal``, ``he_normal``, ``he_uniform``, ``lecun_normal``,
    ``lecun_uniform``, ``orthogonal``, ``zeros``, ``ones``, ``identity``, ``random_normal``,
    ``random_uniform``, ``truncated_normal``, ``variance_scaling``), and torch.nn.init's
    ``uniform_``, ``normal_``, ``trunc_normal_``, ``ones_``, ``eye_``, ``dirac_``, ``sparse_``.

    Note: Keras's ``*_normal`` draw from a truncated normal; the function returned here draws from
    a plain normal with the same variance (use the ``*_truncated_normal`` names for Keras's
    distribution).
    """
    return _REGISTRY[canonical_name(name)]
