"""CHGNet checkpoints shipped inside the chgnet wheel, loaded once per process.

``0.3.0`` (MPtrj, GGA/GGA+U with MP2020 corrections learned) stands in for PBE; ``r2scan`` (fine-tuned on
MP-r2SCAN) stands in for r2SCAN. Nothing is downloaded: both files live in ``chgnet/pretrained/``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from typing import Any

from screener.errors import CalculationError

__all__ = ["CHECKPOINTS", "load_chgnet", "cached_chgnet_calculator", "checkpoint_label", "clear_cache"]

logger = logging.getLogger(__name__)

#: fidelity -> CHGNet model_name (both ship with chgnet >= 0.4).
CHECKPOINTS = {"pbe": "0.3.0", "scan": "r2scan"}

_LABELS = {
    "0.3.0": "stand-in: CHGNet 0.3.0 (PBE-level ML potential trained on MPtrj GGA/GGA+U with MP2020), not DFT",
    "r2scan": "stand-in: CHGNet r2scan (r2SCAN-level ML potential fine-tuned on MP-r2SCAN), not DFT",
}

_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()


@contextlib.contextmanager
def _chgnet_prints_to_log() -> Any:
    """CHGNet print()s "initialized with ... parameters" and "will run on cpu" on every model and calculator it
    makes; those lines go to this module's INFO log instead (``screener --verbose`` shows them)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        if line.strip():
            logger.info("%s", line.strip())


def checkpoint_label(checkpoint: str) -> str:
    """Honest label for outputs computed with ``checkpoint``."""
    return _LABELS.get(checkpoint, f"stand-in: CHGNet {checkpoint} (ML potential), not DFT")


def load_chgnet(checkpoint: str = "0.3.0", use_device: str | None = "cpu") -> Any:
    """Load (once per process) the CHGNet model ``checkpoint`` onto ``use_device``.

    Parameters
    ----------
    checkpoint : {"0.3.0", "r2scan"}
        Model name understood by ``CHGNet.load``.
    use_device : str, optional
        "cpu", "cuda", ... (None: CHGNet picks).
    """
    key = (checkpoint, str(use_device))
    with _LOCK:
        if key not in _MODELS:
            try:
                from chgnet.model import CHGNet
            except ImportError as exc:  # pragma: no cover - chgnet is a core dependency
                raise CalculationError("the stand-in calculator needs chgnet: pip install chgnet") from exc
            try:
                with _chgnet_prints_to_log():
                    model = CHGNet.load(model_name=checkpoint, use_device=use_device, verbose=False)
            except ValueError as exc:
                raise CalculationError(f"unknown CHGNet checkpoint {checkpoint!r}: {exc}") from exc
            model.eval()
            _MODELS[key] = model
            logger.info("loaded CHGNet %s on %s", checkpoint, use_device)
        return _MODELS[key]


def cached_chgnet_calculator(checkpoint: str = "0.3.0", use_device: str | None = "cpu", **kwargs: Any) -> Any:
    """ASE calculator around the cached CHGNet model (what atomate2's force-field makers call).

    Used as ``force_field_name={"@module": __name__, "@callable": "cached_chgnet_calculator"}`` so that only the
    checkpoint name, never the model, is serialised into the job.
    """
    from chgnet.model.dynamics import CHGNetCalculator

    kwargs.setdefault("on_isolated_atoms", "ignore")
    model = load_chgnet(checkpoint, use_device)
    with _chgnet_prints_to_log():
        return CHGNetCalculator(model=model, use_device=use_device, **kwargs)


def clear_cache() -> None:
    """Forget the loaded models (tests, memory)."""
    with _LOCK:
        _MODELS.clear()
