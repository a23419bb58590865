"""Bundled, offline, real data sets behind one loader.

``load_dataset(name)`` returns a :class:`Dataset`: fixed train/test split, inputs standardized
with statistics fitted on the training split only, as float32 / int64 tensors.

Sources (nothing is ever downloaded):

- ``digits``: scikit-learn's 8x8 handwritten digits (1797 images, 10 classes), bundled with
  scikit-learn. Images are (1, 8, 8); read as a sequence they are 64 pixel steps or 8 rows.
- ``breast_cancer``: scikit-learn's Wisconsin breast cancer table (569 x 30, 2 classes).
- ``wine``: scikit-learn's wine table (178 x 13, 3 classes).
- ``mnist1d``: MNIST-1D (Greydanus 2020), *generated* locally by
  ``mnist1d.data.make_dataset`` with its default arguments (seed 42): 4000 train / 1000 test
  signals of length 40, 10 classes. ``mnist1d.data.get_dataset`` is never called because it may
  try to download a pickle.

The generated / loaded raw arrays are cached in memory for the life of the process.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import numpy as np
import torch

DATASET_NAMES: tuple[str, ...] = ("digits", "breast_cancer", "wine", "mnist1d")

#: per-sample layout of each data set when read as an image (C, *spatial)
_IMAGE_SHAPES: dict[str, tuple[int, ...]] = {"digits": (1, 8, 8), "mnist1d": (1, 40)}

#: fraction of the scikit-learn data sets held out for testing (stratified, fixed seed)
TEST_FRACTION = 0.25
SPLIT_SEED = 0


@dataclass(frozen=True)
class Dataset:
    """A standardized, split data set.

    ``x_train`` / ``x_test`` are float32 tensors of shape (n, n_features) (flat features);
    use :meth:`as_images` or :meth:`as_sequence` for the CNN / recurrent layouts.
    ``mean`` / ``std`` are the per-feature training statistics used to standardize both splits.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    n_features: int
    image_shape: tuple[int, ...] | None
    mean: torch.Tensor = field(repr=False)
    std: torch.Tensor = field(repr=False)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the flat inputs: ``(n_features,)``."""
        return (self.n_features,)

    def as_images(self, x: torch.Tensor) -> torch.Tensor:
        """Reshape flat inputs (n, n_features) to (n, *image_shape) for a CNN."""
        if self.image_shape is None:
            raise ValueError(
                f"dataset {self.name!r} is tabular and has no image layout; "
                f"use arch='mlp' or one of {sorted(_IMAGE_SHAPES)}"
            )
        return x.reshape(x.shape[0], *self.image_shape)

    def sequence_shape(self, mode: str = "pixel") -> tuple[int, int]:
        """(steps, features per step) of the sequence layout.

        ``mode="pixel"`` reads one value per step (digits: 64 steps of 1 pixel);
        ``mode="row"`` reads one image row per step (digits: 8 steps of 8 pixels).
        """
        if mode == "pixel":
            return (self.n_features, 1)
        if mode == "row":
            if self.image_shape is None or len(self.image_shape) != 3:
                raise ValueError(
                    f"sequence mode 'row' needs 2-D images; dataset {self.name!r} has "
                    f"image shape {self.image_shape}; use mode='pixel'"
                )
            _, rows, cols = self.image_shape
            return (rows, cols)
        raise ValueError(f"unknown sequence mode {mode!r}; use 'pixel' or 'row'")

    def as_sequence(self, x: torch.Tensor, mode: str = "pixel") -> torch.Tensor:
        """Reshape flat inputs (n, n_features) to (n, steps, features per step)."""
        steps, per_step = self.sequence_shape(mode)
        return x.reshape(x.shape[0], steps, per_step)


# ---------------------------------------------------------------------------- raw loaders
@functools.lru_cache(maxsize=None)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unstandardized (x_train, y_train, x_test, y_test) as numpy arrays; cached per process."""
    if name == "mnist1d":
        return _raw_mnist1d()
    try:
        from sklearn import datasets as skd
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"dataset {name!r} needs scikit-learn: pip install 'initwise[full]'"
        ) from exc
    loader = {
        "digits": skd.load_digits,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
    }[name]
    bunch = loader()
    x = np.asarray(bunch.data, dtype=np.float64)
    y = np.asarray(bunch.target, dtype=np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y
    )
    return x_tr, y_tr, x_te, y_te


def _raw_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D generated offline with the package defaults (seed 42, 4000/1000 split).

    ``make_dataset`` reseeds Python's and NumPy's global generators; their states are saved
    and restored so that loading the data set has no side effect on the caller.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("dataset 'mnist1d' needs the mnist1d package: "
                          "pip install 'initwise[full]'") from exc
    args = get_dataset_args()
    args.seed = 42
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return (
        np.asarray(data["x"], dtype=np.float64),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float64),
        np.asarray(data["y_test"], dtype=np.int64),
    )


# ---------------------------------------------------------------------------- public loader
def load_dataset(name: str) -> Dataset:
    """Load one of :data:`DATASET_NAMES` with a fixed split and standardized inputs.

    Standardization: ``x' = (x - mean_train) / std_train`` per feature, with ``std_train``
    replaced by 1 for features that are constant on the training split (e.g. the always-blank
    corner pixels of ``digits``), so those features become exactly 0.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a string, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
    x_tr, y_tr, x_te, y_te = _raw(key)
    mean = x_tr.mean(axis=0)
    std = x_tr.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    x_tr_s = ((x_tr - mean) / std).astype(np.float32)
    x_te_s = ((x_te - mean) / std).astype(np.float32)
    n_classes = int(max(y_tr.max(), y_te.max()) + 1)
    return Dataset(
        name=key,
        x_train=torch.from_numpy(x_tr_s),
        y_train=torch.from_numpy(y_tr.copy()),
        x_test=torch.from_numpy(x_te_s),
        y_test=torch.from_numpy(y_te.copy()),
        n_classes=n_classes,
        n_features=int(x_tr.shape[1]),
        image_shape=_IMAGE_SHAPES.get(key),
        mean=torch.from_numpy(mean.astype(np.float32)),
        std=torch.from_numpy(std.astype(np.float32)),
    )
