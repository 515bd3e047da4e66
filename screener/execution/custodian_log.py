"""Why custodian gave up on a VASP run, in one short line, from its ``custodian.json`` and the exception it raised.

atomate2 runs VASP through custodian, which applies its error handlers and, when they are exhausted, raises
``MaxCorrectionsPerJobError`` / ``MaxCorrectionsError`` / ``MaxCorrectionsPerHandlerError`` /
``NonRecoverableError`` (or ``ValidationError``, ``ReturnCodeError``). Its run log, ``custodian.json`` in the run
folder, is a list with one entry per job run: ``{"job": ..., "corrections": [{"errors": [...], "actions": [...],
"handler": {"@module": ..., "@class": "VaspErrorHandler", ...}}, ...], "handler": ..., "max_errors": bool,
"max_errors_per_job": bool, "max_errors_per_handler": bool, "nonzero_return_code": bool, "validator": ...}``.

It is read with plain ``json`` (never monty's decoder: the file names classes, none is imported), and only the
handler class names and error labels are kept, shortened and on one line, e.g.
``VASP failed after custodian corrections: VaspErrorHandler (zbrent, brmix); max errors per job reached``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["CUSTODIAN_ERRORS", "LOG_NAME", "read_run_log", "summarize_run_logs", "custodian_reason",
           "custodian_error_in"]

LOG_NAME = "custodian.json"
#: custodian's exceptions when its handlers cannot fix a run
CUSTODIAN_ERRORS = ("MaxCorrectionsPerJobError", "MaxCorrectionsPerHandlerError", "MaxCorrectionsError",
                    "NonRecoverableError", "ValidationError", "ReturnCodeError")
_MESSAGES = re.compile(r"(Max errors per job reached: \d+|Max errors reached: \d+|Maximum number of corrections \d+ "
                       r"reached|Unrecoverable error for handler: [\w.]+|Validation failed: [\w.]+)")
_MAX_BYTES = 50_000_000  # a run log this large is not custodian's; skip it rather than read it
_MAX_REASON = 300
_NAME = re.compile(r"[^A-Za-z0-9_.]")
_LABEL = re.compile(r"[^\w .:+=/-]")


def read_run_log(folder: str | Path) -> list[dict] | None:
    """The entries of ``folder/custodian.json`` (None when it is missing, unreadable or not custodian's format)."""
    path = Path(folder) / LOG_NAME
    try:
        if not path.is_file() or path.stat().st_size > _MAX_BYTES:
            return None
        data = json.loads(path.read_text(errors="replace"))
    except (OSError, ValueError, RecursionError):  # a pathologically nested file is as unreadable as a torn one
        return None
    if not isinstance(data, list) or not all(isinstance(entry, dict) for entry in data):
        return None
    return data


def _class_name(obj: Any) -> str | None:
    name = obj.get("@class") if isinstance(obj, dict) else obj if isinstance(obj, str) else None
    return _NAME.sub("", str(name))[:60] or None if name else None


def _labels(errors: Any) -> list[str]:
    items = errors if isinstance(errors, list) else [errors] if errors else []
    out = []
    for item in items:
        text = _LABEL.sub("", " ".join(str(item).split()))[:40].strip()
        if text:
            out.append(text)
    return out


def summarize_run_logs(run_logs: Iterable[list[dict]]) -> str | None:
    """One line: the handlers applied with their error labels, and why custodian stopped (None: no corrections and
    no stop recorded)."""
    handlers: dict[str, list[str]] = {}
    stop = None
    for run_log in run_logs:
        for entry in run_log:
            corrections = entry.get("corrections")
            for corr in corrections if isinstance(corrections, list) else []:
                if not isinstance(corr, dict) or corr.get("skipped"):
                    continue
                name = _class_name(corr.get("handler")) or "handler"
                seen = handlers.setdefault(name, [])
                seen.extend(label for label in _labels(corr.get("errors")) if label not in seen)
        last = run_log[-1] if run_log else {}
        if last.get("max_errors_per_handler"):
            stop = f"max corrections of {_class_name(last.get('handler')) or 'a handler'} reached"
        elif last.get("max_errors_per_job"):
            stop = "max errors per job reached"
        elif last.get("max_errors"):
            stop = "max errors reached"
        elif last.get("handler"):
            stop = f"unrecoverable error for {_class_name(last.get('handler'))}"
        elif last.get("validator"):
            stop = f"{_class_name(last.get('validator'))} failed"
        elif last.get("nonzero_return_code"):
            stop = "VASP exited with a non-zero code"
    if not handlers and stop is None:
        return None
    parts = [f"{name} ({', '.join(labels[:6])}{', ...' if len(labels) > 6 else ''})" if labels else name
             for name, labels in handlers.items()]
    text = ("VASP failed after custodian corrections: " + ", ".join(parts)) if parts else "VASP failed under custodian"
    if stop:
        text += f"; {stop}"
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON - 3] + "..."


def custodian_error_in(text: str | None) -> str | None:
    """custodian's own message when ``text`` (an exception or stack trace) shows it gave up, else None."""
    if not text:
        return None
    found = _MESSAGES.search(str(text))
    if found:
        return _LABEL.sub("", found.group(1))[:120]
    for name in CUSTODIAN_ERRORS:
        if name in str(text):
            return name
    return None


def custodian_reason(folders: Iterable[str | Path], exception_text: str | None = None) -> str | None:
    """The reason a VASP job failed under custodian: its run logs in ``folders`` (summarised), else custodian's
    message in ``exception_text``; None when neither shows custodian at work."""
    logs = [log for log in (read_run_log(folder) for folder in folders if folder) if log is not None]
    summary = summarize_run_logs(logs) if logs else None
    if summary:
        return summary
    message = custodian_error_in(exception_text)
    return f"VASP failed under custodian: {message}" if message else None
