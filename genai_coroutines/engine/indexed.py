"""A number per input index for the items in flight, in 8 bytes each.

A batch of a million prompts through a path that answers in groups (the Batch API) has
every item waiting at once. What the driver keeps of each (when its turn came, the
budget's hold) was a dict entry: an int key, a float object and the table's slot, about
100 bytes an item; here it is one `array('d')` slot from the lowest index still kept to
the highest, and the front is dropped as the oldest items end (the groups answer roughly
in input order), so a run holds 8 bytes for each index between the oldest waiting item
and the newest.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator

_EMPTY = math.nan
_ABSENT = array("d", [_EMPTY])


class IndexedFloats:
    """`index -> float` for non-negative indices (see the module docstring); NaN is absent."""

    __slots__ = ("_values", "_first", "_front", "_count")

    def __init__(self) -> None:
        self._values = array("d")
        self._first = 0
        """The index of `_values[0]`."""
        self._front = 0
        """Every slot before this offset is absent."""
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, index: int) -> bool:
        return self.get(index) is not None

    def __iter__(self) -> Iterator[int]:
        first = self._first
        for offset, value in enumerate(self._values):
            if value == value:  # not NaN
                yield first + offset

    def __setitem__(self, index: int, value: float) -> None:
        values = self._values
        if values and index - self._first == len(values):  # the usual case: the next index
            values.append(value)
            self._count += 1
            return
        if not values:
            self._first = index
        elif index < self._first:  # an index below the front: grow the front back
            values[:0] = _ABSENT * (self._first - index)
            self._first = index
        offset = index - self._first
        if offset >= len(values):
            values.extend(_ABSENT * (offset + 1 - len(values)))
        if values[offset] != values[offset]:
            self._count += 1
        values[offset] = value
        self._front = min(self._front, offset)

    def get(self, index: int) -> float | None:
        offset = index - self._first
        if 0 <= offset < len(self._values):
            value = self._values[offset]
            if value == value:
                return value
        return None

    def pop(self, index: int) -> float | None:
        """The value kept for `index`, no longer kept; None if there was none."""
        value = self.get(index)
        if value is None:
            return None
        values = self._values
        offset = index - self._first
        values[offset] = _EMPTY
        self._count -= 1
        if not self._count:
            del values[:]
            self._first = self._front = 0
        elif offset == self._front:
            self._trim()
        return value

    def _trim(self) -> None:
        """Move `_front` past the absent slots (each is passed once), and drop them once
        they are a quarter of the array (the copy is paid for by as many pops)."""
        values, front = self._values, self._front
        while values[front] != values[front]:
            front += 1
        if front * 4 >= len(values):
            del values[:front]
            self._first += front
            front = 0
        self._front = front
