"""Models whose parameters enter in ways a per-layer hook alone cannot read: embeddings of ids shared by all
samples (positions, relative-position buckets), one parameter held by several modules (tied embeddings), and
elementwise scales ``w * x`` by a parameter. Kernels, operators and features are tested on them."""

from __future__ import annotations

import torch
from torch import nn

VOCAB, T = 7, 5


def tokens(n: int, seed: int = 0):
    """``(ids [n, T], mask [n, T])``: some samples end in padding (id 0, mask 0)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, T), generator=g)
    lengths = torch.randint(2, T + 1, (n,), generator=g)
    lengths[0] = T
    mask = (torch.arange(T) < lengths[:, None]).long()
    return ids * mask, mask


class Positions(nn.Module):
    """Token and position embeddings (BERT-style): the position ids are a buffer ``[1, T]`` that every sample
    shares; ``positions`` may repeat a position. A padding mask enters after the embeddings."""

    def __init__(self, positions: list[int], d: int = 4):
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, d, padding_idx=0)
        self.positions = nn.Embedding(max(positions) + 1, d)
        self.register_buffer("position_ids", torch.tensor(positions)[None], persistent=False)
        self.head = nn.Linear(d, 3)

    def embed(self, ids):
        return self.tokens(ids) + self.positions(self.position_ids[:, : ids.shape[1]])

    def forward(self, ids, mask):
        h = torch.tanh(self.embed(ids)) * mask[..., None]
        return self.head(h.sum(1) / mask.sum(1, keepdim=True))


class RelativeBias(nn.Module):
    """T5-style attention: scores plus an embedding of a bucket matrix ``[T, T]`` shared by all samples,
    permuted to ``[1, H, T, T]`` and reused by two attention layers, with a padding mask."""

    def __init__(self, d: int = 4, heads: int = 2, buckets: int = 5):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.bias = nn.Embedding(buckets, heads)
        self.layers = nn.ModuleList(nn.Linear(d, d) for _ in range(2))
        offsets = torch.arange(T)[None, :] - torch.arange(T)[:, None]
        self.register_buffer("buckets", offsets.clamp(-(buckets // 2), buckets // 2) + buckets // 2, persistent=False)
        self.head = nn.Linear(d, 3)

    def forward(self, ids, mask):
        h = self.embed(ids)  # [B, T, d]
        position_bias = self.bias(self.buckets).permute(2, 0, 1).unsqueeze(0)  # [1, H, T, T]
        padding = (1.0 - mask[:, None, None, :].to(h.dtype)) * -1e4
        for layer in self.layers:
            scores = (h @ h.transpose(1, 2)).unsqueeze(1) / 2 + position_bias + padding  # [B, H, T, T]
            h = h + torch.tanh(layer(torch.softmax(scores, -1).mean(1) @ h))
        return self.head(h[:, 0])


class Tied(nn.Module):
    """An encoder and a decoder embedding that hold one shared table (T5's ``shared.weight``)."""

    def __init__(self, d: int = 4):
        super().__init__()
        self.shared = nn.Embedding(VOCAB, d)
        self.encoder = nn.Embedding(VOCAB, d)
        self.decoder = nn.Embedding(VOCAB, d)
        self.encoder.weight = self.decoder.weight = self.shared.weight
        self.head = nn.Linear(d, 3)

    def forward(self, ids, mask):
        h = torch.tanh(self.encoder(ids)).mean(1)
        return self.head(h * torch.tanh(self.decoder(ids.flip(1))).mean(1) + h)


class TiedHead(nn.Module):
    """An embedding tied to an output layer (a language model's head); ``rows``: the logits returned (all by
    default)."""

    def __init__(self, d: int = 4, rows: list[int] | None = None):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, d)
        self.out = nn.Linear(d, VOCAB, bias=False)
        self.out.weight = self.embed.weight
        self.rows = rows

    def forward(self, ids, mask):
        logits = self.out(torch.tanh(self.embed(ids)).mean(1))
        return logits if self.rows is None else logits[:, self.rows]


class TwoTiedHeads(TiedHead):
    """Two heads tied to one embedding, each over other positions and reading its own rows, one with a bias."""

    def __init__(self, d: int = 4):
        super().__init__(d)
        self.second = nn.Linear(d, VOCAB)
        self.second.weight = self.embed.weight

    def forward(self, ids, mask):
        h = torch.tanh(self.embed(ids))
        return torch.cat([self.out(h[:, :2]).sum(1)[:, [1, 4]], self.second(h[:, 2:])[:, -1, [4, 6]]], 1)


class Scales(nn.Module):
    """Elementwise scales by parameters: T5's ``T5LayerNorm`` (``weight * x̂``), a layer scale ``γ [C, 1, 1]``
    on a convolution's output (``x * γ``), and one ``s`` applied twice."""

    def __init__(self, c: int = 3, size: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)
        self.gamma = nn.Parameter(torch.rand(c, 1, 1) + 0.5)
        self.weight = nn.Parameter(torch.rand(size) + 0.5)
        self.s = nn.Parameter(torch.rand(size) + 0.5)
        self.head = nn.Linear(size, 2)

    def forward(self, x):
        h = x + torch.tanh(self.conv(x)) * self.gamma  # [B, C, H, W]
        h = h.flatten(1, 2)  # [B, C·H, W]
        h = self.weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6))
        h = torch.tanh(self.s * torch.tanh(self.s * h))
        return self.head(h.mean(1))


def images(n: int, seed: int = 0):
    return torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(seed))
