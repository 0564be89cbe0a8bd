"""What a Datalab job costs, per operation, and the account's credit it is paid from.

A job bills per page for each thing it does: parsing the document (OCR, priced by `mode`),
extracting a `page_schema`, segmenting by a `segmentation_schema`. A job that reads a
checkpoint parses nothing, so an `/extract` from a checkpoint costs the extraction alone:
the saving "convert once, extract many" is about. The prices are the emulator's, plausible
but not Datalab's: parsing is Datalab's list price ($4 / $6 per 1,000 pages), extraction the
"fast" figure of a third-party summary of its pricing ($6 per 1,000 pages), segmentation a
guess (no source prices it).

`cost_breakdown` keeps the keys clients read (`list_cost_cents`, `final_cost_cents`, both the
total) and adds `operations`, the cents of each. Credits: with `datalab_credits_cents` set,
each job that completes is paid at acceptance; a submission the balance cannot cover is
refused `403 {"detail": "You need an active, paid subscription to use this API."}`
(platform/errors, platform/billing). Failed jobs cost nothing (their results carry no cost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .datalab_form import Options

if TYPE_CHECKING:
    from .state import EmulatorConfig

PARSE_CENTS_PER_PAGE = {"fast": 0.4, "balanced": 0.4, "accurate": 0.6}
EXTRACT_CENTS_PER_PAGE = 0.6
SEGMENT_CENTS_PER_PAGE = 0.2

NO_CREDITS = "You need an active, paid subscription to use this API."


def operations(options: Options, pages: int, *, parses: bool) -> dict[str, float]:
    """The cents of each operation of a job over `pages` pages (`parses`: not from a checkpoint)."""
    cents: dict[str, float] = {}
    if parses:
        cents["parse"] = pages * PARSE_CENTS_PER_PAGE[options.mode]
    if options.page_schema is not None:
        cents["extract"] = pages * EXTRACT_CENTS_PER_PAGE
    if options.segmentation_schema is not None:
        cents["segment"] = pages * SEGMENT_CENTS_PER_PAGE
    return {name: round(value, 4) for name, value in cents.items()}


def cost_breakdown(cents: dict[str, float]) -> dict[str, object]:
    total = round(sum(cents.values()), 4)
    return {"list_cost_cents": total, "final_cost_cents": total, "operations": dict(cents)}


class Credits:
    """The account's balance: `datalab_credits_cents` (read live, so a test may top it up)
    less what accepted jobs cost."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.spent = 0.0
        self._refused_at: float | None = None
        """The balance when a submission was last refused for credits."""

    @property
    def balance(self) -> float | None:
        """Cents left; None when credits are unlimited."""
        granted = self.config.datalab_credits_cents
        return None if granted is None else granted - self.spent

    def covers(self, cents: float) -> bool:
        """Whether the balance covers `cents`; a refusal is remembered (`exhausted`)."""
        balance = self.balance
        if balance is not None and cents > balance + 1e-9:
            self._refused_at = balance
            return False
        return True

    def spend(self, cents: float) -> None:
        self.spent += cents

    @property
    def exhausted(self) -> bool:
        """A submission was refused and no credit has been added since (what
        `datalab_polls_need_credits` refuses polls on)."""
        balance = self.balance
        return balance is not None and self._refused_at is not None and balance <= self._refused_at
