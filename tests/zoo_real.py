"""Real third-party architectures from small configs, random weights, no download.

Each builder returns a :class:`RealModel`: the model exactly as its framework builds it
(``transformers`` ``Model(config)``, whose ``post_init`` runs the model's own ``_init_weights``;
hand-written models with torch's defaults), its natural example input, the task, the number of
classes (or the vocabulary) so that the initial loss can be compared with ln(C), a training
loss, and the modules whose outputs form the residual stream (one per block, in order).

    from tests.zoo_real import REAL_ZOO
    rm = REAL_ZOO["llama"]()          # built with torch.manual_seed(0)
    loss = rm.loss(rm.model, rm.example_input)

Every dropout probability of the configs is 0 (the measurements run in train mode), SpecAugment
and LayerDrop are off. Sizes are small (hidden 32-64, 2-4 heads, vocab 256, sequence 32, batch
4-8) so each builder plus one forward pass takes well under a second on one CPU core. Nothing is
downloaded; ``from_pretrained`` is never called.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

try:  # transformers is a test dependency; the hand-written models work without it
    import transformers
    from transformers import BatchEncoding
except ImportError:  # pragma: no cover - the tests skip the HF models with a reason
    transformers = None
    BatchEncoding = None

__all__ = ["RealModel", "REAL_ZOO", "HF_MODELS", "HAND_MODELS", "build", "call", "first_tensor",
           "logits_of", "VOCAB", "SEQ", "BATCH"]

VOCAB = 256
SEQ = 32
BATCH = 4


@dataclass
class RealModel:
    """One zoo model and what the measurements need to know about it.

    ``streams`` maps a stream label (``"decoder"``, ``"encoder"`` ...) to the qualified names of
    the modules whose first tensor output is the residual stream after each block, in order;
    empty when the model has no residual stream (then ``no_stream_reason`` says why).
    ``post_norm``: blocks end with a norm (BERT, Wav2Vec2's default layout), so the stream is
    reset to unit scale by the block itself. ``classes``: the number of classes of the loss
    (the vocabulary for a language model), so a model that starts knowing nothing has loss
    ln(classes). ``loss(model, example_input)`` is the training loss on that input (random
    targets drawn from a fixed generator). ``frozen``: names of parameters the framework
    built with ``requires_grad=False``.
    """

    name: str
    model: nn.Module
    example_input: Any
    task: str
    classes: int
    loss: Callable[[nn.Module, Any], torch.Tensor]
    streams: dict[str, tuple[str, ...]] = field(default_factory=dict)
    post_norm: bool = False
    no_stream_reason: str = ""
    embeddings: tuple[str, ...] = ()
    framework: str = "transformers"
    notes: str = ""

    @property
    def stream(self) -> tuple[str, ...]:
        """The first (main) residual stream, ``()`` when there is none."""
        return next(iter(self.streams.values()), ())

    @property
    def frozen(self) -> list[str]:
        return [n for n, p in self.model.named_parameters() if not p.requires_grad]

    @property
    def log_classes(self) -> float:
        return math.log(self.classes)


# ----------------------------------------------------------------------------- helpers
def call(model: nn.Module, inputs: Any) -> Any:
    """``model(**inputs)`` for a mapping (dict, ``BatchEncoding``), ``model(*inputs)`` for a
    tuple/list, else ``model(inputs)``."""
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    if hasattr(inputs, "keys") and hasattr(inputs, "__getitem__"):
        return model(**dict(inputs))
    return model(inputs)


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in ``obj`` (a tensor, a tuple/list, a dict or a ``ModelOutput``)."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):  # ModelOutput is an OrderedDict: its first set field
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        for item in obj:
            t = first_tensor(item)
            if t is not None:
                return t
    return None


def logits_of(out: Any) -> torch.Tensor:
    """``out.logits`` for a transformers output, else the first tensor."""
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    t = first_tensor(out)
    if t is None:
        raise TypeError(f"no tensor in the model output {type(out).__name__}")
    return t


def _targets(shape: tuple[int, ...], classes: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=g)


def _ids(batch: int = BATCH, seq: int = SEQ, vocab: int = VOCAB, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, seq), generator=g)


def _no_dropout(cfg: Any) -> Any:
    """Every ``*dropout*``/``*pdrop*``/``*layerdrop*``/``drop_path*`` probability of ``cfg`` set
    to 0, SpecAugment masks off."""
    for key, value in cfg.to_dict().items():
        k = key.lower()
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (
                "dropout" in k or "pdrop" in k or "layerdrop" in k or k.startswith("drop_path")
                or k in ("mask_time_prob", "mask_feature_prob")):
            setattr(cfg, key, 0.0)
    if hasattr(cfg, "apply_spec_augment"):
        cfg.apply_spec_augment = False
    return cfg


def _next_token_loss(classes: int) -> Callable[[nn.Module, Any], torch.Tensor]:
    """Causal LM: cross-entropy of the logits at position t against the input id at t+1."""
    def loss(model: nn.Module, inputs: Any) -> torch.Tensor:
        ids = inputs["input_ids"] if not isinstance(inputs, torch.Tensor) else inputs
        logits = logits_of(call(model, inputs))
        return F.cross_entropy(logits[:, :-1].reshape(-1, classes).float(), ids[:, 1:].reshape(-1))
    return loss


def _token_loss(classes: int, key: str = "input_ids") -> Callable[[nn.Module, Any], torch.Tensor]:
    """Per-token classification (masked LM, seq2seq): CE of every position's logits against
    random tokens."""
    def loss(model: nn.Module, inputs: Any) -> torch.Tensor:
        logits = logits_of(call(model, inputs))
        targets = _targets(tuple(logits.shape[:-1]), classes)
        return F.cross_entropy(logits.reshape(-1, classes).float(), targets.reshape(-1))
    return loss


def _class_loss(classes: int) -> Callable[[nn.Module, Any], torch.Tensor]:
    """Sequence/image classification: CE against random labels, one per sample."""
    def loss(model: nn.Module, inputs: Any) -> torch.Tensor:
        logits = logits_of(call(model, inputs))
        return F.cross_entropy(logits.float(), _targets((logits.shape[0],), classes))
    return loss


def _layers(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}.{i}" for i in range(n))


def _encoding(**tensors: torch.Tensor) -> Any:
    return BatchEncoding(tensors, tensor_type="pt")


def _impl(impl: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in impl.items() if v is not None}


def _lm_common(**impl: Any) -> dict[str, Any]:
    """The vocabulary, special tokens inside it (the configs' defaults point past a vocabulary of
    256; ``pad_token_id`` keeps each config's default) and the implementation choices."""
    return dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
                **{k: v for k, v in impl.items() if v is not None})


# ----------------------------------------------------------------------------- transformers
def bert(**impl: Any) -> RealModel:
    """BERT masked LM, post-norm, 8 layers, hidden 64 (word + position + token-type embeddings
    summed, then LayerNorm; decoder tied to the word embeddings)."""
    cfg = _no_dropout(transformers.BertConfig(
        hidden_size=64, num_hidden_layers=8, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=64, type_vocab_size=2, **_lm_common(**impl)))
    model = transformers.BertForMaskedLM(cfg)
    ids = _ids()
    inputs = _encoding(input_ids=ids, token_type_ids=torch.zeros_like(ids),
                       attention_mask=torch.ones_like(ids))
    return RealModel("bert", model, inputs, "masked_lm", VOCAB, _token_loss(VOCAB),
                     {"encoder": _layers("bert.encoder.layer", 8)}, post_norm=True,
                     embeddings=("bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings",
                                 "bert.embeddings.token_type_embeddings"))


def gpt2(**impl: Any) -> RealModel:
    """GPT-2 LM, 12 layers, hidden 64; ``Conv1D`` layers (weight (in, out), ``addmm``), lm_head
    tied to ``wte``."""
    cfg = _no_dropout(transformers.GPT2Config(
        n_positions=64, n_embd=64, n_layer=12, n_head=4, **_lm_common(**impl)))
    model = transformers.GPT2LMHeadModel(cfg)
    ids = _ids()
    inputs = _encoding(input_ids=ids, attention_mask=torch.ones_like(ids))
    return RealModel("gpt2", model, inputs, "causal_lm", VOCAB, _next_token_loss(VOCAB),
                     {"decoder": _layers("transformer.h", 12)},
                     embeddings=("transformer.wte", "transformer.wpe"))


def gpt_neo(**impl: Any) -> RealModel:
    """GPT-Neo LM, 8 layers alternating global/local attention, ``gelu_new`` MLP, no 1/sqrt(d)
    in its attention."""
    cfg = _no_dropout(transformers.GPTNeoConfig(
        max_position_embeddings=64, hidden_size=64, num_layers=8, num_heads=4, intermediate_size=128,
        attention_types=[[["global", "local"], 4]], window_size=16, activation_function="gelu_new",
        **_lm_common(**impl)))
    model = transformers.GPTNeoForCausalLM(cfg)
    ids = _ids()
    inputs = _encoding(input_ids=ids, attention_mask=torch.ones_like(ids))
    return RealModel("gpt_neo", model, inputs, "causal_lm", VOCAB, _next_token_loss(VOCAB),
                     {"decoder": _layers("transformer.h", 8)},
                     embeddings=("transformer.wte", "transformer.wpe"))


def _llama_like(name: str, config_cls: str, model_cls: str, impl: dict[str, Any], layers: int = 12,
                **extra: Any) -> RealModel:
    cfg = _no_dropout(getattr(transformers, config_cls)(
        hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, **_lm_common(**impl), **extra))
    model = getattr(transformers, model_cls)(cfg)
    ids = _ids()
    inputs = _encoding(input_ids=ids, attention_mask=torch.ones_like(ids))
    return RealModel(name, model, inputs, "causal_lm", VOCAB, _next_token_loss(VOCAB),
                     {"decoder": _layers("model.layers", layers)})


def llama(**impl: Any) -> RealModel:
    """Llama LM, 12 layers, hidden 64, GQA (4 heads, 2 kv heads), SwiGLU, RMSNorm, RoPE."""
    return _llama_like("llama", "LlamaConfig", "LlamaForCausalLM", impl)


def qwen2(**impl: Any) -> RealModel:
    """Qwen2 LM, 12 layers, q/k/v biases, ``tie_word_embeddings=True``."""
    return _llama_like("qwen2", "Qwen2Config", "Qwen2ForCausalLM", impl, tie_word_embeddings=True)


def mistral(**impl: Any) -> RealModel:
    """Mistral LM, 12 layers (Llama layout, sliding window off at this length)."""
    return _llama_like("mistral", "MistralConfig", "MistralForCausalLM", impl)


def mixtral(**impl: Any) -> RealModel:
    """Mixtral MoE LM, 8 layers, 4 experts top-2; experts fused in 3-D parameters
    ``gate_up_proj`` (E, 2I, H) and ``down_proj`` (E, H, I); router jitter off."""
    return _llama_like("mixtral", "MixtralConfig", "MixtralForCausalLM", impl, layers=8,
                       num_local_experts=4, num_experts_per_tok=2, router_jitter_noise=0.0,
                       output_router_logits=False)


def t5(**impl: Any) -> RealModel:
    """T5 conditional generation, 4 + 4 blocks, d_model 64, relative position bias in the first
    block of each stack, no 1/sqrt(d) in attention, shared tied embeddings (output scaled by
    d_model**-0.5)."""
    cfg = _no_dropout(transformers.T5Config(
        d_model=64, d_kv=16, d_ff=128, num_layers=4, num_decoder_layers=4, num_heads=4,
        relative_attention_num_buckets=16, relative_attention_max_distance=32,
        decoder_start_token_id=0, **_lm_common(**impl)))
    model = transformers.T5ForConditionalGeneration(cfg)
    ids = _ids()
    dec = _ids(seed=2)
    inputs = _encoding(input_ids=ids, attention_mask=torch.ones_like(ids), decoder_input_ids=dec)
    return RealModel("t5", model, inputs, "seq2seq_lm", VOCAB, _token_loss(VOCAB),
                     {"encoder": _layers("encoder.block", 4), "decoder": _layers("decoder.block", 4)})


def vit(**impl: Any) -> RealModel:
    """ViT image classifier, 32x32 images, 8x8 patches (16 + cls tokens), 8 layers, 10 classes."""
    cfg = _no_dropout(transformers.ViTConfig(
        image_size=32, patch_size=8, num_channels=3, hidden_size=64, num_hidden_layers=8,
        num_attention_heads=4, intermediate_size=128, num_labels=10, **_impl(impl)))
    model = transformers.ViTForImageClassification(cfg)
    g = torch.Generator().manual_seed(0)
    inputs = {"pixel_values": torch.randn(8, 3, 32, 32, generator=g)}
    return RealModel("vit", model, inputs, "image_classification", 10, _class_loss(10),
                     {"encoder": _layers("vit.layers", 8)})


def whisper(**impl: Any) -> RealModel:
    """Whisper encoder + classification head, 16 mel bins x 64 frames (stride-2 conv: 32
    positions), 6 layers; ``embed_positions`` is a frozen sinusoidal table."""
    cfg = _no_dropout(transformers.WhisperConfig(
        num_mel_bins=16, d_model=64, encoder_layers=6, encoder_attention_heads=4, encoder_ffn_dim=128,
        decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=128, max_source_positions=32,
        max_target_positions=32, num_labels=5, decoder_start_token_id=1, pad_token_id=0,
        **_lm_common(**impl)))
    model = transformers.WhisperForAudioClassification(cfg)
    g = torch.Generator().manual_seed(0)
    inputs = {"input_features": torch.randn(4, 16, 64, generator=g)}
    return RealModel("whisper", model, inputs, "audio_classification", 5, _class_loss(5),
                     {"encoder": _layers("encoder.layers", 6)})


def wav2vec2(**impl: Any) -> RealModel:
    """Wav2Vec2 sequence classifier on 1600 raw samples (3 feature convs -> 79 frames), 4 post-norm
    layers, weight-normed positional conv (parametrizations.weight.original0/1)."""
    cfg = _no_dropout(transformers.Wav2Vec2Config(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
        conv_dim=(32, 32, 32), conv_stride=(5, 2, 2), conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, num_labels=6,
        classifier_proj_size=32, **_impl(impl)))
    model = transformers.Wav2Vec2ForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    inputs = {"input_values": torch.randn(4, 1600, generator=g)}
    return RealModel("wav2vec2", model, inputs, "audio_classification", 6, _class_loss(6),
                     {"encoder": _layers("wav2vec2.encoder.layers", 4)}, post_norm=True)


# ----------------------------------------------------------------------------- hand-written
class ResidualMLPBlock(nn.Module):
    """``x + fc2(relu(fc1(x)))``, no normalization."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResidualMLP(nn.Module):
    def __init__(self, features: int = 16, width: int = 32, blocks: int = 100, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Linear(features, width)
        self.blocks = nn.ModuleList(ResidualMLPBlock(width) for _ in range(blocks))
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ResidualConvBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``, 3x3 convolutions, no normalization."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


class ResidualCNN(nn.Module):
    def __init__(self, channels: int = 8, blocks: int = 100, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, channels, 3, padding=1)
        self.blocks = nn.ModuleList(ResidualConvBlock(channels) for _ in range(blocks))
        self.head = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


class PreNormBlock(nn.Module):
    """``x + attn(ln1(x))``, then ``x + fc2(gelu(fc1(ln2(x))))``; causal softmax attention with
    1/sqrt(head_dim), fused q/k/v projection."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        attn = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x))))


class PreNormLM(nn.Module):
    def __init__(self, vocab: int = 128, d: int = 32, heads: int = 2, blocks: int = 48, seq: int = 16) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(PreNormBlock(d, heads) for _ in range(blocks))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


def residual_mlp() -> RealModel:
    """100 blocks ``x + W2 relu(W1 x)`` (width 32), no norm; 16 features, 10 classes."""
    model = ResidualMLP()
    g = torch.Generator().manual_seed(0)
    return RealModel("residual_mlp", model, torch.randn(64, 16, generator=g), "classification", 10,
                     _class_loss(10), {"blocks": _layers("blocks", 100)}, framework="torch")


def residual_cnn() -> RealModel:
    """100 blocks ``x + conv2(relu(conv1(x)))`` (8 channels, 8x8), no norm; 10 classes."""
    model = ResidualCNN()
    g = torch.Generator().manual_seed(0)
    return RealModel("residual_cnn", model, torch.randn(8, 3, 8, 8, generator=g), "classification", 10,
                     _class_loss(10), {"blocks": _layers("blocks", 100)}, framework="torch")


def prenorm_lm() -> RealModel:
    """48 pre-norm blocks (d 32, 2 heads, GELU MLP), vocab 128, sequence 16, untied head."""
    model = PreNormLM()
    ids = _ids(batch=4, seq=16, vocab=128)
    return RealModel("prenorm_lm", model, ids, "causal_lm", 128, _next_token_loss(128),
                     {"blocks": _layers("blocks", 48)}, embeddings=("tok", "pos"), framework="torch")


HF_MODELS: dict[str, Callable[[], RealModel]] = {
    "bert": bert, "gpt2": gpt2, "gpt_neo": gpt_neo, "llama": llama, "qwen2": qwen2,
    "mistral": mistral, "mixtral": mixtral, "t5": t5, "vit": vit, "whisper": whisper,
    "wav2vec2": wav2vec2,
}
HAND_MODELS: dict[str, Callable[[], RealModel]] = {
    "residual_mlp": residual_mlp, "residual_cnn": residual_cnn, "prenorm_lm": prenorm_lm,
}
_BUILDERS = {**HF_MODELS, **HAND_MODELS}


def build(name: str, seed: int = 0, *, attn_implementation: str | None = None,
          experts_implementation: str | None = None) -> RealModel:
    """Build zoo model ``name`` with ``torch.manual_seed(seed)`` (the same weights every time),
    in train mode. ``attn_implementation`` (``"eager"``, ``"sdpa"``) and
    ``experts_implementation`` (``"eager"``, ``"grouped_mm"``, ``"batched_mm"``) go to a
    transformers config (``None``: transformers' default, sdpa and grouped_mm where supported).
    ``ValueError`` for an unknown name or an implementation given for a hand-written model,
    ``ImportError`` for a transformers model when transformers is not installed."""
    if name not in _BUILDERS:
        raise ValueError(f"unknown zoo model {name!r}; known: {', '.join(_BUILDERS)}")
    impl = {"attn_implementation": attn_implementation, "experts_implementation": experts_implementation}
    if name in HAND_MODELS and any(v is not None for v in impl.values()):
        raise ValueError(f"zoo model {name!r} is hand-written: attn_implementation/experts_implementation "
                         f"apply to transformers models only, got {impl}")
    if name in HF_MODELS and transformers is None:
        raise ImportError(f"zoo model {name!r} needs transformers (pip install transformers)")
    torch.manual_seed(seed)
    rm = _BUILDERS[name](**impl) if name in HF_MODELS else _BUILDERS[name]()
    rm.model.train()
    return rm


REAL_ZOO: dict[str, Callable[[], RealModel]] = {n: (lambda n=n: build(n)) for n in _BUILDERS}
