"""A job's deadline: the time by which a whole batch must be done (not one attempt's
timeout, which is `deadlines`).

`Cutoff.of(deadline)` reads what a caller gave, seconds from the call (an int or float
above 0) or a timezone-aware `datetime`, into one instant on the event loop's clock
(`time.monotonic()`), so a wall clock set back or forward during the batch moves nothing.
The driver holds it (`BatchOptions.cutoff`): when it passes, the batch stops sending
(`BatchStop.cut`): every item not yet sent ends `deadline_exceeded` with no attempt,
journaled as any failure (so not final: a rerun with the journal sends it), while the
requests in flight finish and the work the provider accepted earlier (a background
response, a Datalab job, a batch) is still waited on and collected. A path that can
finish sooner by switching (the Batch API: `responses.batch.fallback`) reads `left()`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from .outcome import Failure


@dataclass(frozen=True, slots=True)
class Cutoff:
    """The instant a batch must be done by, on `time.monotonic()`, and as a wall time."""

    at: float
    wall: datetime
    """The same instant in UTC (for log lines and messages)."""

    @classmethod
    def of(cls, deadline: object) -> Cutoff | None:
        """`deadline=` as given (None: there is none). Raises `TypeError` for a type other
        than int, float or datetime (a bool, a str), `ValueError` for a number not above 0,
        NaN or infinity, a naive datetime, or a datetime already past; both name `deadline`."""
        if deadline is None:
            return None
        now, wall_now = time.monotonic(), datetime.now(timezone.utc)
        if isinstance(deadline, datetime):
            if deadline.tzinfo is None or deadline.utcoffset() is None:
                raise ValueError(
                    "deadline must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), "
                    f"not the naive {deadline.isoformat()}"
                )
            seconds = (deadline - wall_now).total_seconds()
            if seconds <= 0:
                raise ValueError(f"deadline {deadline.isoformat()} has passed already")
            return cls(now + seconds, deadline.astimezone(timezone.utc))
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            raise TypeError(
                "deadline must be seconds from now (int or float) or a timezone-aware "
                f"datetime, not {type(deadline).__name__}"
            )
        if not math.isfinite(deadline) or deadline <= 0:
            raise ValueError(f"deadline must be a number of seconds above 0, not {deadline!r}")
        return cls(now + deadline, wall_now + timedelta(seconds=deadline))

    def left(self) -> float:
        """Seconds until the deadline (negative once it has passed)."""
        return self.at - time.monotonic()

    def text(self) -> str:
        """The deadline as an ISO 8601 UTC time, to the second."""
        return self.wall.isoformat(timespec="seconds")

    def failure(self) -> Failure:
        """Why an item not sent by the deadline ended so (not retried in this run; a rerun
        with the journal sends it, as any failure)."""
        return Failure(
            f"not sent: the deadline {self.text()} passed before its turn",
            "deadline_exceeded",
            retriable=False,
        )
