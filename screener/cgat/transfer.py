"""Transfer learning: start from a saved checkpoint and train all weights (``full``) or only the head (``head``).

The architecture always comes from the checkpoint. With ``transfer="head"`` every parameter outside ``model.head``
gets ``requires_grad=False`` (so autograd records nothing through the frozen body and no gradient is computed for
it) and only the head's parameters are handed to the optimizer: the body stays bit-identical.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from screener.cgat.checkpoint import ModelMeta, is_model_dir, load_meta, load_model
from screener.errors import CheckpointError, InvalidInputError

if TYPE_CHECKING:
    import torch

    from screener.cgat.model import CGAT

__all__ = ["TransferMode", "TRANSFER_MODES", "resolve_init_dirs", "freeze_for_transfer", "load_for_transfer"]

logger = logging.getLogger(__name__)

TransferMode = Literal["full", "head"]
TRANSFER_MODES: tuple[str, ...] = ("full", "head")


def resolve_init_dirs(init: str | Path) -> list[Path]:
    """Model folders inside ``init``: the members of an ensemble folder, or ``init`` itself when it is one model.

    Raises
    ------
    CheckpointError
        When ``init`` is neither a model nor an ensemble folder.
    """
    d = Path(init)
    if not d.exists():
        raise CheckpointError(f"{d}: checkpoint folder does not exist")
    if is_model_dir(d):
        return [d]
    if (d / "ensemble.json").is_file():
        import json

        try:
            members = json.loads((d / "ensemble.json").read_text())["members"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{d / 'ensemble.json'}: unreadable ensemble index ({exc})") from None
        dirs = [d / m for m in members]
        missing = [str(m) for m in dirs if not is_model_dir(m)]
        if missing:
            raise CheckpointError(f"{d}: ensemble member(s) missing or incomplete: {', '.join(missing)}")
        return dirs
    raise CheckpointError(f"{d}: not a screener model or ensemble folder (no config.json/model.safetensors/ensemble.json)")


def freeze_for_transfer(model: CGAT, mode: TransferMode) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for a transfer mode and return the parameters to optimise.

    Parameters
    ----------
    model : CGAT
        Network with a ``head`` attribute.
    mode : {'full', 'head'}
        ``full``: every parameter trains. ``head``: only ``model.head``.

    Returns
    -------
    list of Parameter
    """
    if mode not in TRANSFER_MODES:
        raise InvalidInputError(f"unknown transfer mode {mode!r}; choose one of {list(TRANSFER_MODES)}")
    if mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return list(model.parameters())
    head_ids = {id(p) for p in model.head.parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head_ids)
    return list(model.head.parameters())


def load_for_transfer(
    init_dir: str | Path,
    mode: TransferMode,
    *,
    target_unit: str | None = None,
    keep_normalization: bool = False,
    device: str | torch.device = "cpu",
) -> tuple[CGAT, ModelMeta, list[torch.nn.Parameter]]:
    """Load one saved model for fine-tuning.

    Parameters
    ----------
    init_dir : path
        A single model folder (``config.json`` + ``model.safetensors``).
    mode : {'full', 'head'}
        Transfer mode, see :func:`freeze_for_transfer`.
    target_unit : str, optional
        Unit of the new target; must match the checkpoint's when ``keep_normalization`` is set.
    keep_normalization : bool
        Keep the checkpoint's target mean/std (else the caller re-fits them on the new data).
    device : str or torch.device

    Returns
    -------
    model, meta, parameters : the network, its stored description, the parameters to optimise
    """
    model, meta = load_model(init_dir, device=device)
    if keep_normalization and target_unit is not None and meta.target_unit and target_unit != meta.target_unit:
        raise CheckpointError(
            f"{init_dir}: keep_normalization needs the same target unit (checkpoint {meta.target_unit!r}, "
            f"new {target_unit!r})"
        )
    model.train()
    params = freeze_for_transfer(model, mode)
    logger.info(
        "transfer %s from %s: %d of %d parameters train",
        mode,
        init_dir,
        sum(p.numel() for p in params),
        sum(p.numel() for p in model.parameters()),
    )
    return model, meta, params


def init_meta(init: str | Path) -> ModelMeta:
    """Description of the first model in ``init`` (a model or ensemble folder), for compatibility checks."""
    return load_meta(resolve_init_dirs(init)[0])
