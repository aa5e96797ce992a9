"""A tiny causal transformer, nanoGPT-shaped, small enough to train on a laptop CPU in seconds.

Pre-norm blocks (x + attn(LN(x)), x + mlp(LN(x))), learned positions, tied input/output embeddings.
``features`` returns the final hidden states and ``forward`` the logits, so a fused linear
cross-entropy can take the hidden states and ``lm_head.weight`` without ever building the logits.
The causal mask and the sampler are notebook 06's exercises: by default attention is causal by
PyTorch's own ``is_causal`` and ``generate`` draws from softmax(logits); pass yours to use them.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65
    context: int = 64
    n_layer: int = 2
    n_head: int = 2
    d_model: int = 64
    dropout: float = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.dropout = config.n_head, config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor = None) -> torch.Tensor:
        """mask: (T, T) bool, True where query i may attend to key j; None: causal (j <= i)."""
        B, T, D = x.shape
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in self.qkv(x).split(D, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(config.d_model), nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.mlp = nn.Sequential(nn.Linear(config.d_model, 4 * config.d_model), nn.GELU(),
                                 nn.Linear(4 * config.d_model, config.d_model), nn.Dropout(config.dropout))

    def forward(self, x, mask):
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """tokens (B, T) int64 with T <= config.context -> logits (B, T, vocab_size)."""

    def __init__(self, config: GPTConfig, mask_fn=None):
        """mask_fn(length, device=...) -> (length, length) bool attention mask; None: causal attention."""
        super().__init__()
        if config.d_model % config.n_head:
            raise ValueError(f"GPT: d_model={config.d_model} must be a multiple of n_head={config.n_head}")
        self.config, self.mask_fn = config, mask_fn
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.context, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # tied: one matrix reads and writes tokens
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("out.weight", "mlp.2.weight")):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def features(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, d_model) final hidden states, before the output projection."""
        T = tokens.shape[-1]
        if tokens.dim() != 2 or T > self.config.context or T == 0:
            raise ValueError(f"GPT: expected tokens of shape (batch, length) with 1 <= length <= "
                             f"{self.config.context}, got {tuple(tokens.shape)}")
        x = self.token_embedding(tokens) + self.position_embedding(torch.arange(T, device=tokens.device))
        mask = None if self.mask_fn is None else self.mask_fn(T, device=tokens.device)
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.features(tokens))

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, new_tokens: int, generator=None, sample=None) -> torch.Tensor:
        """Append new_tokens to (B, T) prompt, each drawn by sample(logits (B, V), generator) -> (B,) ids.

        sample=None draws from softmax(logits), temperature 1, every token allowed.
        """
        sample = sample or _draw
        tokens = prompt
        for _ in range(new_tokens):
            logits = self(tokens[:, -self.config.context:])[:, -1]
            nxt = sample(logits, generator)
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        return tokens


def _draw(logits, generator=None):
    """(B, V) logits -> (B,) ids drawn from softmax(logits)."""
    logits = logits if logits.dtype == torch.float64 else logits.float()
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator).squeeze(-1)
