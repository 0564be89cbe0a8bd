"""Structured log lines in the Rust library's format: `event | key=value key=value`."""

from __future__ import annotations

import logging
from typing import Any


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log `event` with its fields, formatting only when the level is enabled."""
    if logger.isEnabledFor(level):
        logger.log(
            level, "%s | %s", event, " ".join(f"{key}={value}" for key, value in fields.items())
        )
