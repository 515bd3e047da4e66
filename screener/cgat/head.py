"""Output network of CGAT: a residual (ReZero) MLP from the crystal vector to (prediction, log std)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

__all__ = ["ReZeroBlock", "OutputHead"]


class ReZeroBlock(nn.Module):
    """``x <- P x; x <- x + alpha * silu(W x + b)`` with ``alpha`` initialised at 0 (Bachlechner et al. 2020).

    ``P`` is a bias-free projection, present only when the width changes. At initialisation the block is the
    identity (or ``P``), so ``W`` receives no gradient until ``alpha`` moves away from 0: by design.

    Shape:
        - input: (B, in_features) -> (B, out_features)
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.proj = nn.Linear(in_features, out_features, bias=False) if in_features != out_features else None
        self.linear = nn.Linear(out_features, out_features)
        self.alpha = nn.Parameter(torch.empty(()))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.proj is not None:
            self.proj.reset_parameters()
        self.linear.reset_parameters()
        nn.init.zeros_(self.alpha)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            x = self.proj(x)
        return x + self.alpha * F.silu(self.linear(x))

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}"


class OutputHead(nn.Module):
    """Residual MLP ``in -> hidden[0] -> ... -> hidden[-1] -> n_outputs``.

    Parameters
    ----------
    in_features : int
        Width of the crystal vector (``n_heads * atom_fea_len``).
    hidden : list of int
        Widths of the ReZero blocks.
    n_outputs : int
        2 for (prediction, log std), 1 for prediction only.

    Shape:
        - input: (B, in_features) -> (B, n_outputs)
    """

    def __init__(self, in_features: int, hidden: list[int], n_outputs: int = 2) -> None:
        super().__init__()
        self.in_features, self.hidden, self.n_outputs = in_features, list(hidden), n_outputs
        dims = [in_features, *self.hidden]
        self.blocks = nn.ModuleList(ReZeroBlock(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(dims[-1], n_outputs)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for block in self.blocks:
            block.reset_parameters()
        self.out.reset_parameters()

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.out(x)

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.hidden} -> {self.n_outputs}"
