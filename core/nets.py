"""The torch modules behind :mod:`core.models` (import this only where torch is wanted)."""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Flatten → (Linear → ReLU → Dropout)* → Linear; tabular input standardised inside."""

    def __init__(self, input_shape, n_classes: int, hidden, dropout: float, *, standardize: bool):
        super().__init__()
        n_in = 1
        for d in input_shape:
            n_in *= int(d)
        self.standardize = standardize
        if standardize:
            self.register_buffer("feature_mean", torch.zeros(n_in))
            self.register_buffer("feature_std", torch.ones(n_in))
        layers: list[nn.Module] = [nn.Flatten()]
        for h in hidden:
            layers += [nn.Linear(n_in, h), nn.ReLU(), nn.Dropout(dropout)]
            n_in = h
        layers.append(nn.Linear(n_in, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        """Logits for a batch (features standardized first when the model was built for tabular data)."""
        if self.standardize:
            x = (x - self.feature_mean) / self.feature_std
        return self.net(x)


class CNN(nn.Module):
    """3×3 conv blocks with aggressive 2×2 max pooling, then a small classifier head."""

    def __init__(self, c_in: int, n_classes: int, channels, pools, spatial: int, hidden: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        for c, pool in zip(channels, pools):
            blocks += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            if pool:
                blocks.append(nn.MaxPool2d(2))
            c_in = c
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * spatial, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, n_classes),
        )

    def forward(self, x):
        """Logits for a batch of images (N, C, H, W)."""
        return self.head(self.features(x))


class Transformer(nn.Module):
    """A small pre-norm encoder over a sequence: image rows, tabular features or text bytes."""

    def __init__(self, kind: str, input_shape, n_classes: int, d_model: int, layers: int, heads: int, ff: int,
                 dropout: float, vocab: int):
        super().__init__()
        self.kind = kind
        if kind == "text":
            seq = int(input_shape[0])
            self.embed = nn.Embedding(vocab, d_model, padding_idx=0)
        elif kind == "image":
            seq = int(input_shape[1])  # one token per image row
            self.embed = nn.Linear(int(input_shape[2]), d_model)
        else:
            seq = int(input_shape[0])  # one token per feature: value × its own direction
            self.register_buffer("feature_mean", torch.zeros(seq))
            self.register_buffer("feature_std", torch.ones(seq))
            self.value_proj = nn.Parameter(torch.randn(seq, d_model) * 0.02)
        self.pos = nn.Parameter(torch.randn(seq, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, heads, ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.head = nn.Linear(d_model, n_classes)

    def forward(self, x):
        """Logits for a batch: text bytes (mean over non-padding tokens), image rows or tabular features."""
        if self.kind == "text":
            h = self.embed(x) + self.pos
            mask = (x != 0).unsqueeze(-1).to(h.dtype)
            h = self.encoder(h)
            pooled = (h * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            if self.kind == "image":
                h = self.embed(x.flatten(1, 2)) + self.pos
            else:
                z = (x - self.feature_mean) / self.feature_std
                h = z.unsqueeze(-1) * self.value_proj + self.pos
            pooled = self.encoder(h).mean(1)
        return self.head(pooled)
