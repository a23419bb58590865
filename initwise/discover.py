"""Which activation consumes the output of each parametric layer of a model.

The right initialization of a layer depends on the nonlinearity applied to its output (He et al.
2015 derive the weight variance from it), and that is a property of the data flow, not of the
order in which modules are declared. :func:`discover` follows the data flow with the first of
three methods that works:

1. ``"fx"``: ``torch.fx`` symbolic tracing (no input needed). Layers are the atomic modules that
   own parameters; the graph is walked forward from each call of a layer.
2. ``"forward"``: a recorded forward pass with ``example_input`` (or with an input guessed from
   the first layer when none is given): forward hooks on the layers and a
   :class:`~torch.overrides.TorchFunctionMode` that sees every functional call (``F.relu``,
   ``torch.tanh``, ``x.sigmoid()``, ``F.leaky_relu(x, 0.2)``, ``x + y``, ``x.view(...)``). Used for
   models that fx cannot trace (data-dependent control flow). The model is left as it was:
   buffers (BatchNorm statistics), train/eval flags and the global RNG are restored.
3. ``"order"``: module declaration order, the last resort: the first activation module declared
   after a layer, skipping dropout, norms, pooling and reshapes. It cannot see functional calls
   (``torch.relu`` in ``forward``), so it can be wrong: every activation it finds says
   ``"guessed from declaration order"`` in its ``via``, ``Discovery.fallback`` says why it was
   used, and falling back to it issues a :class:`UserWarning`.

A forward pass that fails with a user-given ``example_input`` is an error (``ValueError``), not a
reason to fall back: the input does not fit the model and the plan would be built on a guess.

While following a layer's output, dropout, normalization layers, flatten/reshape/view/permute,
pooling, padding, indexing, concatenation and additions (residual connections) are passed
through; the first activation reached is recorded. Reaching another layer, the model output or
any other operation (a matrix product, a gating product) records ``"none"``: the output is used
linearly. A layer whose output reaches several places gets every distinct activation.
``clamp(min=0)`` (``torch.clamp``, ``clip``, ``clamp_min``) counts as a ReLU.

A layer whose output, followed through pass-through operations and activations, reaches an
addition whose other operand does not derive from it (``h + f(h)``) ends a residual branch:
``Discovery.residual`` lists it (the plan says that the branch variances add up there).
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .gains import activation_name

__all__ = ["Activation", "Discovery", "discover", "one_line", "guess_input", "layers", "is_norm", "NORM_TYPES",
           "ORDER_GUESS"]

#: Prefix of ``Activation.via`` for activations guessed from module declaration order.
ORDER_GUESS = "guessed from declaration order"

NORM_TYPES: tuple[type, ...] = tuple(
    t for t in (
        nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
    ) if t is not None
)

# Modules passed through when following a layer's output.
_PASS_MODULES: tuple[type, ...] = NORM_TYPES + (
    nn.modules.dropout._DropoutNd, nn.Flatten, nn.Unflatten, nn.Identity,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
    nn.modules.pooling._LPPoolNd, nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle,
    nn.ChannelShuffle, nn.modules.padding._ConstantPadNd, nn.modules.padding._ReflectionPadNd,
    nn.modules.padding._ReplicationPadNd, nn.ZeroPad2d, nn.Sequential,
)

# Functions / tensor methods (by name, without leading/trailing underscores) passed through.
_PASS_NAMES = frozenset("""
view view_as reshape reshape_as flatten unflatten permute transpose t contiguous squeeze unsqueeze
expand expand_as repeat repeat_interleave narrow select getitem split split_with_sizes chunk unbind
cat concat concatenate stack hstack vstack add iadd radd sub isub rsub neg pos clone detach to float
double half bfloat16 type type_as cpu cuda dropout dropout1d dropout2d dropout3d alpha_dropout
feature_alpha_dropout max_pool1d max_pool2d max_pool3d max_pool1d_with_indices
max_pool2d_with_indices max_pool3d_with_indices avg_pool1d avg_pool2d avg_pool3d
adaptive_avg_pool1d adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d
adaptive_max_pool2d adaptive_max_pool3d adaptive_max_pool1d_with_indices
adaptive_max_pool2d_with_indices adaptive_max_pool3d_with_indices lp_pool1d lp_pool2d lp_pool3d
batch_norm layer_norm group_norm instance_norm rms_norm local_response_norm normalize pad
interpolate upsample upsample_nearest upsample_bilinear pixel_shuffle pixel_unshuffle mean sum max
min amax amin roll flip movedim moveaxis swapaxes swapdims index_select gather masked_fill
""".split())

# Binary arithmetic passed through when the other operand is a plain number (a rescale).
_SCALE_NAMES = frozenset("mul rmul imul truediv div itruediv floordiv".split())

# Metadata and comparisons: neither an activation nor a use of the values as a signal.
_IGNORE_NAMES = frozenset("""
getattr size dim ndimension numel shape dtype device stride is_contiguous is_floating_point
item tolist bool len gt lt ge le eq ne greater less any all isnan isinf isfinite argmax argmin
argsort sort topk norm std var std_mean var_mean nonzero count_nonzero requires_grad_ data_ptr
element_size format repr get
""".split())

# Positional parameters (after the input) of functional activations.
_POSITIONAL = {
    "leaky_relu": ("negative_slope",), "elu": ("alpha",), "celu": ("alpha",),
    "softplus": ("beta",), "hardtanh": ("min_val", "max_val"),
}
_KEYWORDS = frozenset({"negative_slope", "alpha", "beta", "approximate", "min_val", "max_val"})


@dataclass(frozen=True)
class Activation:
    """An activation found downstream of a layer: ``name`` (as in :data:`initwise.GAIN_NAMES`,
    or ``"none"`` when the output is used linearly) and its parameters as sorted
    ``(key, value)`` pairs. ``via`` says where it was seen (not part of equality); ``fn`` is the
    module or function itself for activations initwise has no name for."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    via: str = field(default="", compare=False)
    fn: Any = field(default=None, compare=False, repr=False)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    def label(self) -> str:
        """``"relu"``, ``"leaky_relu(negative_slope=0.2)"``, ``"none"``."""
        if not self.params:
            return self.name
        inner = ", ".join(f"{k}={_fmt(v)}" for k, v in self.params)
        return f"{self.name}({inner})"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


@dataclass
class Discovery:
    """Result of :func:`discover`: the method used (``"fx"``, ``"forward"``, ``"order"``), a
    note on why (fallback reasons, the guessed input shape) and, for every layer's qualified
    name, the distinct activations consuming its output (``(Activation("none"),)`` for an output
    layer). ``fallback`` is empty unless ``method == "order"``: then it says why the data flow
    could not be followed (e.g. ``"fx failed (...) and the forward pass with a guessed input of
    shape (2, 8) failed (...)"``). ``residual`` maps every layer whose output (through
    pass-through operations and activations) reaches an addition with an operand that does not
    derive from that layer, as in ``h + f(h)``, to where the sum was seen (e.g. ``"add()"``):
    the layer ends a residual branch (empty for ``"order"``, which cannot see additions)."""

    method: str
    consumers: dict[str, tuple[Activation, ...]]
    note: str = ""
    fallback: str = ""
    residual: dict[str, str] = field(default_factory=dict)

    def of(self, layer_name: str) -> tuple[Activation, ...]:
        """Activations consuming ``layer_name``'s output (a sub-layer of a fused layer such as
        ``attn.out_proj`` inherits those of ``attn``)."""
        name = layer_name
        while True:
            if name in self.consumers:
                return self.consumers[name]
            if "." not in name:
                return (Activation("none", via="not reached"),)
            name = name.rsplit(".", 1)[0]


# ----------------------------------------------------------------------------- layers
def _is_layer(module: nn.Module) -> bool:
    if isinstance(module, nn.MultiheadAttention) or parametrize.is_parametrized(module):
        return True
    children = [n for n, _ in module.named_children() if n != "parametrizations"]
    return not children and any(True for _ in module.parameters(recurse=False))


def layers(model: nn.Module) -> dict[str, nn.Module]:
    """Atomic parametric layers of ``model`` by qualified name: modules that own parameters and
    have no sub-modules (plus ``MultiheadAttention`` and parametrized modules). The root counts
    when it is such a module."""
    found: dict[str, nn.Module] = {}
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name == s or name.startswith(s + ".") for s in skip):
            continue
        if _is_layer(module):
            found[name] = module
            skip.append(name)
    return found


def is_norm(module: nn.Module) -> bool:
    """True for batch/layer/group/instance/RMS normalization layers."""
    return isinstance(module, NORM_TYPES)


def _module_activation(module: nn.Module, where: str) -> Activation | None:
    known = activation_name(module)
    if known is not None and known[0] != "identity":
        name, params = known
        return Activation(name, tuple(sorted(params.items())), via=f"{type(module).__name__} module '{where}'")
    if type(module).__module__ == "torch.nn.modules.activation" and not isinstance(module, nn.MultiheadAttention):
        return Activation(type(module).__name__.lower(), (), via=f"{type(module).__name__} module '{where}'",
                          fn=module)
    return None


def _bare(name: str) -> str:
    return name.strip("_")


_CLAMP_NAMES = frozenset({"clamp", "clip", "clamp_min"})


def _clamp_activation(func: Any, args: tuple, kwargs: dict) -> Activation | None:
    """``x.clamp(min=0)``, ``torch.clamp(x, 0)``, ``x.clip(0)``, ``x.clamp_min(0)``: a ReLU
    (with ``max=6``: ReLU6); other clamps are not activations initwise knows."""
    fname = getattr(func, "__name__", None)
    if not isinstance(fname, str) or _bare(fname) not in _CLAMP_NAMES:
        return None
    bare = _bare(fname)
    lo = kwargs.get("min", args[1] if len(args) > 1 else None)
    hi = None if bare == "clamp_min" else kwargs.get("max", args[2] if len(args) > 2 else None)
    plain = (int, float)
    if isinstance(lo, bool) or not isinstance(lo, plain) or lo != 0:
        return None
    if hi is None:
        name = "relu"
    elif isinstance(hi, plain) and not isinstance(hi, bool) and hi == 6:
        name = "relu6"
    else:
        return None
    return Activation(name, (), via=f"{fname}(min=0{', max=6' if hi is not None else ''})")


def _function_activation(func: Any, args: tuple, kwargs: dict) -> Activation | None:
    """The activation a functional call applies (with parameters from its arguments), or None."""
    clamp = _clamp_activation(func, args, kwargs)
    if clamp is not None:
        return clamp
    known = None
    try:
        known = activation_name(func)
    except Exception:  # noqa: BLE001 - odd callables
        known = None
    fname = getattr(func, "__name__", str(func))
    if known is None and isinstance(fname, str):
        bare = _bare(fname)
        for space in (F, torch):
            candidate = getattr(space, bare, None)
            if candidate is not None and candidate is not func:
                try:
                    known = activation_name(candidate)
                except Exception:  # noqa: BLE001
                    known = None
                if known is not None:
                    break
    if known is None:
        return None
    name, params = known
    params = dict(params)
    for i, key in enumerate(_POSITIONAL.get(name, ())):
        if len(args) > i + 1 and isinstance(args[i + 1], (int, float)) and not isinstance(args[i + 1], bool):
            params[key] = float(args[i + 1])
    for key, value in kwargs.items():
        if key in _KEYWORDS and not isinstance(value, (torch.Tensor, torch.fx.Node)):
            params[key] = float(value) if isinstance(value, int) and not isinstance(value, bool) else value
    module = getattr(func, "__module__", None) or ""
    if module.endswith("functional") or module == "torch._C._nn":
        prefix = "F."
    elif module.startswith("torch"):
        prefix = "torch."
    else:
        prefix = "Tensor."
    return Activation(name, tuple(sorted(params.items())), via=f"{prefix}{fname}")


def _classify(func: Any, args: tuple, kwargs: dict, node_type: type = torch.Tensor) -> tuple[str, Any]:
    """("act", Activation) | ("pass", None) | ("ignore", None) | ("other", label)."""
    act = _function_activation(func, args, kwargs)
    if act is not None:
        return ("ignore", None) if act.name == "identity" else ("act", act)
    fname = getattr(func, "__name__", None) or str(func)
    bare = _bare(fname)
    if bare in _PASS_NAMES:
        return "pass", None
    if bare in _IGNORE_NAMES:
        return "ignore", None
    if bare in _SCALE_NAMES:
        operands = [a for a in args if isinstance(a, node_type)]
        if len(operands) <= 1:
            return "pass", None
    return "other", bare


def _pass_module(module: nn.Module) -> bool:
    return isinstance(module, _PASS_MODULES)


# ----------------------------------------------------------------------------- fx
class _Tracer(torch.fx.Tracer):
    def __init__(self, layer_ids: set[int]):
        super().__init__()
        self._layer_ids = layer_ids

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if id(m) in self._layer_ids:
            return True
        if isinstance(m, nn.Sequential):
            return False
        return m.__module__.startswith("torch.nn") and not any(True for _ in m.children())


def _discover_fx(model: nn.Module, found: dict[str, nn.Module],
                 residual: dict[str, str] | None = None) -> dict[str, tuple[Activation, ...]]:
    tracer = _Tracer({id(m) for m in found.values()})
    graph = tracer.trace(model)
    modules = dict(model.named_modules())
    result: dict[str, list[Activation]] = {}
    ancestry = _fx_ancestry(graph, found) if residual is not None else {}

    def classify(node: torch.fx.Node) -> tuple[str, Any]:
        if node.op == "output":
            return "act", Activation("none", via="model output")
        if node.op == "call_module":
            module = modules.get(node.target)
            if module is None:
                return "other", str(node.target)
            if node.target in found and not is_norm(module):
                act = _module_activation(module, node.target) if isinstance(module, nn.PReLU) else None
                return ("act", act) if act else ("act", Activation("none", via=f"layer '{node.target}'"))
            act = _module_activation(module, node.target)
            if act is not None:
                return "act", act
            if _pass_module(module):
                return "pass", None
            return "act", Activation("none", via=f"{type(module).__name__} module '{node.target}'")
        if node.op == "call_function":
            kind, info = _classify(node.target, node.args, node.kwargs, torch.fx.Node)
        elif node.op == "call_method":
            func = getattr(torch.Tensor, node.target, None) or node.target
            if isinstance(func, str):
                kind, info = _classify(type("m", (), {"__name__": func})(), node.args, node.kwargs, torch.fx.Node)
            else:
                kind, info = _classify(func, node.args, node.kwargs, torch.fx.Node)
        else:
            return "ignore", None
        if kind == "other":
            return "act", Activation("none", via=f"{info}()")
        return kind, info

    for node in graph.nodes:
        if node.op != "call_module" or node.target not in found:
            continue
        acts = result.setdefault(node.target, [])
        stack, seen = list(node.users), set()
        while stack:
            user = stack.pop()
            if user in seen:
                continue
            seen.add(user)
            kind, info = classify(user)
            if kind == "act":
                acts.append(info)
            elif kind == "pass":
                if user.users:
                    stack.extend(user.users)
        if not acts:
            acts.append(Activation("none", via="output not used"))
        if residual is not None and node.target not in residual:
            where = _fx_residual(node, classify, ancestry)
            if where is not None:
                residual[node.target] = where
    return {name: _distinct(acts) for name, acts in result.items()}


_ADD_NAMES = frozenset("add iadd radd sub isub rsub".split())
_INPUT = "<input>"  # ancestry marker of tensors derived from the model's inputs


def _is_add(func: Any) -> bool:
    name = func if isinstance(func, str) else getattr(func, "__name__", None)
    return isinstance(name, str) and _bare(name) in _ADD_NAMES


def _fx_ancestry(graph: torch.fx.Graph, found: dict[str, nn.Module]) -> dict[torch.fx.Node, frozenset[str]]:
    """For every node, the layers it derives from (plus ``_INPUT`` when it derives from a model
    input); parameters and constants derive from nothing."""
    anc: dict[torch.fx.Node, frozenset[str]] = {}
    for node in graph.nodes:  # topological order
        acc: set[str] = set()
        for i in node.all_input_nodes:
            acc |= anc.get(i, frozenset())
        if node.op == "placeholder":
            acc.add(_INPUT)
        elif node.op == "call_module" and node.target in found:
            acc.add(node.target)
        anc[node] = frozenset(acc)
    return anc


def _fx_residual(start: torch.fx.Node, classify, anc) -> str | None:  # noqa: ANN001
    """Where ``start``'s output, followed through pass-through operations and activations,
    reaches an addition with an operand that does not derive from ``start``'s layer (``None``
    when it does not)."""
    layer = start.target
    stack, seen = [(u, start) for u in start.users], set()
    while stack:
        user, came_from = stack.pop()
        if user in seen:
            continue
        seen.add(user)
        kind, info = classify(user)
        if kind == "pass":
            target = user.target if user.op in ("call_function", "call_method") else None
            if target is not None and _is_add(target):
                others = [o for o in user.all_input_nodes if o is not came_from]
                if any(anc[o] and layer not in anc[o] for o in others):
                    return f"{_bare(target if isinstance(target, str) else getattr(target, '__name__', 'add'))}()"
            stack.extend((u, user) for u in user.users)
        elif kind == "act" and info.name != "none":
            stack.extend((u, user) for u in user.users)
    return None


def _distinct(acts: Iterable[Activation]) -> tuple[Activation, ...]:
    out: list[Activation] = []
    for a in acts:
        if a not in out:
            out.append(a)
    return tuple(sorted(out, key=lambda a: a.label()))


# ----------------------------------------------------------------------------- recorded forward
class _Recorder(TorchFunctionMode):
    """Follows, for every tensor, the set of layers whose output reached it through
    pass-through operations only (``prov``), through pass-through operations and activations
    (``rprov``, to find residual sums) and through anything (``anc``, its ancestry; model inputs
    are marked ``_INPUT``)."""

    def __init__(self, found: dict[str, nn.Module]):
        super().__init__()
        self.found = found
        self.names = {id(m): n for n, m in found.items()}
        self.prov: dict[int, tuple[torch.Tensor, frozenset[str]]] = {}
        self.rprov: dict[int, tuple[torch.Tensor, frozenset[str]]] = {}
        self.anc: dict[int, tuple[torch.Tensor, frozenset[str]]] = {}
        self.consumers: dict[str, list[Activation]] = {}
        self.residual: dict[str, str] = {}
        self.depth = 0

    def reset(self) -> None:
        for table in (self.prov, self.rprov, self.anc, self.consumers, self.residual):
            table.clear()
        self.depth = 0

    # provenance helpers
    def sources(self, *objs: Any, table: dict | None = None) -> frozenset[str]:
        table = self.prov if table is None else table
        flat, _ = tree_flatten(objs)
        out: set[str] = set()
        for t in flat:
            if isinstance(t, torch.Tensor):
                entry = table.get(id(t))
                if entry is not None and entry[0] is t:
                    out |= entry[1]
        return frozenset(out)

    def mark(self, obj: Any, srcs: frozenset[str], table: dict | None = None) -> None:
        table = self.prov if table is None else table
        flat, _ = tree_flatten(obj)
        for t in flat:
            if isinstance(t, torch.Tensor):
                table[id(t)] = (t, srcs)

    def check_residual(self, func: Any, args: tuple, kwargs: dict, rsrcs: frozenset[str]) -> frozenset[str]:
        """Record the layers in ``rsrcs`` whose output meets, in this addition, an operand that
        does not derive from them; return the others (they go on through the sum)."""
        operands = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        done = set()
        for layer in rsrcs:
            for i, a in enumerate(operands):
                if layer not in self.sources(a, table=self.rprov):
                    continue
                for j, b in enumerate(operands):
                    anc_b = self.sources(b, table=self.anc)
                    if j != i and b is not a and anc_b and layer not in anc_b:
                        self.residual.setdefault(layer, f"{_bare(getattr(func, '__name__', 'add'))}()")
                        done.add(layer)
        return rsrcs - done

    def record(self, srcs: Iterable[str], act: Activation) -> None:
        for s in srcs:
            self.consumers.setdefault(s, []).append(act)

    # hooks
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict | None = None) -> None:
        if self.depth == 0:
            name = self.names[id(module)]
            srcs = self.sources(args, kwargs or {})
            if isinstance(module, nn.PReLU):
                self.record(srcs, _module_activation(module, name))
            elif not is_norm(module):
                self.record(srcs, Activation("none", via=f"layer '{name}'"))
            self.consumers.setdefault(name, [])
        self.depth += 1

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            name = self.names[id(module)]
            srcs = frozenset({name})
            rsrcs = srcs
            if is_norm(module):
                srcs = srcs | self.sources(args, kwargs)
                rsrcs = rsrcs | self.sources(args, kwargs, table=self.rprov)
            self.mark(output, srcs)
            self.mark(output, rsrcs, self.rprov)
            self.mark(output, self.sources(args, kwargs, table=self.anc) | {name}, self.anc)

    def act_pre_hook(self, module: nn.Module, args: tuple) -> None:
        if self.depth == 0:
            self.record(self.sources(args), self.act_modules[id(module)])
        self.depth += 1

    def act_post_hook(self, module: nn.Module, args: tuple, output: Any) -> None:
        self.depth -= 1
        if self.depth == 0:
            self.mark(output, self.sources(args, table=self.rprov), self.rprov)
            self.mark(output, self.sources(args, table=self.anc), self.anc)

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.depth > 0:
            return out
        flat_out = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
        if not any(t.is_floating_point() or t.is_complex() for t in flat_out):
            return out
        anc = self.sources(args, kwargs, table=self.anc)
        if anc:
            self.mark(out, anc, self.anc)
        srcs = self.sources(args, kwargs)
        rsrcs = self.sources(args, kwargs, table=self.rprov)
        if not srcs and not rsrcs:
            return out
        kind, info = _classify(func, args, kwargs)
        if kind == "act":
            self.record(srcs, info)
            self.mark(out, frozenset())
        elif kind == "pass":
            self.mark(out, srcs)
        elif kind == "other":
            self.record(srcs, Activation("none", via=f"{info}()"))
            self.mark(out, frozenset())
        if kind == "pass" and _is_add(func):
            rsrcs = self.check_residual(func, args, kwargs, rsrcs)
        self.mark(out, rsrcs if kind == "pass" or (kind == "act" and info.name != "none") else frozenset(),
                  self.rprov)
        return out


@contextlib.contextmanager
def _preserved(model: nn.Module):
    """Restore buffers, parameters' values, train/eval flags and the CPU RNG afterwards."""
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    flags = [(m, m.training) for m in model.modules()]
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            with torch.no_grad():
                for b, saved in buffers:
                    if b.shape == saved.shape:
                        b.copy_(saved)
            for m, flag in flags:
                m.training = flag


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping, ``model(*inputs)`` for a tuple or list, else
    ``model(inputs)``: the forms an example input may take."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _discover_forward(model: nn.Module, found: dict[str, nn.Module], example_input: Any,
                      residual: dict[str, str] | None = None) -> dict[str, tuple[Activation, ...]]:
    rec = _Recorder(found)
    rec.act_modules = {}
    handles = []
    try:
        for name, module in found.items():
            handles.append(module.register_forward_pre_hook(rec.pre_hook, with_kwargs=True))
            handles.append(module.register_forward_hook(rec.post_hook, with_kwargs=True))
        for name, module in model.named_modules():
            if id(module) in rec.names:
                continue
            act = _module_activation(module, name)
            if act is not None:
                rec.act_modules[id(module)] = act
                handles.append(module.register_forward_pre_hook(rec.act_pre_hook))
                handles.append(module.register_forward_hook(rec.act_post_hook))
        errors = []
        for training in (True, False):
            rec.reset()
            rec.mark(example_input, frozenset({_INPUT}), rec.anc)
            try:
                with _preserved(model), torch.no_grad():
                    model.train(training)
                    with rec:
                        out = call_model(model, example_input)
                    rec.record(rec.sources(out), Activation("none", via="model output"))
                break
            except Exception as exc:  # noqa: BLE001 - try eval mode, then give up
                message = f"{type(exc).__name__}: {exc}"
                if message not in errors:
                    errors.append(message)
        else:
            raise RuntimeError("; ".join(errors))
    finally:
        for h in handles:
            h.remove()
    if residual is not None:
        residual.update(rec.residual)
    return {name: _distinct(acts) or (Activation("none", via="output not used"),)
            for name, acts in rec.consumers.items()}


def guess_input(model: nn.Module) -> torch.Tensor | None:
    """A small input for ``model`` guessed from its first layer (batch of 2), or None.

    Drawn from a local generator seeded with 0 (the global RNG is not touched), on the device
    of the model's first parameter (so a model on ``"meta"`` gets a meta input)."""
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = _guess_cpu_input(model)
    return None if x is None else x.to(device)


def _guess_cpu_input(model: nn.Module) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(0)
    for module in model.modules():
        weight = next(module.parameters(recurse=False), None)
        if weight is None and not isinstance(module, nn.Embedding):
            continue
        dtype = weight.dtype if weight is not None and weight.is_floating_point() else torch.float32
        if isinstance(module, nn.Linear):
            return torch.randn(2, module.in_features, dtype=dtype, generator=g)
        if isinstance(module, nn.modules.conv._ConvNd):
            d = len(module.kernel_size)
            size = max(16, *(k * 2 for k in module.kernel_size))
            return torch.randn(2, module.in_channels, *([size] * d), dtype=dtype, generator=g)
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            return torch.randint(0, module.num_embeddings, (2, 8), generator=g)
        if isinstance(module, nn.RNNBase):
            shape = (2, 5, module.input_size) if module.batch_first else (5, 2, module.input_size)
            return torch.randn(*shape, dtype=dtype, generator=g)
        return None
    return None


# ----------------------------------------------------------------------------- module order
def _discover_order(model: nn.Module, found: dict[str, nn.Module]) -> dict[str, tuple[Activation, ...]]:
    sequence: list[tuple[str, nn.Module]] = []
    skip: list[str] = []
    for name, module in model.named_modules():
        if any(name.startswith(s + ".") for s in skip):
            continue
        if name in found:
            sequence.append((name, module))
            skip.append(name)
        elif not any(True for _ in module.children()):
            sequence.append((name, module))
    result: dict[str, tuple[Activation, ...]] = {}
    for i, (name, module) in enumerate(sequence):
        if name not in found:
            continue
        act = Activation("none", via="last layer in declaration order")
        for later_name, later in sequence[i + 1:]:
            if later_name in found and not is_norm(later) and not isinstance(later, nn.PReLU):
                act = Activation("none", via=f"next declared layer '{later_name}'")
                break
            found_act = _module_activation(later, later_name)
            if found_act is not None:
                act = found_act
                break
            if not (later_name in found or _pass_module(later)):
                act = Activation("none", via=f"{type(later).__name__} module '{later_name}'")
                break
        result[name] = (dataclasses.replace(act, via=f"{ORDER_GUESS}: {act.via}"),)
    return result


# ----------------------------------------------------------------------------- entry point
def discover(model: nn.Module, example_input: Any = None, *, method: str = "auto") -> Discovery:
    """Find the activations consuming each parametric layer's output (see the module docstring).

    ``method`` is ``"auto"`` (fx, else a recorded forward pass, else module order), or one of
    ``"fx"``, ``"forward"``, ``"order"`` to force one (``"forward"`` without ``example_input``
    uses an input guessed from the first layer). The model is not modified.

    Raises ``ValueError`` when the forward pass fails with a given ``example_input`` (the input
    does not fit the model). When ``"auto"`` has to fall back to declaration order (fx fails and
    there is no example input, or the forward pass with a guessed input fails) it warns with a
    :class:`UserWarning`, and the result says so (``fallback``, ``note``, every ``via``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"discover() expects an nn.Module, got {type(model).__name__}")
    if method not in ("auto", "fx", "forward", "order"):
        raise ValueError(f"method must be 'auto', 'fx', 'forward' or 'order', got {method!r}")
    found = layers(model)
    model_name = type(model).__name__
    notes: list[str] = []
    if method in ("auto", "fx"):
        residual: dict[str, str] = {}
        try:
            return Discovery("fx", _discover_fx(model, found, residual), "torch.fx symbolic trace",
                             residual=residual)
        except Exception as exc:  # noqa: BLE001 - any trace failure means: try the next method
            if method == "fx":
                raise ValueError(f"torch.fx cannot trace {model_name}: {one_line(exc)}") from exc
            notes.append(f"fx failed ({one_line(exc)})")
    if method in ("auto", "forward"):
        x, guessed = example_input, False
        if x is None:
            x, guessed = guess_input(model), True
        if x is not None:
            try:
                residual = {}
                consumers = _discover_forward(model, found, x, residual)
                shape = f" with a guessed input of shape {tuple(x.shape)}" if guessed else " with the example input"
                notes.append("recorded forward pass" + shape)
                return Discovery("forward", consumers, "; ".join(notes), residual=residual)
            except Exception as exc:  # noqa: BLE001
                if not guessed:
                    raise ValueError(
                        f"the forward pass of {model_name} failed with the given example_input "
                        f"({_describe(example_input)}): {one_line(exc)}; pass an example_input the model "
                        "accepts (CLI: --input-shape, batch first)") from exc
                if method == "forward":
                    raise ValueError(
                        f"the forward pass of {model_name} failed with a guessed input of shape "
                        f"{tuple(x.shape)}: {one_line(exc)}; pass example_input (CLI: --input-shape)") from exc
                notes.append(f"the forward pass with a guessed input of shape {tuple(x.shape)} failed "
                             f"({one_line(exc)})")
        else:
            notes.append("no example input was given and none could be guessed from the first layer")
    if method == "order":
        fallback = "declaration order was requested (method='order')"
        return Discovery("order", _discover_order(model, found),
                         f"activations {ORDER_GUESS} (requested)", fallback)
    fallback = " and ".join(notes)
    note = (f"FALLBACK: activations {ORDER_GUESS}, which cannot see functional calls such as torch.relu, "
            f"because {fallback}; pass example_input (CLI: --input-shape) to follow the data flow")
    warnings.warn(f"initwise could not follow the data flow of {model_name}: {fallback}. The activations were "
                  f"{ORDER_GUESS} and may be wrong; pass example_input (a tensor the model accepts; CLI: "
                  "--input-shape) to follow the data flow.", UserWarning, stacklevel=_stacklevel())
    return Discovery("order", _discover_order(model, found), note, fallback)


def _describe(x: Any) -> str:
    """``"a tensor of shape (2, 3)"`` / ``"a tuple of 2 inputs"`` for error messages."""
    if isinstance(x, torch.Tensor):
        return f"a {x.dtype} tensor of shape {tuple(x.shape)}"
    if isinstance(x, (tuple, list)):
        return f"a {type(x).__name__} of {len(x)} inputs"
    if isinstance(x, dict):
        return f"keyword inputs {', '.join(map(str, x))}"
    return f"a {type(x).__name__}"


def _stacklevel() -> int:
    """Stack level pointing at the first frame outside initwise (the user's call)."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("initwise"):
        frame, level = frame.f_back, level + 1
    return level


def one_line(exc: BaseException, limit: int = 160) -> str:
    """``exc``'s message on one line (white space folded), cut to ``limit`` characters; the
    exception's type name when it has no message. Used for every one-line error report."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
