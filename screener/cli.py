"""Command-line interface: a thin typer layer over the Python API.

Heavy imports (torch, pymatgen, jobflow) happen inside the commands so ``screener --help`` stays fast. Every
:class:`~screener.errors.ScreenerError` (and any other exception) is reported as one line on stderr with a non-zero
exit code; ``screener --debug ...`` shows the traceback instead.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="screener: find stable crystals at SCAN accuracy for a fraction of the DFT cost.",
)

_STATE = {"debug": False}


@app.callback()
def _main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
) -> None:
    _STATE["debug"] = debug
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING),
        format="%(message)s",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
    )


# ---- model commands (issue: foundation and CGAT) -------------------------------------------------------------------
# (train, predict)

# ---- calculation commands (issue: calculations, hulls) --------------------------------------------------------------
# (hull, calc)

# ---- campaign commands (issue: campaign) ----------------------------------------------------------------------------
# (run, status, report)

# ---- world commands (issue: world) ----------------------------------------------------------------------------------
# (world build, candidates)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``screener`` script: run the app, turn errors into one line and an exit code."""
    from screener.errors import ScreenerError

    try:
        app(args=argv, standalone_mode=False)
    except ScreenerError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except (typer.Exit, SystemExit) as exc:
        code = getattr(exc, "exit_code", None)
        if code is None:
            code = getattr(exc, "code", 0)
        sys.exit(code or 0)
    except KeyboardInterrupt:
        typer.echo("error: interrupted; everything already computed is saved", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI contract is one line, never a traceback
        # Usage errors from typer's (vendored) click: it formats them itself, with the usage line.
        if hasattr(exc, "show") and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            typer.echo("error: aborted", err=True)
            sys.exit(1)
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
