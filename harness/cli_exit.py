"""How an exception becomes the command line's one stderr line and exit code (`harness.cli.cli_main`):
a `HarnessError` carries its own code (2 for bad input), usage errors and I/O, store and decoding
errors a user can fix are 2, an interrupt is 130; anything else is a bug, reported as an internal
error."""

from __future__ import annotations

import os
import sys

import typer

from .errors import HarnessError

INTERRUPTED = "interrupted; re-run the same command to resume"


def click_exceptions():
    """typer >= 0.2x raises its own vendored copy of click's exceptions, not the `click` package's."""
    try:
        from typer._click import exceptions
    except ImportError:  # older typer: plain click
        from click import exceptions
    return exceptions


def one_line(e: BaseException) -> tuple[str, int] | None:
    """The one stderr line and exit code for an error a user can cause or fix, else None."""
    import sqlite3

    cx = click_exceptions()
    if isinstance(e, HarnessError):
        return str(e), e.exit_code
    if isinstance(e, cx.UsageError):
        where = e.ctx.command_path if e.ctx is not None else "harness"
        return f"{where}: {e.format_message()} (see {where} --help)", 2
    if isinstance(e, cx.ClickException):
        return e.format_message(), 2
    if isinstance(e, (KeyboardInterrupt, typer.Abort)):
        return INTERRUPTED, 130
    if isinstance(e, OSError):
        names = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        return f"{names or 'I/O'}: {e.strerror or e}", 2
    if isinstance(e, sqlite3.Error):
        return f"results store: {e}", 2
    if isinstance(e, UnicodeDecodeError):
        return f"cannot decode text as {e.encoding}: {e.reason} at byte {e.start}", 2
    return None


def quiet_libraries() -> None:
    """Until the work starts, stderr is for our own one error line: library progress bars and
    advisory warnings (transformers, huggingface_hub, lm-eval) would bury it."""
    import warnings

    for k, v in (("TRANSFORMERS_VERBOSITY", "error"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                 ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(k, v)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    if "transformers" in sys.modules:  # imported already (tests, notebooks): the variables came too late
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()
