"""What a CLI run shows: one line per finished step with its time, failed checks and warnings on
the terminal, and Dagster's full event stream in a log file under ``HRM_HOME/logs``.

The UI reads the same events from the instance; the terminal only needs to say what is happening
and what went wrong (``--verbose`` brings the stream back).
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import dagster as dg

FAILURE_EVENTS = ("STEP_FAILURE", "PIPELINE_FAILURE")


class ProgressHandler(logging.Handler):
    """Dagster events → short terminal lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.started: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, "dagster_meta", None) or {}
        event = meta.get("dagster_event")
        step = meta.get("step_key") or ""
        if event is None:  # the assets' own messages (context.log): dropped symbols, reuse, resume
            if record.levelno >= logging.INFO:
                level = "warning" if record.levelno >= logging.WARNING else "note"
                self._print(f"  {level} ({step or 'run'}): {meta.get('orig_message', record.getMessage())}")
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.started[step] = time.perf_counter()
        elif kind == "STEP_SUCCESS":
            seconds = time.perf_counter() - self.started.get(step, time.perf_counter())
            self._print(f"  done  {step:<50} {seconds:7.1f} s")
        elif kind in FAILURE_EVENTS:
            self._print(f"  FAIL  {step or 'run'}")
        elif kind == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            self._print(f"  check {event.event_specific_data.check_name} did not pass")

    @staticmethod
    def _print(line: str) -> None:
        print(line, file=sys.stdout, flush=True)


def log_file(home: Path) -> Path:
    """Today's log file of CLI runs."""
    folder = home / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{time.strftime('%Y-%m-%d')}.log"


def cli_logger(path: Path, verbose: bool) -> dg.LoggerDefinition:
    """A Dagster logger that writes every event to ``path`` and shows progress lines (or, with
    ``verbose``, every event) on the terminal."""

    @dg.logger
    def hrm_cli_logger(_init_context: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.getLogger(f"hrm-trading.{id(_init_context)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.handlers.clear()
        file_handler = logging.FileHandler(path)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(file_handler)
        if verbose:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
            logger.addHandler(console)
        else:
            logger.addHandler(ProgressHandler())
        return logger

    return hrm_cli_logger
