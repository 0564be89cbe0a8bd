"""`Bookkeeping`: the records one batch keeps of its results, whichever API it calls.

Every batch shows the same progress bar, totals the same `Summary` and journals
results the same way; kept in one place (and used only by the driver, `batch.py`), a
rule such as "a journaled success comes back marked `from_journal`, a failure is tried
again" cannot hold for one adapter and not the other.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping, Sized
from typing import Any, Literal

from .indexed import IndexedBytes, IndexedDigests
from .journal import Journal, packed_digest
from .lookahead import INPUT_DIGEST
from .outcome import Answered, Failed, Failure, ItemEnd, Outcome, Pending
from .progress import Progress
from .stages import StageKey
from .summary import Summary

Result = dict[str, Any]


class Digests(Mapping[int, str]):
    """The journal digest of each item in flight, from `Bookkeeping.replay` to its record.

    Held in memory (33 bytes an item: `IndexedDigests`, where a dict of strings takes about
    200) while nothing else holds it: an item whose line a group keeps with its digest (the
    Batch API's spool: `Group.add`) lets it go then (`let_go`), so the million lines of a
    Batch API job waiting at once hold no digest in memory, and the group's files are not
    shadowed by a growing array of their lines' digests. The group hands a line's digest
    back with its outcome while its file is not journaled (`restore`); once it is, the
    digest is read back from the line's group line when wanted (`Journal.group_digests`).

    Beside it, the item's `Adapter.input_digest` when it has one (16 bytes), journaled with
    its answer (`Journal.input_digest`). An item whose request waits on a group hands it
    to its line then (`deferred`): it goes to disk with the line (the Batch API's spool,
    then its group line), and comes back from the group line with the digest."""

    def __init__(self, journal: Journal | None) -> None:
        self._held = IndexedDigests()
        self._inputs = IndexedBytes(INPUT_DIGEST)
        self._journal = journal

    def keep(self, index: int, digest: str) -> None:
        self._held[index] = digest

    def keep_input(self, index: int, input_digest: bytes) -> None:
        """The input digest of an item whose digest is kept."""
        self._inputs[index] = input_digest

    def deferred(self, index: int) -> bytes | None:
        """The item's request waits on a group: its input digest, no longer kept here (see
        the class docstring), not held for the group's window (17 bytes of each line not
        yet uploaded)."""
        return self._inputs.pop(index)

    def let_go(self, index: int) -> None:
        """A group keeps the item's digest now (see the class docstring)."""
        self._held.pop(index)

    def restore(self, index: int, digest: str) -> None:
        """The digest a group handed back with the item's line's outcome, kept for its
        record unless one is kept already."""
        if index not in self._held:
            self._held[index] = digest

    def __getitem__(self, index: int) -> str:
        digest = self._held.get(index)
        if digest is not None:
            return digest
        return self._grouped(index)[0]

    def _grouped(self, index: int) -> tuple[str, bytes | None]:
        """The digest and input digest of an item in a journaled group file."""
        grouped = None if self._journal is None else self._journal.group_digests(index)
        if grouped is None:
            raise KeyError(index)
        return grouped

    def pop(self, index: int) -> tuple[str, bytes | None]:
        """The item's digest and input digest (see the class docstring), no longer kept."""
        digest = self._held.pop(index)
        if digest is None:
            return self._grouped(index)
        return digest, self._inputs.pop(index)

    def __iter__(self) -> Iterator[int]:  # the held ones: what the journal holds is not listed
        return iter(self._held)

    def __len__(self) -> int:
        return len(self._held)


class Bookkeeping:
    """Progress bar, summary and (given a path) journal of one batch; `close` it at the end.

    `total` is the size of `items` when known in advance (None for a lazy iterable),
    for the bar and the start-of-batch log. `succeeded` and `failed` count this batch
    alone, where `summary` (which the caller may share between batches) keeps adding up.
    """

    def __init__(
        self,
        items: object,
        *,
        summary: Summary,
        progress: bool,
        unit: str,
        journal: str | os.PathLike[str] | None,
        kind: str,
    ) -> None:
        # The journal first: one of another kind raises before a bar is drawn.
        self.journal = Journal(journal, kind) if journal is not None else None
        self.total = len(items) if isinstance(items, Sized) else None
        self.summary = summary
        self.progress = Progress(summary, total=self.total, enabled=progress, unit=unit)
        self._count = self.progress.add if progress else summary.add
        """`add`'s counting: the bar's (which adds to the summary), or the summary's alone."""
        self.succeeded = self.failed = 0
        self.digests = Digests(self.journal)
        """Digest of each journaled item in flight, from `replay` to `record` (Datalab
        journals its submitted job under it in between; see `Digests`)."""

    def replay(
        self,
        index: int,
        revive: Callable[[Mapping[str, Any]], Outcome[Any]],
        *request: bytes,
        later: bool = False,
    ) -> ItemEnd[Any] | Literal[True] | None:
        """The journal's success for this very request (its record, `revive`d by the adapter
        that rendered it, is `Answered`); else None, and the request's digest is kept in
        `digests` until `record`. Without a journal nothing is hashed. `later`: True
        instead of the end when the journal tells the record is an answer without
        reading it (`Journal.replayable`): `replayed` reads it when it is wanted."""
        journal = self.journal
        if journal is None:
            return None
        packed = packed_digest(*request)
        replayable = journal.replayable(index, packed)
        if replayable and later:
            return True
        digest = packed.hex()
        if replayable is False:
            self.digests.keep(index, digest)
            return None
        record = journal.finished(index, digest)
        if record is not None:
            outcome = revive(record)
            if isinstance(outcome, Answered):
                # `duplicate_of` is the driver's own key (`DriverCore._finish`): a twin's
                # record, reused, is still a twin (counted, never charged again).
                twin_of = record.get("duplicate_of")
                return ItemEnd(index, outcome, time.perf_counter(), "journal", twin_of, record)
        self.digests.keep(index, digest)
        return None

    def replayed(
        self,
        index: int,
        blob: bytes | str,
        revive: Callable[[Mapping[str, Any]], Outcome[Any]],
        now: float,
    ) -> ItemEnd[Any]:
        """The end of an item the journal answers without its record having been read (by
        its input digest, or `replay` answered `True`), from that record
        (`Journal.records`): its journaled answer; or, should the record not read back as
        one after all (bit rot, its journal's dictionary damaged, an older version's
        rewrite), a `journal_error` failure with its digest kept for `record`, so that a
        rerun sends it (its input is long gone by now).
        `now`: its end time (a replay's latency is nil: one clock reading serves a run)."""
        journal = self.journal
        assert journal is not None
        record = journal.load(blob, index)
        if record is not None:
            outcome = revive(record)
            if isinstance(outcome, Answered):
                return ItemEnd(index, outcome, now, "journal", record.get("duplicate_of"), record)
        self.digests.keep(index, journal.digest(index))
        failure = Failure(
            f"the journal's record of item {index} cannot be read back: a rerun sends it",
            "journal_error",
            retriable=True,
        )
        return ItemEnd(index, Failed(failure, 0), now)

    def submission(self, index: int) -> tuple[str, str] | None:
        """(request id, poll URL) of work journaled as accepted for this very request."""
        digest = self.digests.get(index)
        if self.journal is None or digest is None:
            return None
        return self.journal.submitted(StageKey(index), digest)

    def submitted(self, index: int, submission: Any) -> None:
        """Journal work the API accepted for an item `replay` did not answer."""
        if self.journal is not None:
            self.journal.record_submission(
                StageKey(index),
                self.digests[index],
                submission.request_id,
                submission.request_check_url,
            )

    def record(self, index: int, rendered: tuple[Result, Outcome[Any]]) -> None:
        """Journal the result dict of an item `replay` did not answer with its outcome
        (an answer, a failure, or work still pending on the provider's side)."""
        if self.journal is not None:
            result, outcome = rendered
            digest, input_digest = self.digests.pop(index)
            self.journal.record_result(
                index,
                digest,
                result,
                pending=isinstance(outcome, Pending),
                answered=isinstance(outcome, Answered),
                input_digest=input_digest,
            )

    def add(self, end: ItemEnd[Any]) -> None:
        """Count an item the batch yields, in this batch's counts, the summary and the bar."""
        if isinstance(end.outcome, Answered):
            self.succeeded += 1
        else:
            self.failed += 1
        self._count(end)

    def close(self) -> None:
        """Stop the summary's clock, close the bar and the journal."""
        self.progress.close()
        if self.journal is not None:
            self.journal.close()
