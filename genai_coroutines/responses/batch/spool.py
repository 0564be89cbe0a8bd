"""What the Batch API path keeps of a batch file: its lines on disk, its items in memory.

A line is `batch_line`'s: its `custom_id` first (`custom_id`: the stage request's key and
a digest of its body, read back by `key_of` and `custom_id_of`), its body last (`body_of`).
A `BatchJob` is one file and its batch. Per stage request it keeps only a `Member` (its line
id, its round, its tokens and journal digest) under its `StageKey`; the lines themselves go
to a temporary file per upload (`Spool`), written as the items arrive, uploaded from disk,
and kept until its batch ends so a follow-up batch can copy the lines it retries.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO

import orjson

from ...engine.stages import StageKey

ENDPOINT = "/v1/responses"
_LINE_ID_START = len(b'{"custom_id":')
_BODY_KEY = b',"body":'
_LINE_ID = re.compile(r"([0-9a-z._]{1,60})-[0-9a-f]{12}")
"""What `custom_id` writes: a `StageKey.text` (checked by `StageKey.parse`) and a digest."""


def custom_id(key: StageKey, body: bytes) -> str:
    """Unique per stage request (its key: an item of one stage writes its bare index, as
    earlier runs did, so their journals resume) and stable across reruns (its body)."""
    return f"{key.text}-{hashlib.sha256(body).hexdigest()[:12]}"


def key_of(line_id: str) -> StageKey | None:
    """The stage key in a custom_id `custom_id` wrote; None for any other."""
    match = _LINE_ID.fullmatch(line_id)
    return None if match is None else StageKey.parse(match[1])


def batch_line(line_id: str, body: bytes) -> bytes:
    """One JSONL request line; `body` is already the JSON the synchronous path sends."""
    return (
        b'{"custom_id":'
        + orjson.dumps(line_id)
        + b',"method":"POST","url":"'
        + ENDPOINT.encode()
        + b'","body":'
        + body
        + b"}\n"
    )


@dataclass(slots=True)
class Member:
    """What is kept in memory of a stage request waiting on a batch."""

    line_id: str
    attempt: int
    """Batches the request was sent in before this one."""
    tokens: int
    digest: str | None
    """Its journal identity (`Journal.record_group`); None without a journal."""


class Spool:
    """Request lines in a temporary file: written for upload, then kept for follow-ups."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="genai-coroutines-batch-", suffix=".jsonl")
        self._out: IO[bytes] | None = os.fdopen(fd, "wb")
        self.lines = self.bytes = self.tokens = 0

    def add(self, line: bytes, tokens: int) -> None:
        assert self._out is not None, "a sealed spool takes no more lines"
        self._out.write(line)
        self.lines += 1
        self.bytes += len(line)
        self.tokens += tokens

    def seal(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def read(self) -> Iterator[bytes]:
        self.seal()
        with open(self.path, "rb") as lines:
            yield from lines

    def remove(self) -> None:
        self.seal()
        with suppress(OSError):
            os.unlink(self.path)


@dataclass(eq=False)
class BatchJob:
    """One batch file and the batch created for it."""

    number: int
    spool: Spool = field(default_factory=Spool)
    members: dict[StageKey, Member] = field(default_factory=dict)
    """Stage requests whose answer this batch still owes."""
    file_id: str | None = None
    file_created: float = 0.0
    file_lines: int = 0
    uploaded_here: bool = False
    """The file is this spool (so its line numbers are the spool's)."""
    known_tokens: int | None = None
    """The tokens journaled with a file uploaded by an earlier run."""
    batch_id: str | None = None
    status: str = "writing"
    counts: dict[str, int] = field(default_factory=dict)
    cancelled: bool = False
    """Cancelled by this library (on interrupt): its lines that never ran are sent again."""
    enqueued: bool = False
    after_ended: int | None = None
    """Submit only once more than this many batches have ended (after the API said its
    enqueued-token limit was reached)."""

    @property
    def tokens(self) -> int:
        return self.known_tokens if self.known_tokens is not None else self.spool.tokens

    def add(self, key: StageKey, member: Member, line: bytes) -> None:
        self.members[key] = member
        self.spool.add(line, member.tokens)


def custom_id_of(raw: bytes) -> str:
    """The custom_id of a line this library wrote (it comes first: see `batch_line`)."""
    end = raw.find(b',"method":', _LINE_ID_START)
    try:
        value = orjson.loads(raw[_LINE_ID_START:end])
    except orjson.JSONDecodeError:
        return ""
    return value if isinstance(value, str) else ""


def body_of(raw: bytes) -> bytes:
    """The request body of a line this library wrote (it comes last: see `batch_line`)."""
    start = raw.index(_BODY_KEY, _LINE_ID_START) + len(_BODY_KEY)
    return raw[start : raw.rindex(b"}")]
