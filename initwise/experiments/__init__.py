"""Evidence on real data: offline data sets, plain deep models, a fixed training recipe,
comparisons of initialization schemes, depth sweeps and the claims behind initwise.

Needs the optional dependencies (``pip install 'initwise[full]'``): scikit-learn and mnist1d
for the data, matplotlib for the plots. Nothing is downloaded.
"""
from .claims import CLAIMS, ClaimResult, run_claim
from .compare import DEFAULT_SCHEMES, Sweep, TrainingComparison, check_config, compare, sweep
from .datasets import DATASET_NAMES, Dataset, load_dataset
from .models import (
    ACTIVATIONS,
    ARCHS,
    MIN_DEPTH,
    SequenceClassifier,
    build_model,
    check_model,
    cnn,
    mlp,
    model_inputs,
)
from .training import (
    SPECIAL_SCHEMES,
    RunResult,
    TrainConfig,
    activation_stats,
    apply_experiment_scheme,
    check_scheme,
    evaluate,
    orthogonalize_recurrent_,
    row_spread,
    train,
)

__all__ = [
    "DATASET_NAMES", "Dataset", "load_dataset",
    "ARCHS", "ACTIVATIONS", "MIN_DEPTH", "mlp", "cnn", "SequenceClassifier", "build_model",
    "check_model", "model_inputs",
    "SPECIAL_SCHEMES", "TrainConfig", "RunResult", "apply_experiment_scheme", "check_scheme",
    "orthogonalize_recurrent_", "train", "evaluate",
    "activation_stats", "row_spread",
    "DEFAULT_SCHEMES", "TrainingComparison", "Sweep", "check_config", "compare", "sweep",
    "CLAIMS", "ClaimResult", "run_claim",
]
