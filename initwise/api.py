"""Whole-model initialization: ``initwise.plan(model)`` shows, ``initwise.init(model)`` writes.

>>> plan = initwise.init(model, seed=0)                       # per layer, from its activation
>>> plan = initwise.init(model, policy="he_normal", seed=0)   # one scheme for every weight
>>> print(initwise.plan(model).table())                       # what would be done, and why

Both take the same arguments; ``plan`` never touches the model. ``init`` builds the plan,
computes every new tensor, and only then copies them into the model: if anything fails (an
unknown rule, a shape mismatch, a parametrization without ``right_inverse``), no weight has
changed. See :mod:`initwise.plan` for the policies and the conventions (Xavier with gain 1 for
linear/sigmoid/tanh consumers, He with the activation's gain for ReLU-like ones, LeCun for
SELU, orthogonal recurrent weights).

:func:`load_target` turns ``"path/to/file.py:factory"`` or ``"package.module:factory"`` into the
``nn.Module`` the factory returns (used by the CLI's TARGET arguments).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any, Mapping

import torch
from torch import nn

from .discover import one_line
from .build import build_plan
from .calibrate import CENTRE, centre_outputs
from .plan import Plan
from .policies.targets import TARGET_CENTRED

__all__ = ["plan", "init", "apply_scheme", "load_target"]


def plan(model: nn.Module, example_input: Any = None, *, rules: Mapping[Any, Any] | None = None,
         policy: str = "standard", distribution: str = "normal", residual: str = "scaled",
         include_frozen: bool = False) -> Plan:
    """The initialization plan of ``model``, one :class:`~initwise.plan.PlanEntry` per tensor
    (reads only).

    ``example_input`` (a tensor, a tuple of positional inputs or a dict of keyword inputs) is
    used only when ``torch.fx`` cannot trace the model, to follow the data flow in a recorded
    forward pass. ``policy`` is ``"standard"`` (per layer, from the activation consuming its
    output), ``"torch"`` (PyTorch's defaults), a recipe (``"gpt2"``, ``"torchtitan"``,
    ``"olmo_mitchell"``, ``"t_fixup"``, ``"deepnorm"``, ``"fixup"``, ``"skipinit"``: see
    :mod:`initwise.policies.recipes`) or any scheme name (``"xavier_uniform"``, ``"he"``,
    ``"lecun"``, ``"orthogonal"``, ``"zeros"`` ...) for every weight. ``distribution``
    (``"normal"``, ``"uniform"``, ``"truncated_normal"``, same variance) applies to the choices
    of the standard policy; a scheme name carries its own. ``rules`` override per parameter
    name glob, layer type, module or activation, e.g. ``{"head.*": "zeros", nn.LSTM:
    "orthogonal", "encoder.*": "keep", "activation:tanh": "xavier_uniform"}``.

    Raises ``ValueError`` when the forward pass fails with the given ``example_input``. When
    neither fx nor a forward pass with a guessed input works, the activations are guessed from
    declaration order: a ``UserWarning`` is issued and ``plan.note`` and the affected reasons
    say so (pass ``example_input`` to avoid it).
    """
    return build_plan(model, example_input, rules=rules, policy=policy, distribution=distribution,
                      residual=residual, include_frozen=include_frozen)


def init(model: nn.Module, example_input: Any = None, *, rules: Mapping[Any, Any] | None = None,
         policy: str = "standard", distribution: str = "normal", residual: str = "scaled",
         include_frozen: bool = False, seed: int | None = None,
         device: str | torch.device | None = None) -> Plan:
    """Initialize every parameter of ``model`` in place (all or nothing) and return the plan.

    Arguments as in :func:`plan`. ``seed`` makes the result reproducible and independent of the
    order in which modules were registered: each tensor draws from its own generator seeded by
    ``seed`` and its qualified name. ``seed=None`` draws the seed from torch's global generator
    and records it in ``plan.seed``. Tied parameters are written once; parametrized weights
    (weight_norm, spectral_norm, ``torch.nn.utils.parametrize``) through their original tensors.

    A model built on the meta device (``with torch.device("meta"): ...``) needs ``device=``
    (``"cpu"``, ``"cuda"``): each tensor is then created once there, in its dtype, and drawn
    there, with the same values as ``init`` of the model built normally (see
    :mod:`initwise.write`). Sharded models (DTensor, FSDP2 ``fully_shard``) get the same full
    tensors as a single process.
    """
    p = build_plan(model, example_input, rules=rules, policy=policy, distribution=distribution,
                   residual=residual, include_frozen=include_frozen)
    return finish(model, p, example_input, seed=seed, device=device)


def finish(model: nn.Module, p: Plan, example_input: Any = None, *, seed: int | None = None,
           device: str | torch.device | None = None) -> Plan:
    """Apply ``p`` to ``model``; a plan with output biases to centre on the data (scheme
    ``"centre"`` without values) is applied through :func:`initwise.calibrate.centre_outputs`."""
    if any(e.scheme == CENTRE and "values" not in e.params for e in p):
        return centre_outputs(model, p, example_input, TARGET_CENTRED, seed=seed, device=device)
    return p.apply(model, seed=seed, device=device)


def apply_scheme(model: nn.Module, scheme: str, *, seed: int | None = None,
                 example_input: Any = None) -> Plan | None:
    """Initialize ``model`` by one name, as comparisons name schemes: ``"torch"`` leaves the model
    as it was built (returns ``None``); ``"auto"`` (or ``"standard"``) is ``init(model,
    example_input, seed=seed)``; any other name is ``init(model, example_input, policy=scheme,
    seed=seed)``, that scheme for every weight. ``TypeError`` when ``scheme`` is not a string."""
    if not isinstance(scheme, str):
        raise TypeError(f"scheme must be a name such as 'auto', 'torch' or 'he_normal', got "
                        f"{type(scheme).__name__} {scheme!r}")
    name = scheme.strip().lower()
    if name == "torch":
        return None
    if name in ("auto", "standard"):
        return init(model, example_input, seed=seed)
    return init(model, example_input, policy=name, seed=seed)


def load_target(spec: str) -> nn.Module:
    """Load ``"path/to/file.py:factory"`` or ``"package.module:factory"`` and return the module
    made by calling ``factory()`` (or the ``nn.Module`` instance found there).

    Raises ``ValueError`` with a one-line message on any problem (bad syntax, missing file or
    module, error while importing, missing attribute, factory failing, calling ``sys.exit`` or
    not returning an ``nn.Module``); the original exception is its ``__cause__``, so a traceback
    shows the frames of the user's own code. ``KeyboardInterrupt`` is not caught.
    """
    if not isinstance(spec, str) or ":" not in spec:
        raise ValueError(f"TARGET {spec!r} must look like path/to/file.py:factory or package.module:factory")
    where, _, attr = spec.rpartition(":")
    if not where or not attr or not attr.replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"TARGET {spec!r} must look like path/to/file.py:factory or package.module:factory")
    is_file = where.endswith(".py") or os.sep in where or "/" in where
    if is_file:
        if not os.path.isfile(where):
            raise ValueError(f"TARGET file {where!r} does not exist")
        name = f"_initwise_target_{abs(hash(os.path.abspath(where)))}"
        spec_obj = importlib.util.spec_from_file_location(name, where)
        if spec_obj is None or spec_obj.loader is None:
            raise ValueError(f"cannot import {where!r} as a Python file")
    try:
        if is_file:
            module = importlib.util.module_from_spec(spec_obj)
            sys.modules[name] = module
            directory = os.path.dirname(os.path.abspath(where))
            added = directory not in sys.path
            if added:
                sys.path.insert(0, directory)
            try:
                spec_obj.loader.exec_module(module)
            finally:
                if added:
                    sys.path.remove(directory)
        else:
            module = importlib.import_module(where)
    except ModuleNotFoundError as exc:
        raise ValueError(f"cannot import {where!r}: {exc}") from exc
    except SyntaxError as exc:
        raise ValueError(f"syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}") from exc
    except SystemExit as exc:
        raise ValueError(f"importing {where!r} called sys.exit({exc.code!r}); guard the script part of "
                         "the file with if __name__ == '__main__':") from exc
    except Exception as exc:  # noqa: BLE001 - any error in user code becomes one line
        raise ValueError(f"error while importing {where!r}: {type(exc).__name__}: {one_line(exc, 200)}") from exc

    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(module) if not n.startswith("_")]
            raise ValueError(f"{where!r} has no attribute {attr!r}; available: {', '.join(names[:12])}")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ValueError(f"{spec!r} is a {type(obj).__name__}, not a factory function or nn.Module")
    try:
        result = obj()
    except TypeError as exc:
        raise ValueError(f"calling {attr}() failed: {one_line(exc, 200)} (the factory must take no arguments)") from exc
    except SystemExit as exc:
        raise ValueError(f"calling {attr}() called sys.exit({exc.code!r}); the factory must return the "
                         "model") from exc
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"calling {attr}() failed: {type(exc).__name__}: {one_line(exc, 200)}") from exc
    if not isinstance(result, nn.Module):
        raise ValueError(f"{attr}() returned a {type(result).__name__}, not an nn.Module")
    return result

