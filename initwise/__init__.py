"""initwise: the right initial weights for every layer of a PyTorch network.

Public API (stable): fans and gains, the in-place schemes and their registry, the whole-model
planner (``plan``/``init``), diagnostics and the experiments live in their own modules and are
re-exported here.
"""
from . import atomic
from .fans import fans, param_blocks
from .gains import GAIN_NAMES, activation_name, gain
from .schemes import (
    SCHEME_NAMES,
    canonical_name,
    constant_,
    delta_orthogonal_,
    dirac_,
    eye_,
    get_initializer,
    he_normal_,
    he_truncated_normal_,
    he_uniform_,
    kaiming_normal_,
    kaiming_truncated_normal_,
    kaiming_uniform_,
    lecun_normal_,
    lecun_truncated_normal_,
    lecun_uniform_,
    normal_,
    ones_,
    orthogonal_,
    small_normal_,
    small_uniform_,
    sparse_,
    trunc_normal_,
    uniform_,
    variance_scaling_,
    variance_scaling_std,
    xavier_normal_,
    xavier_truncated_normal_,
    xavier_uniform_,
    zeros_,
)
from .activations import Activation
from .discover import Discovery, discover
from .plan import Plan, PlanEntry
from .policies.table import recommend
from .api import apply_scheme, init, load_target, plan  # the function `plan` hides the submodule name
from .lsuv import lsuv  # the function hides the submodule name
from .policies import RECIPES
from .diagnose import (
    Comparison,
    DiagnosisThresholds,
    Finding,
    LayerDiagnosis,
    Report,
    compare_schemes,
    diagnose,  # hides the submodule name, as `plan` does
    plot_reports,
)
from .table import Table

__version__ = "0.1.0"

__all__ = [
    "fans", "param_blocks", "gain", "activation_name", "GAIN_NAMES",
    "variance_scaling_", "xavier_normal_", "xavier_uniform_", "xavier_truncated_normal_",
    "kaiming_normal_", "kaiming_uniform_", "kaiming_truncated_normal_",
    "he_normal_", "he_uniform_", "he_truncated_normal_",
    "lecun_normal_", "lecun_uniform_", "lecun_truncated_normal_",
    "orthogonal_", "delta_orthogonal_", "zeros_", "constant_", "small_normal_", "small_uniform_",
    "ones_", "eye_", "dirac_", "uniform_", "normal_", "trunc_normal_", "sparse_", "variance_scaling_std",
    "get_initializer", "canonical_name", "SCHEME_NAMES",
    "discover", "Discovery", "Activation", "plan", "init", "Plan", "PlanEntry", "recommend", "load_target", "apply_scheme",
    "lsuv", "RECIPES",
    "diagnose", "compare_schemes", "Report", "Comparison", "LayerDiagnosis", "Finding",
    "DiagnosisThresholds", "plot_reports", "Table",
]
