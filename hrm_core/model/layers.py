"""Transformer building blocks shared by the H and L modules.

Post-norm blocks as in the HRM paper: ``x = norm(x + attn(x)); x = norm(x + mlp(x))`` with a
parameter-free RMSNorm, SwiGLU feed-forward, bias-free linears, and bidirectional attention with
rotary position encoding. Every token is a bar at or before the decision bar, so bidirectional
attention inside the window cannot see the future.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """RMSNorm without a learned scale (the reference's choice), computed in float32 by torch's
    fused kernel (the same numbers as x · rsqrt(mean(x²) + eps), at half the cost of five ops)."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for rotary position encoding of ``max_positions`` tokens."""

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0) -> None:
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inv_freq)  # [S, Dh/2]
        angles = torch.cat([angles, angles], dim=-1)  # [S, Dh]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        # rotate_half(x) * sin == roll(x, Dh/2) * (sin with its first half negated): one roll and no
        # negation of a strided slice per call, the same numbers bit for bit
        sign = torch.cat([-torch.ones(head_dim // 2), torch.ones(head_dim // 2)])
        self.register_buffer("signed_sin", angles.sin() * sign, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` [..., S, Dh] by its positions (queries and keys stacked: one call)."""
        seq = x.shape[-2]
        cos, signed_sin = self.cos[:seq].to(x.dtype), self.signed_sin[:seq].to(x.dtype)
        return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


class Attention(nn.Module):
    """Multi-head bidirectional self-attention with RoPE, through scaled-dot-product attention."""

    def __init__(self, hidden_size: int, num_heads: int, max_positions: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, hidden_size, bias=False)
        self.rope = RotaryEmbedding(self.head_dim, max_positions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, hidden = x.shape
        qkv = self.qkv(x).view(batch, seq, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.rope(qkv[:2]).unbind(0)  # [B, heads, S, Dh], rotated in one call
        y = F.scaled_dot_product_attention(q, k, qkv[2])
        return self.out(y.transpose(1, 2).reshape(batch, seq, hidden))


class SwiGLU(nn.Module):
    """Gated feed-forward: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, hidden_size: int, expansion: float) -> None:
        super().__init__()
        inner = round(hidden_size * expansion * 2 / 3 / 8) * 8 or 8
        self.gate_up = nn.Linear(hidden_size, 2 * inner, bias=False)
        self.down = nn.Linear(inner, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """One post-norm transformer block."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, max_positions: int) -> None:
        super().__init__()
        self.attn = Attention(hidden_size, num_heads, max_positions)
        self.mlp = SwiGLU(hidden_size, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rms_norm(x + self.attn(x))
        return rms_norm(x + self.mlp(x))


class ReasoningModule(nn.Module):
    """A stack of blocks applied to ``state + injection`` (the HRM's additive input injection)."""

    def __init__(
        self, layers: int, hidden_size: int, num_heads: int, expansion: float, max_positions: int
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            Block(hidden_size, num_heads, expansion, max_positions) for _ in range(layers)
        )

    def forward(self, state: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        x = state + injection
        for block in self.blocks:
            x = block(x)
        return x
