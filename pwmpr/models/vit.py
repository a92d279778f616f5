"""Small Vision Transformers: ViT-Tiny (dim 192, depth 12, 3 heads) and ``vit-mini`` (dim 64, depth 4, 4 heads).

Separate ``q``, ``k``, ``v``, ``proj`` Linear layers; the engine reads attention without a hook
(docs/method.md, Operations).
"""

from __future__ import annotations

import torch
from torch import nn

from pwmpr.models import MODELS


class Attention(nn.Module):
    """Multi-head self-attention."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def qkv(self, x):
        """Queries, keys and values of ``x`` (batch, tokens, dim), each (batch, heads, tokens, dim / heads)."""
        b, t, d = x.shape
        return tuple(layer(x).reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                     for layer in (self.q, self.k, self.v))

    def merge(self, out):
        """The heads' outputs (batch, heads, tokens, dim / heads) joined and projected back to (batch, tokens, dim)."""
        b, h, t, dh = out.shape
        return self.proj(out.transpose(1, 2).reshape(b, t, h * dh))

    def forward(self, x):
        q, k, v = self.qkv(x)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.merge(attn @ v)


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)); ``attention`` makes the attention layer
    from (dim, heads)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int, attention: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = (attention or Attention)(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, dim * mlp_ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * mlp_ratio, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    """Patch embedding (conv), class token, learned position embedding, blocks, LN, linear head."""

    def __init__(self, input_shape, num_classes, dim=192, depth=12, heads=3, mlp_ratio=4, patch=None) -> None:
        super().__init__()
        c, h, w = input_shape
        patch = patch or max(1, min(h, w) // 8)
        n_tokens = (h // patch) * (w // patch)
        self.patch_embed = nn.Conv2d(c, dim, patch, stride=patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_tokens + 1, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


@MODELS.register("vit-tiny")
def vit_tiny(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """ViT-Tiny (dim 192, depth 12, 3 heads; patch H/8, so 64 tokens on 32x32)."""
    if len(input_shape) != 3:
        raise ValueError(f"vit-tiny needs input_shape (C, H, W), got {input_shape}")
    return ViT(tuple(input_shape), num_classes)


@MODELS.register("vit-mini")
def vit_mini(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """A ViT two CPU cores train in seconds per epoch: dim 64, depth 4, 4 heads, MLP ratio 2, patches of
    ceil(min(H, W) / 7) pixels (4 on 28x28 digits: 49 tokens and a class token; 2 on 8x8)."""
    if len(input_shape) != 3:
        raise ValueError(f"vit-mini needs input_shape (C, H, W), got {input_shape}")
    patch = max(1, -(-min(input_shape[1:]) // 7))
    return ViT(tuple(input_shape), num_classes, dim=64, depth=4, heads=4, mlp_ratio=2, patch=patch)
