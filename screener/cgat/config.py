"""Architecture configuration of a CGAT model, with the paper's defaults and a small CPU preset."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CGATConfig", "PRESETS", "get_preset"]


class CGATConfig(BaseModel):
    """Sizes and switches of the network; stored next to every checkpoint.

    Defaults are those of Schmidt et al. 2021 / Hoffmann et al. 2023 (the ``paper`` preset).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    embedding: str = Field("matscholar200", description="Element embedding table shipped in screener/data.")
    embedding_dim: int = Field(200, description="Width of the element embedding.")
    atom_fea_len: int = Field(128, description="Width of node, edge and composition features.")
    n_heads: int = Field(5, description="Attention heads in message passing, Roost and pooling.")
    n_steps: int = Field(5, description="Message-passing steps.")
    roost_steps: int = Field(3, description="Roost composition message-passing steps.")
    n_neighbors: int = Field(24, description="Nearest neighbours per site (edge ranks 1..n_neighbors).")
    hyper_hidden: list[int] = Field(default_factory=lambda: [128], description="Hidden widths of the node hypernetwork.")
    hyper_rank: int = Field(
        8, ge=0, description="Rank of the per-node weights the node hypernetwork generates (0 = plain MLP)."
    )
    attention_hidden: int = Field(128, description="Hidden width of the attention/message MLPs.")
    edge_update: Literal["table", "attention", "none"] = Field(
        "table", description="Edge update: per-layer residual MLP of the rank embedding ('table'), a real edge "
        "attention update ('attention'), or none."
    )
    out_hidden: list[int] = Field(
        default_factory=lambda: [1024, 1024, 512, 512, 256, 256, 128],
        description="Widths of the residual (ReZero) output network.",
    )
    robust: bool = Field(True, description="Second output = log std (Laplace NLL / RobustL1) for aleatoric uncertainty.")


PRESETS: dict[str, CGATConfig] = {
    "paper": CGATConfig(),
    "small": CGATConfig(
        atom_fea_len=32,
        n_heads=2,
        n_steps=2,
        roost_steps=1,
        hyper_hidden=[32],
        hyper_rank=4,
        attention_hidden=32,
        out_hidden=[64, 32],
    ),
}


def get_preset(name: str) -> CGATConfig:
    """Return a preset by name (``paper`` or ``small``)."""
    from screener.errors import InvalidInputError

    try:
        return PRESETS[name]
    except KeyError:
        raise InvalidInputError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}") from None
