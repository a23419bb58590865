"""Policies: how a plan chooses each tensor's scheme.

``"standard"`` (:mod:`.standard`: the mission's table, corrected by the signal propagated
through the recorded graph, residual-aware), ``"torch"`` (:mod:`.pytorch`: PyTorch's own
defaults), the field's recipes (:mod:`.recipes`: ``"gpt2"`` (alias ``"megatron"``),
``"torchtitan"``, ``"olmo_mitchell"``, ``"t_fixup"``, ``"deepnorm"``, ``"fixup"``, ``"skipinit"``)
or one scheme for every weight (:mod:`.schemes`).
"""
from __future__ import annotations

from ..rules import with_distribution
from ..schemes import canonical_name
from .recipes import RECIPES

__all__ = ["normalize_policy", "POLICIES", "RECIPES"]

POLICIES = ("standard", "torch")
_ALIASES = {"megatron": "gpt2", "olmo": "olmo_mitchell", "mitchell": "olmo_mitchell", "tfixup": "t_fixup",
            "t-fixup": "t_fixup", "deepnet": "deepnorm", "skip_init": "skipinit"}


def normalize_policy(policy: str, distribution: str = "normal") -> str:
    """The canonical form of ``policy`` ("standard", "torch", a recipe of :data:`RECIPES` or a
    registry scheme name with the distribution applied to a bare family name);
    ``ValueError``/``TypeError`` for anything else. Lets callers validate a policy before doing
    any work."""
    if not isinstance(policy, str):
        raise TypeError(f"policy must be a string, got {type(policy).__name__}")
    p = policy.strip().lower()
    p = _ALIASES.get(p, p)
    if p in POLICIES or p in RECIPES:
        return p
    try:
        name = canonical_name(p)
    except ValueError as exc:
        raise ValueError(f"unknown policy {policy!r}: use 'standard', 'torch', a recipe ({', '.join(RECIPES)}) or "
                         f"a scheme name ({exc})") from None
    if name == "constant":
        raise ValueError("policy 'constant' needs a value; use rules with zeros, or policy 'zeros'")
    if not (name.startswith(("xavier", "kaiming", "lecun")) or name in _WHOLE_MODEL):
        raise ValueError(f"scheme {name!r} cannot be used as a whole-model policy (it has no rule for biases, "
                         f"norms and fans); use it in rules={{'name.*': {name!r}}}, or a policy: 'standard', 'torch', "
                         "xavier/he/lecun (normal, uniform, truncated_normal), orthogonal, delta_orthogonal, zeros, "
                         "small_normal, small_uniform")
    return with_distribution(p, name, distribution)


_WHOLE_MODEL = frozenset({"orthogonal", "delta_orthogonal", "zeros", "small_normal", "small_uniform"})
