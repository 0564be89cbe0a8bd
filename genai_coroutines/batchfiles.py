"""Batch inputs and outputs on disk, read and written lazily for the command line.

Prompts come from JSONL, CSV or plain text and are yielded one at a time, so a file of
100,000 prompts never sits in memory. Results go to JSONL one line per finished item,
flushed as written, in completion order with their `index` (sort by it to restore
input order; the journal can also export them ordered).
"""

from __future__ import annotations

import csv
import glob
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import orjson

T = TypeVar("T")


class Rereadable(Generic[T]):
    """Inputs read lazily from disk that also know their count.

    Each iteration re-reads the source, so nothing is held in memory; `len()` costs
    one extra pass (once) and gives the progress bar a total. Counting before the
    batch starts also means a malformed line fails the command before anything is
    paid for.
    """

    def __init__(self, read: Callable[[], Iterator[T]]) -> None:
        self._read = read
        self._count: int | None = None

    def __iter__(self) -> Iterator[T]:
        return self._read()

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self._read())
        return self._count


def prompt_source(path: str, *, field: str = "prompt") -> Iterable[str | list[Any]]:
    """The prompts of `path` for a batch: re-readable and counted, or a one-pass stdin."""
    if path == "-":
        return read_prompts(path, field=field)
    with open(path, encoding="utf-8"):  # fail now (missing, unreadable), not mid-batch
        pass
    return Rereadable(lambda: read_prompts(path, field=field))


def _open_text(path: str) -> IO[str]:
    if path == "-":
        return sys.stdin
    return open(path, encoding="utf-8", newline="")


def read_prompts(path: str, *, field: str = "prompt") -> Iterator[str | list[Any]]:
    """Yield prompts from `path` ("-" for stdin), by extension.

    `.jsonl`/`.ndjson`: each line a JSON string, a list of Responses input items, or an
    object whose `field` (default "prompt") or `input` holds one. `.csv`: the `field`
    column, else the first column. Anything else: one prompt per non-empty line.
    """
    suffix = Path(path).suffix.lower()
    with _open_text(path) as handle:
        if suffix in (".jsonl", ".ndjson"):
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        value = orjson.loads(line)
                    except orjson.JSONDecodeError as exc:
                        raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
                    yield _jsonl_prompt(value, field, f"{path}:{number}")
        elif suffix == ".csv":
            rows = csv.reader(handle)
            header = next(rows, None)
            if header is None:
                return
            column = header.index(field) if field in header else 0
            for row in rows:
                if row:
                    yield row[column]
        else:
            for line in handle:
                if line.strip():
                    yield line.rstrip("\r\n")


def _jsonl_prompt(value: Any, field: str, where: str) -> str | list[Any]:
    if isinstance(value, dict):
        value = value.get(field, value.get("input"))
    if isinstance(value, str | list):
        return value
    raise ValueError(
        f"{where}: expected a string, a list of input items or an object with "
        f"{field!r}, got {type(value).__name__}"
    )


def check_documents(patterns: Iterable[str]) -> None:
    """Raise `FileNotFoundError` for a named file that is missing or a glob matching nothing.

    A path inside an `@list` file is only read when its turn comes, so a missing one is
    that document's failure (a `read_error` result), not the command's.
    """
    for pattern in patterns:
        if pattern.startswith(("http://", "https://")):
            continue
        if pattern.startswith("@"):
            if not os.path.isfile(pattern[1:]):
                raise FileNotFoundError(f"list file {pattern[1:]} not found")
        elif glob.has_magic(pattern):
            if next(glob.iglob(pattern, recursive=True), None) is None:
                raise FileNotFoundError(f"no file matches {pattern}")
        elif not os.path.isfile(pattern):
            raise FileNotFoundError(f"document {pattern} not found")


def expand_documents(patterns: Iterable[str]) -> Iterator[str]:
    """Yield document paths and URLs: globs are expanded, `@list.txt` names one per line."""
    for pattern in patterns:
        if pattern.startswith(("http://", "https://")):
            yield pattern
        elif pattern.startswith("@"):
            with open(pattern[1:], encoding="utf-8") as listing:
                yield from (line.strip() for line in listing if line.strip())
        elif glob.has_magic(pattern):
            yield from sorted(glob.iglob(pattern, recursive=True))
        else:
            yield pattern


class JsonlWriter:
    """Append result dicts as JSON lines, flushed one by one so a crash loses none."""

    def __init__(self, path: str) -> None:
        self._file: IO[bytes] = sys.stdout.buffer if path == "-" else open(path, "wb")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
        self._file.flush()

    def close(self) -> None:
        if self._file is not sys.stdout.buffer:
            self._file.close()
