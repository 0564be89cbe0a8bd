"""A fixed-size value per input index for the items in flight, in a flat byte array.

A batch of a million prompts through a path that answers in groups (the Batch API) has
every item waiting at once. What the driver keeps of each (when its turn came, the
budget's hold, the journal digest until the journal holds it elsewhere) was a dict entry:
an int key, a float or a 64-character string, and the table's slot, 100 to 200 bytes an
item. Here it is a slot of a `bytearray` (8 bytes for a float, 32 for a digest, and one
byte saying whether it is there) from the lowest index still kept to the highest; the
front is dropped as the oldest items end (groups answer roughly in input order), so a run
holds that much for each index between the oldest item kept and the newest. `Starts`
keeps less still for what every waiting item has (a start time): a bit each, and a time
per block of indices.
"""

from __future__ import annotations

import math
import struct
from array import array
from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")
_FLOAT = struct.Struct("d")
BLOCK = 64
"""Consecutive indices that share one start time in `Starts` (a multiple of 8)."""
_BLOCK_BYTES = BLOCK // 8


class Indexed(Generic[V]):
    """`index -> value` for non-negative indices, each value `width` bytes once encoded (see
    the module docstring)."""

    __slots__ = ("_width", "_data", "_present", "_first", "_front", "_count")

    def __init__(self, width: int) -> None:
        self._width = width
        self._data = bytearray()
        self._present = bytearray()
        self._first = 0
        """The index of slot 0."""
        self._front = 0
        """Every slot before this one is absent."""
        self._count = 0

    def _encode(self, value: V) -> bytes:
        raise NotImplementedError

    def _decode(self, raw: bytes) -> V:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: int) -> bool:
        slot = index - self._first
        return 0 <= slot < len(self._present) and bool(self._present[slot])

    def __iter__(self) -> Iterator[int]:
        first = self._first
        return (first + slot for slot, there in enumerate(self._present) if there)

    def __setitem__(self, index: int, value: V) -> None:
        raw, width, present = self._encode(value), self._width, self._present
        if not present:
            self._first = self._front = index
        elif index < self._first:  # below the front: grow the front back
            grow = self._first - index
            present[:0] = bytes(grow)
            self._data[:0] = bytes(grow * width)
            self._first, self._front = index, 0
        slot = index - self._first
        if slot >= len(present):
            grow = slot + 1 - len(present)
            present += bytes(grow)
            self._data += bytes(grow * width)
        if not present[slot]:
            present[slot] = 1
            self._count += 1
        self._data[slot * width : (slot + 1) * width] = raw
        self._front = min(self._front, slot)

    def get(self, index: int) -> V | None:
        if index not in self:
            return None
        slot, width = index - self._first, self._width
        return self._decode(bytes(self._data[slot * width : (slot + 1) * width]))

    def pop(self, index: int) -> V | None:
        """The value kept for `index`, no longer kept; None if there was none."""
        value = self.get(index)
        if value is None:
            return None
        slot = index - self._first
        self._present[slot] = 0
        self._count -= 1
        if not self._count:
            self._data.clear()
            self._present.clear()
            self._first = self._front = 0
        elif slot == self._front:
            self._trim()
        return value

    def _trim(self) -> None:
        """Move `_front` past the absent slots (each is passed once), and drop them once
        they are a quarter of the array (the copy is paid for by as many pops)."""
        present = self._present
        front = present.find(1, self._front)
        if front * 4 >= len(present):
            del present[:front]
            del self._data[: front * self._width]
            self._first += front
            front = 0
        self._front = front


class IndexedFloats(Indexed[float]):
    """A float per index (start times, budget holds): 9 bytes each."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(_FLOAT.size)

    def _encode(self, value: float) -> bytes:
        return _FLOAT.pack(value)

    def _decode(self, raw: bytes) -> float:
        return float(_FLOAT.unpack(raw)[0])


DIGEST = 32
"""Bytes of a SHA-256 digest (`journal.request_digest`'s, as bytes)."""


class IndexedDigests(Indexed[str]):
    """A SHA-256 hex digest per index (`journal.request_digest`'s): 33 bytes each, where the
    string alone is 113."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(DIGEST)

    def _encode(self, value: str) -> bytes:
        return bytes.fromhex(value)

    def _decode(self, raw: bytes) -> str:
        return raw.hex()


class Starts:
    """Which items wait, and since when, for a million items waiting at once (the Batch API
    path's lines, `batch.Driver._plain`): a bit per index from the lowest kept to the
    highest, and per block of `BLOCK` consecutive indices the earliest start among its items,
    which each of them reports as its own. Workers take inputs in order, so the items of a
    block start within moments of each other (one that straddles a pause, such as the wait
    for an upload, within that pause), and a million waiting items take 250 KiB (a quarter
    of a byte each: a bit, and a block's 8 bytes over its 64 indices) where an exact float
    each took 9 MiB. Each index is kept once in a run (a block's time only moves earlier);
    the front is dropped as the oldest items end, as in `Indexed`."""

    __slots__ = ("_first", "_bits", "_times", "_front", "_count")

    def __init__(self) -> None:
        self._first = 0
        """The index of the first bit (a multiple of `BLOCK`)."""
        self._bits = bytearray()
        self._times = array("d")
        """The earliest start of each block's items (infinite: none yet)."""
        self._front = 0
        """Every byte of `_bits` before this one is zero."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: int) -> bool:
        at = index - self._first
        return 0 <= at < len(self._bits) * 8 and bool(self._bits[at >> 3] >> (at & 7) & 1)

    def __iter__(self) -> Iterator[int]:
        first = self._first
        return (
            first + byte * 8 + bit
            for byte, bits in enumerate(self._bits)
            if bits
            for bit in range(8)
            if bits >> bit & 1
        )

    def add(self, index: int, started: float) -> None:
        """Keep `index` as waiting since `started` (the earliest of its block's, if earlier)."""
        if index in self:
            raise ValueError(f"index {index} is already kept")
        bits, times = self._bits, self._times
        if not self._count:
            self._first, self._front = index - index % BLOCK, 0
            del bits[:], times[:]
        elif index < self._first:  # below the first block: grow the front back
            grow = (self._first - index + BLOCK - 1) // BLOCK
            bits[:0] = bytes(grow * _BLOCK_BYTES)
            times[:0] = array("d", [math.inf]) * grow
            self._first -= grow * BLOCK
            self._front = 0
        at = index - self._first
        block = at // BLOCK
        if block >= len(times):
            grow = block + 1 - len(times)
            bits += bytes(grow * _BLOCK_BYTES)
            times += array("d", [math.inf]) * grow
        bits[at >> 3] |= 1 << (at & 7)
        self._count += 1
        self._front = min(self._front, at >> 3)
        if started < times[block]:
            times[block] = started

    def pop(self, index: int) -> float | None:
        """The start kept for `index` (its block's), no longer kept; None if not kept."""
        if index not in self:
            return None
        at = index - self._first
        bits = self._bits
        bits[at >> 3] &= ~(1 << (at & 7)) & 0xFF
        started = self._times[at // BLOCK]
        self._count -= 1
        if not self._count:
            del bits[:], self._times[:]
            self._first = self._front = 0
        elif at >> 3 == self._front and not bits[self._front]:
            self._trim()
        return started

    def _trim(self) -> None:
        """Move `_front` past the zero bytes (each is passed once), and drop the blocks
        before it once they are a quarter of the array (the copy is paid for by as many pops)."""
        bits, front = self._bits, self._front
        while not bits[front]:  # some bit is set: `pop` empties the whole when none is
            front += 1
        blocks = front // _BLOCK_BYTES
        if front * 4 >= len(bits) and blocks:
            del bits[: blocks * _BLOCK_BYTES], self._times[:blocks]
            self._first += blocks * BLOCK
            front -= blocks * _BLOCK_BYTES
        self._front = front


class IndexedBytes(Indexed[bytes]):
    """A value of `width` bytes per index (`Adapter.input_digest`s: 16)."""

    __slots__ = ()

    def _encode(self, value: bytes) -> bytes:
        if len(value) != self._width:
            raise ValueError(f"{len(value)} bytes where {self._width} are kept")
        return value

    def _decode(self, raw: bytes) -> bytes:
        return raw
