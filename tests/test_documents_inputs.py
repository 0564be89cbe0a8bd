"""The documents a batch is given: one that cannot be read ends as its own `read_error`,
never the batch's.

Real files only: a path with a NUL byte, a directory, /dev/zero, a FIFO nobody writes
to (opening it blocking would hang the batch for ever), a sparse 201 MB file (over
Datalab's 200 MB; refused from its size, never read), and file objects whose `read`
raises or is not a method, mixed with good documents that must still succeed. A string
that starts like a URL but names no http(s) host is refused naming its index.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genai_coroutines import DocumentProcessor
from genai_coroutines.documents import sources
from genai_coroutines.documents.sources import MAX_UPLOAD_BYTES
from genai_coroutines.emulator import Emulator
from tests import samples
from tests.documents_support import config_for


class BrokenFile:
    name = "broken.pdf"

    def read(self, size: int = -1) -> bytes:
        raise RuntimeError("the share went away")


class WholeReader:
    """A file-like object whose `read()` takes no size (the README promises anything with
    `read()`)."""

    name = "whole.pdf"

    def __init__(self, data: bytes) -> None:
        self.data = data

    def read(self) -> bytes:
        return self.data


class NotAFile:
    name = "odd.pdf"
    read = b"an attribute, not a method"


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "big.pdf"
    with path.open("wb") as handle:  # sparse: no disk used, nothing to read
        handle.write(samples.pdf(1, tag="big"))
        handle.truncate(201 * 1024 * 1024)
    assert path.stat().st_size > MAX_UPLOAD_BYTES
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "pipe.pdf"
    os.mkfifo(path)
    return path


async def run(emulator: Emulator, inputs: Any) -> list[dict[str, Any]]:
    processor = DocumentProcessor(config_for(emulator))
    # A guard, not a synchronisation: a hang (a blocking FIFO) fails instead of freezing.
    return await asyncio.wait_for(processor.process(inputs), timeout=30)


def assert_read_error(result: dict[str, Any], *words: str) -> None:
    assert result["success"] is False, result
    assert result["error_type"] == "read_error", result
    assert result["attempts"] == 0
    for word in words:
        assert word in result["error"], result["error"]


async def test_each_bad_input_fails_alone_and_the_good_ones_succeed(
    emulator: Emulator, tmp_path: Path, big_file: Path, fifo: Path
) -> None:
    good = tmp_path / "good.pdf"
    good.write_bytes(samples.pdf(1, tag="good"))
    inputs: list[Any] = [
        good,
        str(tmp_path / "bad\x00name.pdf"),
        tmp_path,  # a directory
        "/dev/zero",
        str(fifo),
        big_file,
        BrokenFile(),
        NotAFile(),
        io.BytesIO(samples.pdf(1, tag="in memory")),
        samples.pdf(2, tag="bytes"),
    ]

    results = await run(emulator, inputs)

    assert [r["index"] for r in results] == list(range(len(inputs)))
    assert [r["success"] for r in results] == [True] + [False] * 7 + [True, True]
    assert_read_error(results[1], "NUL byte")
    assert_read_error(results[2], "not a regular file", "a directory")
    assert_read_error(results[3], "/dev/zero", "not a regular file", "a character device")
    assert_read_error(results[4], "not a regular file", "a FIFO")
    assert_read_error(results[5], "201.0 MB", "at most 200 MB")
    assert_read_error(results[6], "broken.pdf", "the share went away")
    assert_read_error(results[7], "odd.pdf", "not a method")
    assert sum(emulator.stats.submissions_by_digest.values()) == 3


async def test_a_file_object_whose_read_takes_no_size_is_read_whole(emulator: Emulator) -> None:
    results = await run(emulator, [WholeReader(samples.pdf(2, tag="whole"))])
    assert results[0]["success"] is True, results[0]
    assert results[0]["page_count"] == 2


async def test_bad_inputs_fail_alone_in_a_lazy_batch_too(
    emulator: Emulator, tmp_path: Path, fifo: Path
) -> None:
    def inputs() -> Iterator[Any]:
        yield samples.pdf(1, tag="first")
        yield str(fifo)
        yield "/dev/zero"
        yield samples.pdf(1, tag="last")

    results = await run(emulator, inputs())

    assert [r["success"] for r in results] == [True, False, False, True]
    assert_read_error(results[1], "a FIFO")
    assert_read_error(results[2], "a character device")


async def test_open_files_too_large_or_endless_are_refused_without_being_read(
    emulator: Emulator, big_file: Path
) -> None:
    with big_file.open("rb") as big, open("/dev/zero", "rb") as zero:
        results = await run(emulator, [big, zero])
        assert big.tell() == 0 and zero.tell() == 0  # neither was read
    assert_read_error(results[0], "big.pdf", "at most 200 MB")
    assert_read_error(results[1], "zero", "a character device")


async def test_a_document_read_from_a_pipe_still_works(emulator: Emulator) -> None:
    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "wb") as writer:
        writer.write(samples.pdf(1, tag="piped"))  # small enough for the pipe's buffer
    with os.fdopen(read_end, "rb") as reader:
        results = await run(emulator, [reader])
    assert results[0]["success"] is True, results[0]
    assert results[0]["page_count"] == 1


async def test_bytes_over_the_limit_are_refused(
    emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_UPLOAD_BYTES", 1024 * 1024)  # not 200 MB in a test
    document = samples.pdf(1, tag="padded", extra=b"%" + b"x" * (1024 * 1024))
    results = await run(emulator, [document, samples.pdf(1, tag="small")])
    assert_read_error(results[0], "1.0 MB", "at most 1 MB")
    assert results[1]["success"] is True


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "with a host"),
        ("https://", "with a host"),
        ("http:///doc.pdf", "with a host"),
        ("https://:443/doc.pdf", "with a host"),
        ("https://files.example.com:0/doc.pdf", "invalid port"),
        ("ftp://files.example.com/doc.pdf", "must be an http(s) URL"),
        ("file:///tmp/doc.pdf", "must be an http(s) URL"),
    ],
)
async def test_a_url_input_without_a_host_or_of_another_scheme_is_refused_naming_its_index(
    emulator: Emulator, url: str, problem: str
) -> None:
    """Such a string was sent to Datalab as a `file_url` (or read as a path that cannot
    exist): in a list it fails before anything is sent, lazily it is its own error."""
    with pytest.raises(ValueError, match=rf"inputs\[1\] .*{re.escape(problem)}"):
        await run(emulator, [samples.pdf(1, tag="good"), url])
    assert sum(emulator.stats.submissions_by_digest.values()) == 0

    results = await run(emulator, iter([url, samples.pdf(1, tag="after")]))
    assert [r["success"] for r in results] == [False, True]
    assert results[0]["error_type"] == "invalid_input" and "inputs[0]" in results[0]["error"]
    assert sum(emulator.stats.submissions_by_digest.values()) == 1


async def test_an_http_url_with_a_host_is_still_sent_as_a_file_url(emulator: Emulator) -> None:
    results = await run(emulator, ["HTTPS://files.example.com/doc.pdf"])
    assert results[0]["success"] is True, results[0]
