"""Model builders for the experiments: plain deep MLP, plain CNN, recurrent classifier.

All are deliberately *plain*: no normalization layers, no residual connections, no dropout,
so that the initialization alone decides whether signals survive the depth (the setting of
Glorot & Bengio 2010, He et al. 2015 and Saxe et al. 2014).

``depth`` always counts weight layers including the final ``nn.Linear`` classifier, so an MLP of
depth 30 has 29 hidden ``Linear -> activation`` blocks and one output ``Linear``.
"""
from __future__ import annotations

import torch
from torch import nn

from .datasets import _IMAGE_SHAPES, DATASET_NAMES, Dataset

ARCHS: tuple[str, ...] = ("mlp", "cnn", "rnn", "lstm", "gru")

#: activation name -> module factory (names as accepted by initwise.gain)
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "selu": nn.SELU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "identity": nn.Identity,
}


#: smallest ``depth`` of each arch: an MLP may be a linear classifier, a CNN needs one
#: convolution and the classifier, a recurrent net one recurrent layer and the classifier
MIN_DEPTH: dict[str, int] = {"mlp": 1, "cnn": 2, "rnn": 2, "lstm": 2, "gru": 2}


def check_model(arch: str, dataset: str, *, depth: int, width: int, activation: str,
                seq_mode: str = "pixel") -> None:
    """Validate the arguments of :func:`build_model` for the data set named ``dataset`` without
    loading any data; raise ``ValueError`` naming the bad argument and what would work.

    Checks: ``arch`` in :data:`ARCHS`, ``dataset`` in :data:`DATASET_NAMES`, a CNN only on
    image or 1-D signal data, ``depth >= MIN_DEPTH[arch]``, ``width >= 1``, a known activation
    (a plain RNN: tanh or relu), ``seq_mode`` "pixel" or "row" ("row" needs 2-D images).
    """
    if not isinstance(arch, str) or arch.lower() not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")
    arch = arch.lower()
    if not isinstance(dataset, str) or dataset.lower().replace("-", "_") not in DATASET_NAMES:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASET_NAMES)}")
    key = dataset.lower().replace("-", "_")
    image = _IMAGE_SHAPES.get(key)
    if arch == "cnn" and image is None:
        raise ValueError(f"arch 'cnn' needs image or 1-D signal data; dataset {dataset!r} is "
                         f"tabular: use {' or '.join(sorted(_IMAGE_SHAPES))}, or arch 'mlp'")
    for name, value in (("depth", depth), ("width", width)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if depth < MIN_DEPTH[arch]:
        raise ValueError(f"arch {arch!r} needs depth >= {MIN_DEPTH[arch]} (weight layers "
                         f"including the classifier), got {depth}")
    if arch == "rnn":
        if activation not in ("tanh", "relu"):
            raise ValueError(f"nn.RNN supports activation 'tanh' or 'relu', got {activation!r}")
    elif arch in ("mlp", "cnn"):
        make_activation(activation)
    if arch in ("rnn", "lstm", "gru"):
        if seq_mode not in ("pixel", "row"):
            raise ValueError(f"unknown sequence mode {seq_mode!r}; use 'pixel' or 'row'")
        if seq_mode == "row" and (image is None or len(image) != 3):
            raise ValueError(f"sequence mode 'row' needs 2-D images; dataset {dataset!r} has "
                             f"none: use seq_mode 'pixel' (or dataset 'digits')")


def make_activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (one of :data:`ACTIVATIONS`)."""
    try:
        return ACTIVATIONS[name.lower()]()
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}"
        ) from None


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")


def mlp(in_features: int, n_classes: int, *, depth: int, width: int = 128,
        activation: str = "relu") -> nn.Sequential:
    """Plain MLP: ``depth - 1`` hidden blocks ``Linear(width) -> activation``, then ``Linear``.

    ``depth=1`` is a linear classifier. Layers are built with PyTorch's default
    initialization (the "torch" scheme); initialize them afterwards with ``initwise.init``.
    """
    _check_positive(in_features=in_features, n_classes=n_classes, depth=depth, width=width)
    layers: list[nn.Module] = []
    fan_in = in_features
    for _ in range(depth - 1):
        layers += [nn.Linear(fan_in, width), make_activation(activation)]
        fan_in = width
    layers.append(nn.Linear(fan_in, n_classes))
    return nn.Sequential(*layers)


def cnn(image_shape: tuple[int, ...], n_classes: int, *, depth: int, channels: int = 16,
        activation: str = "relu", kernel_size: int = 3) -> nn.Sequential:
    """Plain CNN without normalization: ``depth - 1`` convolutions then a ``Linear`` classifier.

    ``image_shape`` is (C, H, W) for ``Conv2d`` or (C, L) for ``Conv1d``. Every convolution has
    ``channels`` output channels, stride 1 and "same" padding, so the spatial size is kept and
    the classifier sees ``channels * H * W`` features. Needs ``depth >= 2``.
    """
    if not isinstance(image_shape, (tuple, list)) or len(image_shape) not in (2, 3):
        raise ValueError(
            f"image_shape must be (C, L) or (C, H, W), got {image_shape!r}"
        )
    _check_positive(n_classes=n_classes, depth=depth, channels=channels,
                    kernel_size=kernel_size)
    if depth < 2:
        raise ValueError(f"a CNN needs depth >= 2 (convolutions + classifier), got {depth}")
    conv = nn.Conv2d if len(image_shape) == 3 else nn.Conv1d
    in_ch = int(image_shape[0])
    spatial = 1
    for s in image_shape[1:]:
        spatial *= int(s)
    layers: list[nn.Module] = []
    for _ in range(depth - 1):
        layers += [conv(in_ch, channels, kernel_size, padding=kernel_size // 2),
                   make_activation(activation)]
        in_ch = channels
    layers += [nn.Flatten(), nn.Linear(channels * spatial, n_classes)]
    return nn.Sequential(*layers)


class SequenceClassifier(nn.Module):
    """A recurrent net (``nn.RNN``/``nn.LSTM``/``nn.GRU``) read over a sequence, then ``Linear``.

    Input (batch, steps, features); the classifier sees the last layer's hidden state at the
    last step. ``cell="rnn"`` uses ``nonlinearity`` ("tanh" or "relu").
    """

    def __init__(self, input_size: int, n_classes: int, *, cell: str = "rnn",
                 hidden: int = 64, num_layers: int = 1, nonlinearity: str = "tanh") -> None:
        super().__init__()
        _check_positive(input_size=input_size, n_classes=n_classes, hidden=hidden,
                        num_layers=num_layers)
        cell = cell.lower()
        if cell == "rnn":
            if nonlinearity not in ("tanh", "relu"):
                raise ValueError(
                    f"nn.RNN supports nonlinearity 'tanh' or 'relu', got {nonlinearity!r}"
                )
            self.rnn: nn.Module = nn.RNN(input_size, hidden, num_layers,
                                         nonlinearity=nonlinearity, batch_first=True)
        elif cell == "lstm":
            self.rnn = nn.LSTM(input_size, hidden, num_layers, batch_first=True)
        elif cell == "gru":
            self.rnn = nn.GRU(input_size, hidden, num_layers, batch_first=True)
        else:
            raise ValueError(f"unknown recurrent cell {cell!r}; choose rnn, lstm or gru")
        self.cell = cell
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def build_model(arch: str, data: Dataset, *, depth: int = 30, width: int = 128,
                activation: str = "relu", seq_mode: str = "pixel") -> nn.Module:
    """Build the model of ``arch`` (one of :data:`ARCHS`) sized for ``data``.

    - ``mlp``: :func:`mlp` on the flat features (``width`` units per hidden layer);
    - ``cnn``: :func:`cnn` on ``data.image_shape`` (``width`` channels);
    - ``rnn``/``lstm``/``gru``: :class:`SequenceClassifier` over ``data.as_sequence(seq_mode)``
      with ``width`` hidden units and ``depth - 1`` stacked recurrent layers (at least 1);
      ``activation`` is the nonlinearity of a plain RNN.
    """
    arch = arch.lower()
    if arch == "mlp":
        return mlp(data.n_features, data.n_classes, depth=depth, width=width,
                   activation=activation)
    if arch == "cnn":
        if data.image_shape is None:
            raise ValueError(f"arch 'cnn' needs image data; dataset {data.name!r} is tabular")
        return cnn(data.image_shape, data.n_classes, depth=depth, channels=width,
                   activation=activation)
    if arch in ("rnn", "lstm", "gru"):
        _, per_step = data.sequence_shape(seq_mode)
        return SequenceClassifier(per_step, data.n_classes, cell=arch, hidden=width,
                                  num_layers=max(1, depth - 1),
                                  nonlinearity=activation if arch == "rnn" else "tanh")
    raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(ARCHS)}")


def model_inputs(arch: str, data: Dataset, x: torch.Tensor, seq_mode: str = "pixel"
                 ) -> torch.Tensor:
    """Put flat inputs ``x`` (n, n_features) into the layout ``arch`` expects."""
    arch = arch.lower()
    if arch == "cnn":
        return data.as_images(x)
    if arch in ("rnn", "lstm", "gru"):
        return data.as_sequence(x, seq_mode)
    return x


# ---------------------------------------------------------------------------- deeper builders
# Used by benchmarks/peers.py (the head-to-head with other initialization libraries). Built with
# PyTorch's default initialization, like every builder above.
class ResidualBlock(nn.Module):
    """``x + fc2(act(fc1(x)))``: a residual branch of two ``Linear`` layers, no normalization.

    ``fc2`` ends the branch (its output is added to the stream), as in He et al. 2016's
    residual unit without batch normalization.
    """

    def __init__(self, width: int, hidden: int, activation: str = "relu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = make_activation(activation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.act(self.fc1(x)))


class ResidualMLP(nn.Module):
    """``stem -> blocks x ResidualBlock -> act -> head``, without any normalization layer.

    ``stem`` is ``Linear(in_features, width)``, ``head`` is ``Linear(width, n_classes)``; the
    stream keeps ``width`` features; each branch's hidden layer has ``hidden`` (default
    ``width``) units. Whether the stream's variance stays bounded over depth is decided by the
    initialization of the branch ends ``blocks[i].fc2`` alone.
    """

    def __init__(self, in_features: int, n_classes: int, *, blocks: int = 50, width: int = 64,
                 hidden: int | None = None, activation: str = "relu") -> None:
        super().__init__()
        hidden = width if hidden is None else hidden
        _check_positive(in_features=in_features, n_classes=n_classes, blocks=blocks,
                        width=width, hidden=hidden)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, hidden, activation)
                                      for _ in range(blocks)])
        self.act = make_activation(activation)
        self.head = nn.Linear(width, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.blocks(self.stem(x))))


class ConvBlock(nn.Module):
    """Pre-activation residual unit without normalization: ``x + conv2(act(conv1(act(x))))``
    (He et al. 2016, "Identity mappings in deep residual networks", with the BN layers removed).
    3x3 convolutions, "same" padding, ``channels`` in and out."""

    def __init__(self, channels: int, activation: str = "relu") -> None:
        super().__init__()
        self.act1 = make_activation(activation)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act2 = make_activation(activation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.act2(self.conv1(self.act1(x))))


class ConvResNet(nn.Module):
    """A ResNet without BatchNorm for small images (C, H, W):
    ``stem conv3x3 -> blocks x ConvBlock -> act -> global average pool -> Linear``."""

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int, *, blocks: int = 8,
                 channels: int = 16, activation: str = "relu") -> None:
        super().__init__()
        if not isinstance(image_shape, (tuple, list)) or len(image_shape) != 3:
            raise ValueError(f"image_shape must be (C, H, W), got {image_shape!r}")
        _check_positive(n_classes=n_classes, blocks=blocks, channels=channels)
        self.stem = nn.Conv2d(int(image_shape[0]), channels, 3, padding=1)
        self.blocks = nn.Sequential(*[ConvBlock(channels, activation) for _ in range(blocks)])
        self.act = make_activation(activation)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(channels, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pool(self.act(self.blocks(self.stem(x))))
        return self.head(h.flatten(1))


class TransformerClassifier(nn.Module):
    """A small pre-norm transformer encoder over a sequence (batch, steps, features):
    ``Linear(features, d_model) + learned positions -> nn.TransformerEncoder (norm_first, GELU,
    no dropout) -> LayerNorm -> mean over steps -> Linear(d_model, n_classes)``."""

    def __init__(self, steps: int, features: int, n_classes: int, *, d_model: int = 64,
                 heads: int = 4, layers: int = 4, ffn: int | None = None) -> None:
        super().__init__()
        _check_positive(steps=steps, features=features, n_classes=n_classes, d_model=d_model,
                        heads=heads, layers=layers)
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of heads ({heads})")
        self.embed = nn.Linear(features, d_model)
        self.pos = nn.Embedding(steps, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=ffn or 2 * d_model,
                                           dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(x.shape[1], device=x.device)
        h = self.encoder(self.embed(x) + self.pos(positions))
        return self.head(self.norm(h).mean(dim=1))
