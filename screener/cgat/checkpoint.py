"""Model checkpoints: safetensors weights + a JSON config, readable without pickle.

A saved model is a folder::

    <dir>/model.safetensors   weights (state dict of :class:`~screener.cgat.model.CGAT`), no pickle
    <dir>/config.json         :class:`ModelMeta`: architecture, normalisation, target and unit, elements,
                              training-data hash, seed, metrics, versions

The resumable *training state* (optimizer, scheduler, RNG states, epoch, early-stopping counter, data order) is a
separate file, ``train_state.pt``, written with :func:`torch.save` and read back with ``torch.load(weights_only=True)``
(plain tensors, numbers, strings, lists, tuples and dicts only; no arbitrary pickled objects). It exists only to
resume an interrupted run; released weights are always the safetensors file.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from screener.cgat.config import CGATConfig
from screener.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported inside the functions that need it
    import torch

    from screener.cgat.model import CGAT

__all__ = [
    "FORMAT_VERSION",
    "Normalization",
    "ModelMeta",
    "save_model",
    "load_model",
    "load_meta",
    "is_model_dir",
    "save_training_state",
    "load_training_state",
    "software_versions",
    "atomic_write_text",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class Normalization(BaseModel):
    """Affine target normalisation: the network predicts ``(y - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    mean: float = Field(0.0, description="Mean of the training targets, in target units.")
    std: float = Field(1.0, description="Standard deviation of the training targets, in target units (> 0).")

    @classmethod
    def fit(cls, targets: Any, *, min_std: float = 1e-6) -> Normalization:
        """Mean and standard deviation of ``targets`` (std floored at ``min_std`` so one value still works)."""
        import numpy as np

        y = np.asarray(targets, dtype=np.float64)
        if y.size == 0 or not np.all(np.isfinite(y)):
            raise ValueError("targets must be a non-empty array of finite numbers")
        std = float(y.std())
        return cls(mean=float(y.mean()), std=std if std > min_std else 1.0)


class ModelMeta(BaseModel):
    """Everything needed to rebuild and trust a saved model (``config.json``)."""

    model_config = ConfigDict(extra="allow")

    format_version: int = Field(FORMAT_VERSION, description="Checkpoint format version.")
    architecture: CGATConfig = Field(default_factory=CGATConfig, description="Network configuration.")
    normalization: Normalization = Field(default_factory=Normalization, description="Target normalisation.")
    target: str = Field("target", description="Name of the predicted quantity (e.g. formation_energy_per_atom).")
    target_unit: str = Field("", description="Unit of the target (e.g. eV/atom).")
    embedding: str = Field("matscholar200", description="Element embedding table the model was trained with.")
    elements: list[str] = Field(default_factory=list, description="Element symbols the embedding covers.")
    train_data_hash: str = Field("", description="sha256 of the training graphs and targets.")
    n_train: int = Field(0, description="Training structures.")
    n_val: int = Field(0, description="Validation structures.")
    seed: int = Field(0, description="Seed of this model (weights init, data order).")
    metrics: dict[str, float | int | None] = Field(default_factory=dict, description="Training/validation metrics.")
    train_config: dict[str, Any] = Field(default_factory=dict, description="TrainConfig used.")
    init_from: str | None = Field(None, description="Checkpoint this model was transferred from.")
    transfer: str | None = Field(None, description="Transfer mode ('full' or 'head') when init_from is set.")
    versions: dict[str, str] = Field(default_factory=dict, description="screener, torch, python versions.")
    created_utc: str = Field("", description="ISO time the file was written.")


def software_versions() -> dict[str, str]:
    """Versions of screener, torch, numpy and python (recorded in every artefact)."""
    import numpy as np
    import torch

    from screener import __version__

    return {
        "screener": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _temporary_sibling(path: Path) -> Path:
    """A new name beside ``path`` for a file to :func:`os.replace` it with. Not :func:`tempfile.mkstemp`: its files
    are private (0600) whatever the umask, and a model folder is shared with colleagues and archived."""
    return path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")


def _follow_umask(path: Path) -> None:
    """Give ``path`` the mode a new file gets (``0666 & ~umask``): safetensors writes its files private (0600)."""
    mask = os.umask(0o022)  # read, then put back at once (no getter before Python 3.13)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and :func:`os.replace` (no torn files on a kill)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        with open(tmp, "x") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_model_dir(directory: str | Path) -> bool:
    """True when ``directory`` holds a single saved model (weights + config)."""
    d = Path(directory)
    return (d / WEIGHTS_NAME).is_file() and (d / CONFIG_NAME).is_file()


def save_model(model: CGAT, meta: ModelMeta, directory: str | Path) -> Path:
    """Save weights (safetensors) and ``meta`` (JSON) into ``directory``.

    Parameters
    ----------
    model : CGAT
        The network (a DDP wrapper is unwrapped).
    meta : ModelMeta
        Its description; ``versions`` and ``created_utc`` are filled in here.
    directory : path
        Created if needed; existing files are replaced atomically.

    Returns
    -------
    Path
        The folder.
    """
    from safetensors.torch import save_file

    model = getattr(model, "module", model)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = meta.model_copy(
        update={"versions": software_versions(), "created_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    )
    tmp = _temporary_sibling(d / WEIGHTS_NAME)
    try:
        save_file(tensors, tmp, metadata={"format": "pt", "screener_format_version": str(FORMAT_VERSION)})
        _follow_umask(tmp)
        os.replace(tmp, d / WEIGHTS_NAME)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(d / CONFIG_NAME, meta.model_dump_json(indent=2) + "\n")
    return d


def load_meta(directory: str | Path) -> ModelMeta:
    """Read ``config.json`` of a saved model; :class:`CheckpointError` when missing or unreadable."""
    d = Path(directory)
    path = d / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{d}: not a screener model folder (no {CONFIG_NAME})")
    try:
        meta = ModelMeta.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()
        reason = first[1].strip() if len(first) > 1 else (first[0] if first else type(exc).__name__)
        raise CheckpointError(f"{path}: incompatible or corrupt model config ({reason})") from None
    if meta.format_version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {meta.format_version} is newer than this screener supports ({FORMAT_VERSION})"
        )
    return meta


def load_model(directory: str | Path, *, device: str | torch.device = "cpu") -> tuple[CGAT, ModelMeta]:
    """Rebuild a :class:`CGAT` from a saved folder.

    Parameters
    ----------
    directory : path
        Folder with ``model.safetensors`` and ``config.json``.
    device : str or torch.device
        Where to put the model.

    Returns
    -------
    model, meta : CGAT (in eval mode), ModelMeta

    Raises
    ------
    CheckpointError
        Missing files, a config this version cannot read, or weights that do not fit the stored architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from screener.cgat.model import CGAT

    d = Path(directory)
    meta = load_meta(d)
    weights = d / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{d}: no {WEIGHTS_NAME}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: unreadable weights ({exc})") from None
    try:
        model = CGAT(meta.architecture)
    except Exception as exc:  # noqa: BLE001 - any failure to build is an incompatible checkpoint
        raise CheckpointError(f"{d}: cannot build the stored architecture ({type(exc).__name__}: {exc})") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{d}: weights do not match the stored architecture ({reason})") from None
    model.to(device)
    model.eval()
    return model, meta


def save_training_state(state: dict[str, Any], path: str | Path) -> None:
    """Write the resumable training state with :func:`torch.save` (atomic replace).

    Only tensors, numbers, strings and containers of them go in, so :func:`load_training_state` can use
    ``weights_only=True``.
    """
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(path)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_training_state(path: str | Path) -> dict[str, Any]:
    """Read a training state written by :func:`save_training_state` (``weights_only=True``, no arbitrary code)."""
    import torch

    try:
        return torch.load(Path(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable state is a checkpoint problem for the user
        raise CheckpointError(f"{path}: unreadable training state ({type(exc).__name__}: {exc})") from None
