"""``gpt-mini``: a small causal transformer language model over byte tokens (docs/method.md, Language models).

4 pre-norm blocks of width 128, 4 heads, context 128; separate ``q``, ``k``, ``v``, ``proj`` Linear layers;
the embeddings stay dense.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pwmpr.models import MODELS
from pwmpr.models.vit import Attention, Block
from pwmpr.probe import declare_input_dtype


class CausalAttention(Attention):
    """Multi-head causal self-attention: the ViT's projections, each position attending to itself and the ones
    before it."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        return self.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class GPT(nn.Module):
    """Token and position embeddings, causal blocks, LN, a linear head: logits (batch, seq, vocab) from int64 ids
    (batch, seq) of up to ``context`` tokens."""

    def __init__(self, vocab: int, context: int, dim: int = 128, depth: int = 4, heads: int = 4,
                 mlp_ratio: int = 4) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not a multiple of {heads} heads")
        self.context = context
        self.tok_embed = nn.Embedding(vocab, dim)
        self.pos_embed = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*[Block(dim, heads, mlp_ratio, CausalAttention) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, ids):
        t = ids.shape[1]
        if t > self.context:
            raise ValueError(f"a sequence of {t} tokens is longer than the context of {self.context}")
        pos = torch.arange(t, device=ids.device)
        x = self.tok_embed(ids) + self.pos_embed(pos)
        return self.head(self.norm(self.blocks(x)))


@MODELS.register("gpt-mini")
def gpt_mini(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:
    """Causal transformer over token ids: 4 layers, width 128, 4 heads; vocabulary ``num_classes``, context
    ``input_shape[0]`` (128 for the text data sets)."""
    if len(input_shape) != 1:
        raise ValueError(f"gpt-mini needs input_shape (context,) of token ids, got {input_shape}")
    model = GPT(num_classes, input_shape[0])
    declare_input_dtype(model, torch.int64)
    return model
