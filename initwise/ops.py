"""What a recorded torch operation does to the signal: the vocabulary of :mod:`initwise.graph`.

Every function or tensor method the forward pass calls is classified by its bare name (leading
and trailing underscores stripped: ``__iadd__`` and ``add_`` are ``add``) into one node kind:

=============  ===============================================================================
kind           operations
=============  ===============================================================================
elementwise    pointwise functions of one tensor and numbers: ``relu``, ``tanh``, ``x * 0.5``,
               ``pow``, ``erf``, ``x.float()``; chains of them become one activation (``act``)
add            sums and differences of tensors (residual adds, embedding sums, bias adds)
mul            products of tensors (gates, layer scales, masks) and quotients
linear         ``F.linear``, ``matmul``/``@``/``mm``/``bmm``/``addmm``/``einsum``/``conv*`` with a
               parameter as an operand (a weight of a layer initwise does not know)
matmul         the same products between two signals (attention scores ``q @ k^T``)
attention      ``F.scaled_dot_product_attention``
softmax        ``softmax``, ``log_softmax``, ``softmin``
norm           ``layer_norm``, ``rms_norm``, ``batch_norm``, ``group_norm``, ``instance_norm``,
               ``normalize``
reduce         means, sums and maxima over dimensions, pooling
shape          moves values without changing them: views, reshapes, permutes, indexing, slicing,
               concatenation (``cat``), padding, dropout, interpolation, device/dtype moves
scatter        ``index_add``, ``scatter_add``, ``index_put``: rows written into another tensor
embedding      ``F.embedding`` (a parameter looked up by ids)
other          anything else (its output is followed, its effect on the scale is measured)
=============  ===============================================================================
"""
from __future__ import annotations

import math
import re
from typing import Any

__all__ = ["bare", "classify", "in_place", "linear_fans", "reads_transposed", "ELEMENTWISE", "ACTIVATION_FUNCS",
           "CASTS", "UNINITIALIZED"]

_words = str.split

#: Pointwise functions of one tensor (plus numbers).
ACTIVATION_FUNCS = frozenset(_words("""
relu relu6 gelu silu mish elu selu celu leaky_relu softplus softsign hardtanh hardswish hardsigmoid
logsigmoid tanhshrink softshrink hardshrink threshold rrelu sigmoid tanh
"""))
ELEMENTWISE = ACTIVATION_FUNCS | frozenset(_words("""
abs absolute neg negative positive pos exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal
sin cos tan sinh cosh asinh atan arctan erf erfc erfinv sign sgn logit clamp clamp_min clamp_max clip
nan_to_num add radd iadd sub rsub isub mul rmul imul div truediv rtruediv itruediv true_divide idiv
floordiv pow rpow ipow float_power maximum minimum fmax fmin float half double bfloat16 to type_as
contiguous clone detach
"""))
#: elementwise calls that only cast or copy: the values stay as they are
CASTS = frozenset(_words("float half double bfloat16 to type_as contiguous clone detach"))
_ADD = frozenset(_words("add radd iadd sub rsub isub"))
_MUL = frozenset(_words("mul rmul imul div truediv rtruediv itruediv true_divide idiv"))
_LINEAR = frozenset(_words("""
linear matmul rmatmul imatmul mm bmm addmm baddbmm addbmm einsum conv1d conv2d conv3d conv_transpose1d
conv_transpose2d conv_transpose3d bilinear tensordot inner mv addmv grouped_mm
"""))
_NORM = frozenset(_words("layer_norm rms_norm batch_norm group_norm instance_norm normalize local_response_norm"))
_SOFTMAX = frozenset(_words("softmax log_softmax softmin"))
_REDUCE = frozenset(_words("""
mean sum amax amin max min nanmean logsumexp avg_pool1d avg_pool2d avg_pool3d max_pool1d max_pool2d
max_pool3d max_pool1d_with_indices max_pool2d_with_indices max_pool3d_with_indices adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d adaptive_max_pool3d
adaptive_max_pool1d_with_indices adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices
lp_pool1d lp_pool2d lp_pool3d cumsum
"""))
_SHAPE = frozenset(_words("""
view view_as reshape reshape_as flatten unflatten permute transpose t mT T contiguous squeeze unsqueeze
expand expand_as repeat repeat_interleave tile narrow select getitem split split_with_sizes chunk unbind
tensor_split cat concat concatenate stack hstack vstack movedim moveaxis swapaxes swapdims flip roll
index_select gather take_along_dim masked_fill masked_select pad interpolate upsample upsample_nearest
upsample_bilinear pixel_shuffle pixel_unshuffle channel_shuffle dropout dropout1d dropout2d dropout3d
alpha_dropout feature_alpha_dropout as_strided unfold diagonal tril triu where cpu cuda
"""))
_SCATTER = frozenset(_words("index_add scatter_add scatter scatter_reduce index_put index_copy masked_scatter setitem"))
#: Operations whose output does not depend on the values of their tensor inputs.
_FACTORY = frozenset(_words("zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros new_ones new_empty new_full new_tensor"))
#: factories whose output holds whatever memory it got: no statistic of its values means anything
UNINITIALIZED = frozenset(_words("empty_like new_empty"))
#: Metadata, comparisons and index computations: not a use of the values as a signal.
_IGNORE = frozenset(_words("""
getattr get size dim ndimension numel shape dtype device stride is_contiguous is_floating_point item tolist
bool len gt lt ge le eq ne greater less any all isnan isinf isfinite argmax argmin argsort nonzero
count_nonzero requires_grad_ data_ptr element_size format repr set_grad_enabled is_complex type
long int short byte char is_nonzero numpy storage_offset untyped_storage
"""))


def bare(func: Any) -> str:
    """``func``'s name without leading or trailing underscores (``__iadd__`` -> ``iadd``)."""
    name = getattr(func, "__name__", None) or str(func)
    return name.strip("_")


def in_place(func: Any, kwargs: dict) -> bool:
    """Whether the call writes into its first argument (``add_``, ``__iadd__``) or ``out=``."""
    name = getattr(func, "__name__", "") or ""
    return ("out" in kwargs and kwargs["out"] is not None) or (name.endswith("_") and not name.startswith("_")) \
        or bool(re.match(r"__i[a-z]+__$", name))


def classify(func: Any) -> str:
    """The node kind of a call of ``func`` (before looking at which operands are signals)."""
    name = bare(func)
    if name in _IGNORE:
        return "ignore"
    if name in _FACTORY:
        return "factory"
    if name in _LINEAR:
        return "linear"
    if name == "embedding" or name == "embedding_bag":
        return "embedding"
    if name == "scaled_dot_product_attention":
        return "attention"
    if name in _NORM:
        return "norm"
    if name in _SOFTMAX:
        return "softmax"
    if name in _SCATTER:
        return "scatter"
    if name in _ADD:
        return "add"
    if name in _MUL:
        return "mul"
    if name in ELEMENTWISE:
        return "elementwise"
    if name in _REDUCE:
        return "reduce"
    if name in _SHAPE:
        return "shape"
    return "other"


def linear_fans(name: str, args: tuple, kwargs: dict, weight_pos: int) -> tuple[float, float] | None:
    """``(fan_in, fan_out)`` of the parameter at position ``weight_pos`` of a linear call: the
    number of its elements summed into one output element, and the number of output elements
    each input element reaches through it, read from the shapes of the call.

    ``F.linear(x, W)``: W ``(out, in)`` -> ``(in, out)``. ``x @ W`` / ``addmm(b, x, W)``: W ``(..., k, n)``
    -> ``(k, n)``; ``W @ x``: W ``(..., m, k)`` -> ``(k, m)``. ``einsum``: the product of the sizes of
    W's indices that do not appear in the output, and of those that do. ``conv*``: the
    :func:`initwise.fans` rule of the layer (groups and stride from the arguments).
    """
    w = args[weight_pos]
    shape = tuple(w.shape)
    if name == "linear":
        if len(shape) == 1:
            return float(shape[0]), 1.0
        return float(shape[-1]), float(shape[-2])
    if name == "grouped_mm":  # experts' weights (E, in, out): x @ W[e] for each group of rows
        return float(shape[-2]), float(shape[-1])
    if name in ("matmul", "rmatmul", "imatmul", "mm", "bmm", "mv"):
        other = args[1 - weight_pos] if len(args) > 1 else None
        if len(shape) == 1:
            return float(shape[0]), 1.0
        if reads_transposed(name, weight_pos):  # x @ W
            return float(shape[-2]), float(shape[-1])
        return float(shape[-1]), float(shape[-2]) if other is not None else 1.0
    if name in ("addmm", "baddbmm", "addbmm", "addmv"):
        if weight_pos == 0:  # the added term: a bias
            return None
        if reads_transposed(name, weight_pos):  # addmm(b, x, W)
            return float(shape[-2]), float(shape[-1])
        return float(shape[-1]), float(shape[-2])
    if name == "einsum":
        return _einsum_fans(args, weight_pos)
    if name.startswith("conv_transpose"):
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        d = len(shape) - 2
        stride = _tuple(_arg(args, kwargs, 3, "stride", 1), d)
        k = math.prod(shape[2:])
        return shape[0] / groups * k / math.prod(stride), float(shape[1] * k)
    if name.startswith("conv"):
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        d = len(shape) - 2
        stride = _tuple(_arg(args, kwargs, 3, "stride", 1), d)
        k = math.prod(shape[2:])
        return float(shape[1] * k), shape[0] / groups * k / math.prod(stride)
    if name == "tensordot":
        return float(shape[0]) if shape else 1.0, float(math.prod(shape[1:]) or 1)
    return float(shape[-1]) if shape else 1.0, float(shape[0]) if len(shape) > 1 else 1.0


def reads_transposed(name: str, weight_pos: int) -> bool:
    """Whether a linear call reads the weight at ``weight_pos`` as ``(..., inputs, outputs)``
    (``x @ W``, ``addmm(b, x, W)``, fused experts' ``grouped_mm``: GPT-2's ``Conv1D``), so that
    its output units are the weight's last dim, not its first as in ``F.linear`` and ``conv*``."""
    if name in ("matmul", "rmatmul", "imatmul", "mm", "bmm"):
        return weight_pos == 1
    if name in ("addmm", "baddbmm", "addbmm"):
        return weight_pos == 2
    return name == "grouped_mm"


def _arg(args: tuple, kwargs: dict, pos: int, key: str, default: Any) -> Any:
    if key in kwargs:
        return kwargs[key]
    return args[pos] if len(args) > pos else default


def _tuple(v: Any, d: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (int(v),) * d


def _einsum_fans(args: tuple, weight_pos: int) -> tuple[float, float] | None:
    equation = args[0]
    operands = list(args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not isinstance(equation, str) or "..." in equation:
        return None
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    index = weight_pos - 1
    if not (0 <= index < len(terms)):
        return None
    if not rhs:
        counts = {c: lhs.count(c) for c in set(lhs) if c.isalpha()}
        rhs = "".join(sorted(c for c, n in counts.items() if n == 1))
    sizes = dict(zip(terms[index], operands[index].shape))
    fan_in = math.prod(s for c, s in sizes.items() if c not in rhs)
    fan_out = math.prod(s for c, s in sizes.items() if c in rhs and not _batch_index(c, terms, index))
    return float(fan_in or 1), float(fan_out or 1)


def _batch_index(c: str, terms: list[str], index: int) -> bool:
    """An index shared by every operand and the output (a batch of matrices, e.g. experts)."""
    return all(c in t for t in terms)
