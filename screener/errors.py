"""Exceptions screener raises for bad input and failed steps.

Every error a user can cause derives from :class:`ScreenerError`; the CLI prints its message as one line and exits
non-zero, without a traceback (``--debug`` shows it).
"""

from __future__ import annotations

__all__ = [
    "ScreenerError",
    "InvalidInputError",
    "InvalidStructureError",
    "CheckpointError",
    "CalculationError",
    "BudgetError",
    "OfflineError",
]


class ScreenerError(Exception):
    """Base class of every error caused by input, configuration or environment."""

    exit_code: int = 2


class InvalidInputError(ScreenerError):
    """A file, option or value the user gave cannot be used."""


class InvalidStructureError(InvalidInputError):
    """One structure failed validation.

    Parameters
    ----------
    structure_id : str
        Id of the structure (file name, entry id or index) so the user can find it.
    reason : str
        Why it failed, in words a user understands.
    """

    def __init__(self, structure_id: str, reason: str) -> None:
        self.structure_id = structure_id
        self.reason = reason
        super().__init__(f"{structure_id}: {reason}")


class CheckpointError(ScreenerError):
    """A model checkpoint is missing, incomplete or incompatible."""


class CalculationError(ScreenerError):
    """A calculation cannot be set up or its result cannot be read."""


class BudgetError(ScreenerError):
    """A request would exceed the campaign budget."""


class OfflineError(ScreenerError):
    """Data must be fetched from a server but screener is offline or the server is unreachable."""
