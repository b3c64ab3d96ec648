"""Architectures that no one on this project wrote: Hugging Face transformers built from configs (random
weights, nothing downloaded), timm-style image blocks, PyTorch's attention and recurrent layers.

Each case is ``Case(name, build, inputs, output)``: ``build()`` returns the model in eval mode,
``inputs(n, seed)`` a tuple of ``[n, ...]`` tensors passed positionally (a dict: by keyword), and ``output``
what the kernel functions take as ``output=`` (``None`` when the model returns ``[B, O]`` itself). Sizes are
tiny so that a float64 brute force over every kind stays fast; the builders take larger sizes for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

VOCAB, SEQ, CLASSES = 40, 6, 3


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nn.Module]
    inputs: Callable[[int, int], tuple[torch.Tensor, ...]]
    output: Any = None
    tags: tuple[str, ...] = field(default=())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def token_inputs(n: int, seed: int = 0, seq: int = SEQ, vocab: int = VOCAB, pad: bool = True):
    """``{input_ids: [n, seq], attention_mask: [n, seq]}``; with ``pad`` some samples end in padding (id 0)."""
    g = _gen(seed)
    ids = torch.randint(1, vocab, (n, seq), generator=g)
    mask = torch.ones(n, seq, dtype=torch.long)
    if pad:
        lengths = torch.randint(seq // 2, seq + 1, (n,), generator=g)
        lengths[::2] = seq
        mask = (torch.arange(seq) < lengths[:, None]).long()
        ids = ids * mask
    return {"input_ids": ids, "attention_mask": mask}


def image_inputs(n: int, seed: int = 0, c: int = 4, size: int = 6):
    return (torch.randn(n, c, size, size, generator=_gen(seed)),)


def sequence_inputs(n: int, seed: int = 0, seq: int = SEQ, d: int = 8):
    return (torch.randn(n, seq, d, generator=_gen(seed)),)


# --- Hugging Face transformers, from configs -------------------------------------------------------------


def _from_config(cls, config, attn: str | None) -> nn.Module:
    """A randomly initialised model; ``attn`` picks the attention implementation (``None``: the default)."""
    torch.manual_seed(0)
    return cls._from_config(config, **({"attn_implementation": attn} if attn else {})).eval()


def bert(attn: str | None = "eager", hidden: int = 16, layers: int = 2, seq: int = 16) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=max(16, seq),
        num_labels=CLASSES,
    )
    return _from_config(BertForSequenceClassification, config, attn)


def gpt2(attn: str | None = "eager", hidden: int = 16, layers: int = 2) -> nn.Module:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    config = GPT2Config(
        vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=2, n_positions=16, num_labels=CLASSES, pad_token_id=0
    )
    return _from_config(GPT2ForSequenceClassification, config, attn)


def gpt2_lm(hidden: int = 16, layers: int = 1) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_embd=hidden, n_layer=layers, n_head=2, n_positions=16)
    return _from_config(GPT2LMHeadModel, config, "eager")


def t5(attn: str | None = "eager", hidden: int = 16) -> nn.Module:
    from transformers import T5Config, T5ForSequenceClassification

    config = T5Config(
        vocab_size=VOCAB,
        d_model=hidden,
        d_kv=hidden // 2,
        d_ff=2 * hidden,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        num_labels=CLASSES,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return _from_config(T5ForSequenceClassification, config, attn)


def t5_inputs(n: int, seed: int = 0):
    """T5's classifier reads the hidden state at each sample's last end-of-sequence token (id 1), and needs
    the same number of them in every sample."""
    x = token_inputs(n, seed)
    ids, mask = x["input_ids"].clamp(min=2) * x["attention_mask"], x["attention_mask"]
    ids[torch.arange(n), mask.sum(1) - 1] = 1
    return {"input_ids": ids, "attention_mask": mask}


# --- timm-style blocks, written here -----------------------------------------------------------------------


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of ``[B, C, H, W]`` (timm's ``LayerNorm2d``)."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int = 2):
        super().__init__()
        self.reduce = nn.Conv2d(c, c // r, 1)
        self.expand = nn.Conv2d(c // r, c, 1)

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.expand(F.relu(self.reduce(s))))


class ConvNeXtBlock(nn.Module):
    """Depthwise 3×3 convolution, LayerNorm over channels, an inverted MLP with GELU, layer scale, residual."""

    def __init__(self, c: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = LayerNorm2d(c)
        self.pw1 = nn.Conv2d(c, 2 * c, 1)
        self.pw2 = nn.Conv2d(2 * c, c, 1)
        self.gamma = nn.Parameter(torch.full((c, 1, 1), 0.5))

    def forward(self, x):
        return x + self.gamma * self.pw2(F.gelu(self.pw1(self.norm(self.dw(x)))))


class TimmStyleNet(nn.Module):
    """Stem, a ConvNeXt block, squeeze-excitation, then a Mixer layer (token mixing over the pixels)."""

    def __init__(self, c_in: int = 4, c: int = 8, size: int = 6, out: int = CLASSES):
        super().__init__()
        self.stem = nn.Conv2d(c_in, c, 2, stride=2)
        tokens = (size // 2) ** 2
        self.block = ConvNeXtBlock(c)
        self.se = SqueezeExcite(c)
        self.token_norm = nn.LayerNorm(c)
        self.token_mix = nn.Linear(tokens, tokens)
        self.head = nn.Linear(c, out)

    def forward(self, x):
        x = self.se(self.block(self.stem(x)))
        t = x.flatten(2).transpose(1, 2)  # [B, tokens, c]
        t = t + self.token_mix(self.token_norm(t).transpose(1, 2)).transpose(1, 2)
        return self.head(F.gelu(t).mean(1))


# --- PyTorch attention and recurrent layers ------------------------------------------------------------------


class Attention(nn.Module):
    """``nn.MultiheadAttention`` self-attention over tokens, mean-pooled, a linear head."""

    def __init__(self, d: int = 8, out: int = CLASSES):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
        self.head = nn.Linear(d, out)

    def forward(self, x):
        y, _ = self.attn(x, x, x, need_weights=False)
        return self.head(torch.tanh(x + y).mean(1))


class Encoder(nn.Module):
    """``nn.TransformerEncoder`` (2 layers), optionally with a key padding mask given as a second input."""

    def __init__(self, d: int = 8, out: int = CLASSES, layers: int = 2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d, 2, dim_feedforward=2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, out)

    def forward(self, x, mask=None):
        h = self.encoder(x, src_key_padding_mask=None if mask is None else mask == 0)
        return self.head(h[:, 0])


def masked_sequence_inputs(n: int, seed: int = 0):
    (x,) = sequence_inputs(n, seed)
    return x, token_inputs(n, seed)["attention_mask"]


class Recurrent(nn.Module):
    """``nn.RNN``/``nn.LSTM``/``nn.GRU`` over ``[B, T, d]``, a linear head on the last hidden state."""

    def __init__(self, cell: type[nn.RNNBase], d: int = 8, hidden: int = 8, out: int = CLASSES):
        super().__init__()
        self.rnn = cell(d, hidden, batch_first=True)
        self.head = nn.Linear(hidden, out)

    def forward(self, x):
        y, _ = self.rnn(x)
        return self.head(y[:, -1])


def _seeded(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return factory().eval()

    return build


CASES: list[Case] = [
    Case("bert", bert, token_inputs, "logits", ("hf", "transformer")),
    Case("bert-sdpa", lambda: bert(None), token_inputs, "logits", ("hf", "transformer")),
    Case("gpt2", gpt2, token_inputs, "logits", ("hf", "transformer")),
    Case("gpt2-sdpa", lambda: gpt2(None), token_inputs, "logits", ("hf", "transformer")),
    Case("t5", t5, t5_inputs, "logits", ("hf", "transformer")),
    Case("timm", _seeded(TimmStyleNet), image_inputs, None, ("image",)),
    Case("mha", _seeded(Attention), sequence_inputs, None, ("transformer",)),
    Case("encoder", _seeded(Encoder), sequence_inputs, None, ("transformer",)),
    Case("encoder-mask", _seeded(Encoder), masked_sequence_inputs, None, ("transformer",)),
    Case("rnn", _seeded(lambda: Recurrent(nn.RNN)), sequence_inputs, None, ("recurrent",)),
    Case("lstm", _seeded(lambda: Recurrent(nn.LSTM)), sequence_inputs, None, ("recurrent",)),
    Case("gru", _seeded(lambda: Recurrent(nn.GRU)), sequence_inputs, None, ("recurrent",)),
]

BY_NAME = {case.name: case for case in CASES}
