"""What the Batch API path keeps of a batch file: its lines on disk, a bit per item in memory.

A line is `batch_line`'s: its `custom_id` first (`custom_id`: the stage request's key and
a digest of its body, read back by `key_of` and `custom_id_of`), its body last (`body_of`).
A `BatchJob` is one file and its batch. The lines go to a temporary file per upload
(`Spool`), written as the items arrive, uploaded from disk, and kept until its batch ends so
a follow-up batch can copy the lines it retries; beside each line, in a second file, its
estimated input tokens, journal digest and input digest (54 bytes). In memory a job keeps only which
stage requests it still owes (`Keys`: a bit per item, from its lowest index to its
highest) and the round they are in (one per job: its lines came together); a line's
custom_id, tokens and digest are read back from the spool when wanted (an upload, a
follow-up, a line the batch did not answer). A million lines waiting on their batches take
about 125 KiB so, where a `dict` of a key and a record per line took 0.4 KiB a line.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tempfile
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import IO, NamedTuple

import orjson

from ...engine.stages import StageKey

ENDPOINT = "/v1/responses"
_LINE_ID_START = len(b'{"custom_id":')
_BODY_KEY = b',"body":'
_LINE_ID = re.compile(r"([0-9a-z._]{1,60})-[0-9a-f]{12}")
"""What `custom_id` writes: a `StageKey.text` (checked by `StageKey.parse`) and a digest."""
_BESIDE = struct.Struct("<I?32s?16s")
"""What the spool keeps beside each line: its tokens, whether it has a digest, the digest,
whether it has an input digest, the input digest."""


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


class Keys:
    """A set of stage keys, compact for the common case: an item's single stage (`StageKey(i)`)
    is a bit from the lowest index held to the highest (a batch file's items are close
    together), any other key (a pipeline's named stages and pages) an entry of a set."""

    __slots__ = ("_first", "_bits", "_count", "_named")

    def __init__(self) -> None:
        self._first = 0
        """The index of the first byte's lowest bit."""
        self._bits = bytearray()
        self._count = 0
        self._named: set[StageKey] = set()

    def __len__(self) -> int:
        return self._count + len(self._named)

    def __contains__(self, key: StageKey) -> bool:
        if key.stage:
            return key in self._named
        byte, bit = divmod(key.index - self._first, 8)
        return 0 <= byte < len(self._bits) and bool(self._bits[byte] >> bit & 1)

    def add(self, key: StageKey) -> None:
        if key.stage:
            self._named.add(key)
            return
        index, bits = key.index, self._bits
        if not bits:
            self._first = index - index % 8
        elif index < self._first:  # below the first byte: grow the front back
            grow = (self._first - index + 7) // 8
            bits[:0] = bytes(grow)
            self._first -= grow * 8
        byte, bit = divmod(index - self._first, 8)
        if byte >= len(bits):
            bits += bytes(byte + 1 - len(bits))
        if not bits[byte] >> bit & 1:
            bits[byte] |= 1 << bit
            self._count += 1

    def discard(self, key: StageKey) -> bool:
        """Take `key` out; whether it was in."""
        if key.stage:
            if key not in self._named:
                return False
            self._named.discard(key)
            return True
        if key not in self:
            return False
        byte, bit = divmod(key.index - self._first, 8)
        self._bits[byte] &= ~(1 << bit) & 0xFF
        self._count -= 1
        if not self._count:
            self._bits.clear()
        return True


class Spooled(NamedTuple):
    """A line read back from a spool, with what was kept beside it."""

    raw: bytes
    key: StageKey
    line_id: str
    tokens: int
    """Its estimated input tokens."""
    digest: str | None
    """Its journal identity (`Journal.record_group`); None without a journal."""
    input_digest: bytes | None
    """Its item's `Adapter.input_digest`, journaled with its answer; None: none is."""


class Spool:
    """Request lines in a temporary file, and what is kept of each beside it in another:
    written for upload, then kept for follow-ups."""

    def __init__(self) -> None:
        fd, self.path = tempfile.mkstemp(prefix="genai-coroutines-batch-", suffix=".jsonl")
        self._out: IO[bytes] | None = os.fdopen(fd, "wb")
        fd, self._beside_path = tempfile.mkstemp(prefix="genai-coroutines-batch-", suffix=".bin")
        self._beside: IO[bytes] | None = os.fdopen(fd, "wb")
        self.lines = self.bytes = self.tokens = 0
        self._hash = hashlib.sha256()
        """Of the file's bytes, as they are written (the file is never read back for it)."""

    def add(self, line: bytes, tokens: int, digest: str | None, input_digest: bytes | None) -> None:
        assert self._out is not None and self._beside is not None, "a sealed spool takes no more"
        self._out.write(line)
        self._hash.update(line)
        packed = b"" if digest is None else bytes.fromhex(digest)
        beside = _BESIDE.pack(
            tokens, digest is not None, packed, input_digest is not None, input_digest or b""
        )
        self._beside.write(beside)
        self.lines += 1
        self.bytes += len(line)
        self.tokens += tokens

    def digest(self) -> str:
        """The SHA-256 of the file's bytes (what a rerun finds its upload by)."""
        return self._hash.hexdigest()

    def seal(self) -> None:
        for out in (self._out, self._beside):
            if out is not None:
                out.close()
        self._out = self._beside = None

    def read(self) -> Iterator[Spooled]:
        """Every line, in order, with its key (every line here is `batch_line`'s)."""
        self.seal()
        size = _BESIDE.size
        with open(self.path, "rb") as lines, open(self._beside_path, "rb") as beside:
            for raw in lines:
                tokens, has, digest, has_input, input_digest = _BESIDE.unpack(beside.read(size))
                line_id = custom_id_of(raw)
                key = key_of(line_id)
                assert key is not None, "a spool holds batch_line's lines only"
                yield Spooled(
                    raw,
                    key,
                    line_id,
                    tokens,
                    digest.hex() if has else None,
                    input_digest if has_input else None,
                )

    def remove(self) -> None:
        self.seal()
        for path in (self.path, self._beside_path):
            with suppress(OSError):
                os.unlink(path)


@dataclass(eq=False)
class BatchJob:
    """One batch file and the batch created for it."""

    number: int
    spool: Spool = field(default_factory=Spool)
    owed: Keys = field(default_factory=Keys)
    """Stage requests whose answer this batch still owes."""
    attempt: int = 0
    """Batches its lines were sent in before this one (a job's lines come together: a new
    file's, a follow-up's of one ended job, an earlier run's file's)."""
    apart: dict[StageKey, int] = field(default_factory=dict)
    """The lines whose round is not `attempt` (none, unless a journal says otherwise)."""
    new: int = 0
    """Lines of the input's that no file holds yet (`jobs.UNSENT_FILES`)."""
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

    def add(
        self,
        key: StageKey,
        line: bytes,
        attempt: int,
        tokens: int,
        digest: str | None,
        input_digest: bytes | None,
    ) -> None:
        """A line this batch will owe; `attempt`: batches it was sent in before."""
        if not self.spool.lines:
            self.attempt = attempt
        elif attempt != self.attempt:
            self.apart[key] = attempt
        self.owed.add(key)
        self.spool.add(line, tokens, digest, input_digest)

    def attempt_of(self, key: StageKey) -> int:
        return self.apart.get(key, self.attempt) if self.apart else self.attempt

    def owing(self) -> Iterator[Spooled]:
        """The spool's lines whose answers this batch still owes."""
        if self.owed:
            yield from (line for line in self.spool.read() if line.key in self.owed)


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
