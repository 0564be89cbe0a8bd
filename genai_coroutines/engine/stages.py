"""Stages: the requests an item runs on its way to its outcome, and how each is awaited.

An item's request runs as one of three kinds of stage:

    direct      POSTed and answered while the item holds its driver slot
    background  POSTed in the slot, its id journaled, then polled without the slot
                (`ItemRun.waiting`: another input is admitted meanwhile)
    grouped     handed to a group of lines (the Batch API: files cut on lines, bytes and
                tokens, or sent partly filled after a short idle or maximum wait) that
                answers it when its group ends; no slot is held

`StageKey` names one stage request of one item: its index, the stage's name (the
pipeline's "ocr", "extraction"; "" for an item of a single stage) and its page (a
`per_page` extraction's, else None). Journal entries of submissions and group lines
carry it, and so does a Batch API line's `custom_id` (`StageKey.text`), so a multi-stage
item resumes each stage on its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_WAITING = 1000
"""Items waiting on the provider without a driver slot, at most (`ItemRun.waiting`); the
next ones wait in their slots. Bounds memory at `concurrency + MAX_WAITING` items."""

_NAME = re.compile(r"[a-z][a-z_]{0,30}")
_TEXT = re.compile(r"(0|[1-9][0-9]{0,17})(?:\.([a-z][a-z_]{0,30})(?:\.(0|[1-9][0-9]{0,8}))?)?")
"""What `StageKey.text` writes (ASCII digits only: `str.isdigit` also takes `²`, which
`int` refuses, and `int` refuses more than 4,300 digits)."""


@dataclass(frozen=True, slots=True)
class StageKey:
    """One stage request of one item (see the module docstring)."""

    index: int
    stage: str = ""
    page: int | None = None

    def __post_init__(self) -> None:
        if self.stage and not _NAME.fullmatch(self.stage):
            raise ValueError(f"stage must be a lowercase name, got {self.stage!r}")
        if self.page is not None and not self.stage:
            raise ValueError("page needs a stage name")

    @property
    def text(self) -> str:
        """`<index>`, `<index>.<stage>` or `<index>.<stage>.<page>`: what journal keys and
        Batch API custom_ids carry (an item of one stage keeps its bare index, as before)."""
        if not self.stage:
            return str(self.index)
        if self.page is None:
            return f"{self.index}.{self.stage}"
        return f"{self.index}.{self.stage}.{self.page}"

    @classmethod
    def parse(cls, text: str) -> StageKey | None:
        """The key `text` wrote; None for anything else."""
        match = _TEXT.fullmatch(text)
        if match is None:
            return None
        page = match[3]
        return cls(int(match[1]), match[2] or "", None if page is None else int(page))
