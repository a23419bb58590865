"""The recorder of :func:`initwise.graph.record`: a :class:`~torch.overrides.TorchFunctionMode`
that sees every torch function and tensor method of one forward pass, with hooks on every module
(a known layer's call becomes one ``layer`` node), and turns what it sees into the graph's
nodes (:mod:`initwise.nodes`); :func:`_run` runs one recorded forward pass.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from . import ops, recstats
from . import tree as _tree
from .callargs import bias_pos as _bias_pos
from .callargs import numel as _numel
from .callargs import parameters as _parameters
from .callargs import positional as _positional
from .callargs import tensors as _tensors
from .inputs import call_model, preserved, tensors_in
from .nodes import Node, _Ref, is_norm, layers, scale_offsets
from .tree import Tree
from .twins import meta_twins, needs_twins, to_meta

#: Turns torch-function modes (this recorder, any under it) off for the recorder's own calls.
_quiet = torch._C.DisableTorchFunction


class _Recorder(TorchFunctionMode):
    def __init__(self, model: nn.Module, tree: Tree | None = None, observer: Any = None,
                 stats: bool = True):
        super().__init__()
        #: whether the statistics planning reads are taken (constants' moments, attention
        #: masks and probabilities, the ratios of reductions, embeddings' token correlation);
        #: without them (diagnose) a constant's node keeps only its size
        self.stats = stats
        #: diagnose's measuring (:class:`initwise.diagnose.measure._Recorder`), or None: told of
        #: every torch call (``before`` it runs, ``after``) and of each call of the modules in
        #: ``observer.modules`` (``pre_hook``, ``hook``), first, as hooks of its own would be
        self.observer = observer
        self.observed: dict[int, Any] = {} if observer is None else observer.modules
        self.nodes: list[Node] = []
        self.by_id: dict[int, int] = {}
        self.keep: list[torch.Tensor] = []
        self.depth = 0
        self.scope: list[str] = []
        self.param_names: dict[int, str] = {}
        #: the module tree (:func:`initwise.tree.walk`), walked once for the whole recording
        self.tree = tree = _tree.walk(model) if tree is None else tree
        for name, p in _tree.named_parameters(tree):
            self.param_names.setdefault(id(p), name)
        named = _tree.unique(tree)
        # a known layer is one node, unless it is an embedding whose class rewrites the forward
        # (Gemma's scaled embedding, BART's offset positions): its operations are recorded
        self.layer_names = {id(m): n for n, m in layers(model, named).items()
                            if not (isinstance(m, nn.Embedding) and type(m).forward is not nn.Embedding.forward)}
        self.module_names = {id(m): n for n, m in named}
        self.pending: tuple = ()
        self.module_out: dict[str, int] = {}
        self.roots: dict[int, int] = {}
        self.outputs: tuple[int, ...] = ()
        #: node id -> its output tensor and that tensor's version when made (record_pass only)
        self.tensors: dict[int, tuple[torch.Tensor, int]] | None = None
        self.result: Any = None  #: the model's output
        #: torch function -> (kind, bare name, writes in place by its name), looked up once
        self.kinds: dict[Any, tuple[str, str, bool]] = {}
        #: (query length, key length, causal, id of the mask) -> (mask, its version, what it allows)
        self.masks: dict[tuple, tuple[Any, int | None, dict[str, float]]] = {}
        #: id(norm) -> its :func:`scale_offset` where not 0 (probed here, before any hook is on)
        self.offsets = scale_offsets(m for _, m in named)

    def kind_of(self, func: Any) -> tuple[str, str, bool]:
        """:func:`ops.classify`, :func:`ops.bare` and the name part of :func:`ops.in_place`
        of ``func``, cached per function for this recording."""
        try:
            return self.kinds[func]
        except KeyError:
            found = self.kinds[func] = (ops.classify(func), ops.bare(func), ops.in_place(func, {}))
        except TypeError:  # an unhashable callable
            found = (ops.classify(func), ops.bare(func), ops.in_place(func, {}))
        return found

    # nodes
    def add(self, kind: str, op: str, inputs: tuple[int, ...], out: Any, *, varies: bool | None = None,
            module: str | None = None, param: str = "", weights: tuple[str, ...] = (),
            info: dict[str, Any] | None = None) -> Node:
        """A new node (``varies``: by default whether an input varies; ``module``: the current
        module's name)."""
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
        if varies is None:
            nodes = self.nodes
            varies = any(nodes[i].varies for i in inputs)
        if module is None:
            module = self.scope[-1] if self.scope else ""
        node = Node(len(self.nodes), kind, op, inputs, shape, varies, module, param, weights,
                    {} if info is None else info)
        self.nodes.append(node)
        return node

    def bind(self, out: Any, nid: int) -> None:
        """Node ``nid`` made the tensors in ``out`` (a tensor, or nested tuples, lists, dicts)."""
        self.bind_all(tensors_in(out), nid)

    def bind_all(self, ts: list[torch.Tensor], nid: int) -> None:
        """Node ``nid`` made the tensors ``ts``."""
        by_id, keep, tensors = self.by_id, self.keep, self.tensors
        for t in ts:
            by_id[id(t)] = nid
            keep.append(t)
            if tensors is not None and nid not in tensors:
                tensors[nid] = (t, t._version)

    def ref(self, t: torch.Tensor) -> int:
        """The node of tensor ``t``, creating a param or const node on first sight."""
        nid = self.by_id.get(id(t))
        if nid is not None:
            return nid
        name = self.param_names.get(id(t))
        if name is not None:
            node = self.add("param", name, (), t, param=name, varies=False, info={"rows": recstats.rows(t)})
        else:
            node = self.add("const", "constant", (), t, varies=False, info=self.const_info(t))
        self.bind(t, node.id)
        return node.id

    def const_info(self, t: torch.Tensor) -> dict[str, Any]:
        """A constant's :func:`recstats.const_stats`, or only its size without ``stats``."""
        return recstats.const_stats(t) if self.stats else {"numel": t.numel()}

    # hooks (on every module: scope for names; a known layer becomes one node); their own
    # torch calls (statistics, shapes) run with torch functions disabled: no mode sees them
    def pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        with _quiet():
            if id(module) in self.observed:
                self.observer.pre_hook(module, args)
            self._pre_hook(module, args, kwargs)

    def post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        with _quiet():
            if id(module) in self.observed:
                self.observer.hook(module, args, output)
            self._post_hook(module, args, kwargs, output)

    def _pre_hook(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.depth:
            self.depth += 1
        elif id(module) in self.layer_names:
            ins = tuple(dict.fromkeys(self.ref(t) for t in tensors_in((args, kwargs))))
            self.pending = (self.layer_names[id(module)], ins, kwargs)
            self.depth = 1
        else:
            self.scope.append(self.module_names.get(id(module), ""))

    def _post_hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if not self.depth:
            if self.scope:
                self.scope.pop()
            first = next(iter(tensors_in(output)), None)
            if first is not None and id(first) in self.by_id:
                self.module_out[self.module_names.get(id(module), "")] = self.by_id[id(first)]
            return
        self.depth -= 1
        if self.depth:
            return
        name, ins, kw = self.pending
        first = next(iter(tensors_in(output)), None)
        info = {"type": type(module).__name__, "module": module,
                "kwargs": {k: v for k, v in kw.items() if not isinstance(v, torch.Tensor)}}
        weights = tuple(dict.fromkeys(self.param_names[id(p)] for p in _parameters(module)))
        node = self.add("layer", f"{type(module).__name__} '{name}'", ins, first, module=name,
                        weights=weights, info=info)
        if is_norm(module):
            node.info["norm"] = True
            if id(module) in self.offsets:
                node.info["scale_offset"] = self.offsets[id(module)]
        if self.stats and first is not None and isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            node.info.update(recstats.token_corr(first))
        self.bind(output, node.id)
        self.module_out[name] = node.id

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        observer = self.observer
        if observer is None:
            out = func(*args, **kwargs)
        else:
            observer.before(func, args, kwargs)
            out = func(*args, **kwargs)
            observer.after(func, args, kwargs, out)
        if self.depth:
            return out
        kind, name, in_place = self.kind_of(func)
        if kind == "ignore":
            return out
        outs = tensors_in(out)
        if not outs:
            return out
        operands = _tensors(args, [])
        if kwargs:
            _tensors(kwargs.values(), operands)
        by_id, param_names = self.by_id, self.param_names
        known = any(id(t) in by_id or id(t) in param_names for t in operands)
        if kind == "factory" or not known:
            if kind == "factory":
                info = ({"numel": outs[0].numel()} if name in ops.UNINITIALIZED  # values: leftover memory
                        else self.const_info(outs[0]))
                node = self.add("const", name, (), outs[0], varies=False, info=info)
                self.bind_all(outs, node.id)
            return out
        in_place = in_place or kwargs.get("out") is not None
        # no torch.no_grad() needed (it costs ~3 us a call): every statistic of the recording
        # is computed on detached tensors (recstats detaches; templates are detached clones)
        self._record(func, kind, name, in_place, args, kwargs, operands, outs)
        return out

    def _record(self, func: Any, kind: str, name: str, in_place: bool, args: tuple, kwargs: dict,
                operands: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
        ids = [self.ref(t) for t in operands]
        unique = tuple(dict.fromkeys(ids))
        nodes = [self.nodes[i] for i in unique]
        signals = [n for n in nodes if n.data]
        params = [n for n in nodes if n.kind == "param"]
        info: dict[str, Any] = {}
        weights = tuple(dict.fromkeys(n.param for n in params))
        if not signals:  # a view of a parameter, or a computation on parameters and constants
            if params and kind in ("shape", "elementwise"):
                info = {"rows": params[0].info.get("rows", 1)}
                if params[0].info.get("derived") or (kind == "elementwise" and name not in _CASTS):
                    info["derived"] = True  # exp(A_log), 1 + scale: the tensor's use is not its own
                node = self.add("param", f"{name}({params[0].param})", unique, outs[0], param=params[0].param,
                                varies=False, info=info)
            elif params:
                node = self.add("param", name, unique, outs[0], param=params[0].param, varies=False,
                                info={"derived": True})
            else:
                node = self.add("const", name, unique, outs[0], varies=False, info=self.const_info(outs[0]))
            self.bind_all(outs, node.id)
            return
        # a pointwise step of one signal joins its chain, unless a constant of it is on the meta
        # device (no value: the chain could not be evaluated)
        if kind in ("elementwise", "add", "mul") and self._pointwise(nodes, signals, outs[0]) \
                and not any(t.is_meta and not self.nodes[i].data for t, i in zip(operands, ids)):
            kind = "elementwise"
            info["template"] = (func, _template(args, self), _template(kwargs, self))
        elif kind == "elementwise":
            kind = "other"
        elif kind == "linear":
            pos = next((i for i, t in enumerate(_positional(args)) if isinstance(t, torch.Tensor)
                        and self.nodes[self.ref(t)].kind == "param" and i != _bias_pos(name)), None)
            if pos is None:
                kind = "matmul" if len(signals) >= 2 else "other"
            else:
                info["fans"] = ops.linear_fans(name, _positional(args), kwargs, pos)
                info["weight"] = self.nodes[self.ref(_positional(args)[pos])].param
                info["weight_shape"] = tuple(_positional(args)[pos].shape)
                if ops.reads_transposed(name, pos):
                    info["transposed"] = True
        elif kind == "shape" and name in ("cat", "concat", "concatenate", "stack", "hstack", "vstack"):
            kind = "cat"
            info["sizes"] = [(self.ref(t), _numel(t)) for t in operands]
        elif kind == "attention":
            info.update({k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)})
            if self.stats:
                mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
                info.update(self._allowed(mask, args, kwargs))
        elif kind == "softmax" and self.stats:
            info.update(recstats.support(outs[0]))
        elif kind in ("reduce", "other", "scatter", "mul") and self.stats:
            first = next((t for t in operands if self.by_id.get(id(t)) == signals[0].id), None)
            ratio = recstats.ratio(first, outs[0])
            if ratio is not None:
                info["ratio"] = ratio
        node = self.add(kind, name, unique, outs[0], weights=weights, info=info)
        if kind == "elementwise":
            node.info["root"] = self.roots[node.id] = self.roots.get(signals[0].id, signals[0].id)
        if in_place:
            self.by_id[id(operands[0])] = node.id
        self.bind_all(outs, node.id)
        if len(outs) > 1:
            node.info["outputs"] = len(outs)

    def _allowed(self, mask: Any, args: tuple, kwargs: dict) -> dict[str, float]:
        """:func:`recstats.allowed`, once per mask (and query/key lengths) of this recording:
        the layers of a transformer share one mask tensor (or all are causal)."""
        causal = bool(kwargs.get("is_causal", args[5] if len(args) > 5 else False))
        tensor = mask if isinstance(mask, torch.Tensor) and not causal else None
        key = (args[0].shape[-2], args[1].shape[-2], causal, id(tensor))
        seen = self.masks.get(key)
        if seen is None or seen[0] is not tensor or (tensor is not None and seen[1] != tensor._version):
            seen = self.masks[key] = (tensor, None if tensor is None else tensor._version,
                                      recstats.allowed(mask, args, kwargs))
        return dict(seen[2])

    def _pointwise(self, nodes: list[Node], signals: list[Node], out: torch.Tensor) -> bool:
        """Whether an operation on ``nodes`` is a step of one signal's pointwise chain: one root,
        no parameter, constants of at most one element, the signal's shape kept."""
        roots = {self.roots.get(n.id, n.id) for n in signals}
        return len(roots) == 1 and all(n.kind != "param" and (n.data or n.info.get("numel", 2) <= 1)
                                       for n in nodes) and tuple(out.shape) == signals[0].shape


#: elementwise calls that leave a parameter's values as they are (a view of it still)
_CASTS = ops.CASTS | {"positive", "pos"}


def _template(obj: Any, rec: _Recorder) -> Any:
    if isinstance(obj, torch.Tensor):
        nid = rec.by_id.get(id(obj))
        if nid is not None and rec.nodes[nid].data:
            return _Ref(nid)
        return obj.detach().clone() if not obj.is_meta and obj.numel() <= 1 else obj
    if isinstance(obj, (tuple, list)):
        return type(obj)(_template(o, rec) for o in obj)
    if isinstance(obj, dict):
        return {k: _template(v, rec) for k, v in obj.items()}
    return obj


def _run(model: nn.Module, inputs: Any, training: bool | None, guessed: bool = False, *,
         grad: bool = False, observer: Any = None, stats: bool = True) -> _Recorder:
    """One recorded forward pass; a model holding meta tensors or DTensors runs on meta twins
    (:mod:`initwise.twins`), its input's statistics read before the input moves to meta.
    ``training=None`` keeps each module's mode; ``grad`` records with gradients enabled (the
    output, ``rec.result``, can then be backpropagated) and keeps every node's output tensor
    (``rec.tensors``); ``observer``: diagnose's measuring, told of every call
    (:class:`_Recorder`); ``stats=False`` leaves out the statistics only planning reads."""
    tree = _tree.walk(model)  # one walk of the module tree for every step below
    modules = _tree.unique(tree)
    twin = needs_twins(model, modules)
    infos = []
    for t in tensors_in(inputs):
        info = {**recstats.stats(t), **recstats.sample_corr(t)} if stats else {}
        if guessed and t.is_floating_point():  # drawn from N(0, 1): its exact moments
            info.update(mean=0.0, m2=1.0, corr=0.0)
        infos.append(info)
    if twin:
        inputs = to_meta(inputs)
    with meta_twins(model) if twin else contextlib.nullcontext():
        rec = _Recorder(model, tree, observer, stats)
        if grad:
            rec.tensors = {}
        handles = []
        try:
            for _, module in modules:
                handles.append(module.register_forward_pre_hook(rec.pre_hook, with_kwargs=True))
                handles.append(module.register_forward_hook(rec.post_hook, with_kwargs=True))
            for t, info in zip(tensors_in(inputs), infos):
                node = rec.add("input", "input", (), t, varies=True, info=info)
                rec.bind(t, node.id)
            with preserved(model, keep_buffers=not grad, modules=modules), torch.set_grad_enabled(grad):
                if training is not None:
                    model.train(training)
                with rec:
                    out = call_model(model, inputs)
            rec.outputs = tuple(dict.fromkeys(rec.by_id[id(t)] for t in tensors_in(out) if id(t) in rec.by_id))
            rec.result = out
        finally:
            for h in handles:
                h.remove()
    return rec
