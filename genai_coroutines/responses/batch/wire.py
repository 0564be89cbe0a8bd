"""The Files and Batch API calls the Batch API path makes, each through the retry policy.

`POST /v1/files` (multipart, `purpose=batch`, the file streamed from disk on the loop's
thread),
`POST /v1/batches`, `GET /v1/batches/{id}`, `GET /v1/batches` (to find a batch created
for a file before a crash let its id be journaled), `POST /v1/batches/{id}/cancel` and
`GET /v1/files?purpose=batch` (to find a file uploaded before a crash let its id be
journaled), `GET /v1/files/{id}/content`, read in chunks and handed over line by line so an output
file of 50,000 responses is never held whole. Failures are classified by
`errors.classify`, as on the synchronous path.

A create that failed without an answer (a timeout, a reset, a 5xx) may still have
created the batch, and a second create would run, and bill, every line twice; so before
it is retried, the batches are listed for one created from this file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from ...engine import (
    Failure,
    Reply,
    Retried,
    RetryDetails,
    RetryPolicy,
    Success,
    log_event,
    retrying,
    send,
    transfer_timeout,
)
from ...engine.telemetry import (
    CREATE_BATCH,
    OPENAI,
    POLL_BATCH,
    UPLOAD_FILE,
    Attempt,
    BatchTelemetry,
)
from ..errors import bad_body, classify
from ..results import logger
from .spool import ENDPOINT

Json = dict[str, Any]
LineHandler = Callable[[bytes], Awaitable[None]]

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
"""The statuses a batch ends in."""
READ_CHUNK = 2**16
LIST_PAGE = 100
FILE_PAGE = 10_000
"""Files listed per page: the API's largest `limit`."""
CLOCK_SKEW_SECS = 600
"""A batch listed as created this long before its file was journaled is not its batch (nor
a file this long before its upload was intended)."""


class BatchWire:
    """The calls of one batch run, on its session."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        api_key: str,
        policy: RetryPolicy,
        timeout_secs: float,
        wait: Callable[[float], Awaitable[None]] = asyncio.sleep,
        telemetry: BatchTelemetry | None = None,
    ) -> None:
        self.session = session
        self.telemetry = telemetry
        self.base = base_url.rstrip("/")
        self.api_key = api_key
        self.policy = policy
        self.wait = wait
        self.timeout = timeout_secs
        """Each request's bound; for uploads and downloads (200 MB takes a while), the bound
        on each silence instead."""

    async def upload(self, path: str | os.PathLike[str], name: str) -> Success[Json] | Failure:
        """Upload a batch input file; its `FileObject`."""

        async def attempt() -> Success[Json] | Failure:
            boundary = secrets.token_hex(16)
            head, tail = _form_parts(boundary, name)
            size = len(head) + os.path.getsize(path) + len(tail)
            span = None if self.telemetry is None else self.telemetry.attempt(OPENAI, UPLOAD_FILE)
            reply = await send(
                self.session,
                "POST",
                f"{self.base}/files",
                timeout=None,  # 200 MB takes a while: only silence is bounded
                idle_timeout=self.timeout,
                data=_form_body(path, head, tail),
                headers={
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                    "Content-Length": str(size),
                },
            )
            return self._traced(span, reply)

        return await self._retrying(attempt, "upload")

    async def create(
        self, file_id: str, window: str, metadata: dict[str, str] | None, since: float
    ) -> Success[Json] | Failure:
        """Create the batch of an uploaded file (or find the one an unanswered create made)."""
        body: Json = {
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": window,
        }
        if metadata:
            body["metadata"] = metadata
        data = orjson.dumps(body)
        unanswered = False

        async def attempt() -> Success[Json] | Failure:
            nonlocal unanswered
            if unanswered:
                found = await self.find(file_id, since)
                if isinstance(found, Failure):
                    return found
                if found is not None:
                    return Success(found)
            span = None if self.telemetry is None else self.telemetry.attempt(OPENAI, CREATE_BATCH)
            reply = await send(
                self.session, "POST", f"{self.base}/batches", timeout=self.timeout, data=data
            )
            outcome = self._traced(span, reply)
            unanswered = isinstance(outcome, Failure) and (
                outcome.status is None or outcome.status >= 500
            )
            return outcome

        return await self._retrying(attempt, "create")

    async def retrieve(self, batch_id: str) -> Success[Json] | Failure:
        """One poll of a batch (`engine.poll_until` retries it)."""
        span = None if self.telemetry is None else self.telemetry.attempt(OPENAI, POLL_BATCH)
        reply = await send(
            self.session, "GET", f"{self.base}/batches/{batch_id}", timeout=self.timeout
        )
        return self._traced(span, reply)

    async def cancel(self, batch_id: str) -> Success[Json] | Failure:
        """Ask the API to cancel a batch (one attempt: it is asked on the way out)."""
        reply = await send(
            self.session, "POST", f"{self.base}/batches/{batch_id}/cancel", timeout=self.timeout
        )
        return self._json(reply)

    async def find(self, file_id: str, since: float) -> Json | None | Failure:
        """The batch created from `file_id`, listed newest first back to `since`; or None."""
        after: str | None = None
        while True:
            query = f"?limit={LIST_PAGE}" + (f"&after={after}" if after else "")

            async def attempt(query: str = query) -> Success[Json] | Failure:
                reply = await send(
                    self.session, "GET", f"{self.base}/batches{query}", timeout=self.timeout
                )
                return self._json(reply)

            page = await self._retrying(attempt, "list")
            if isinstance(page, Failure):
                return page
            batches = [b for b in page.value.get("data") or [] if isinstance(b, dict)]
            for batch in batches:
                if batch.get("input_file_id") == file_id:
                    return batch
            oldest = batches[-1].get("created_at") if batches else None
            if (
                not batches
                or not page.value.get("has_more")
                or (isinstance(oldest, int | float) and oldest < since - CLOCK_SKEW_SECS)
            ):
                return None
            after = str(batches[-1].get("id"))

    async def find_file(self, name: str, size: int, since: float) -> Json | None | Failure:
        """The batch file named `name` of `size` bytes, listed newest first back to `since`
        (`time.time()` of the upload's intent); or None."""
        after: str | None = None
        while True:
            query = f"?purpose=batch&limit={FILE_PAGE}" + (f"&after={after}" if after else "")

            async def attempt(query: str = query) -> Success[Json] | Failure:
                reply = await send(
                    self.session, "GET", f"{self.base}/files{query}", timeout=self.timeout
                )
                return self._json(reply)

            page = await self._retrying(attempt, "list files")
            if isinstance(page, Failure):
                return page
            files = [f for f in page.value.get("data") or [] if isinstance(f, dict)]
            for found in files:
                if found.get("filename") == name and found.get("bytes") == size:
                    return found
            oldest = files[-1].get("created_at") if files else None
            if (
                not files
                or not page.value.get("has_more")
                or (isinstance(oldest, int | float) and oldest < since - CLOCK_SKEW_SECS)
            ):
                return None
            after = str(files[-1].get("id"))

    async def lines(
        self, file_id: str, handle: LineHandler, restart: Callable[[], None] | None = None
    ) -> Success[None] | Failure:
        """Hand every line of a file's content to `handle`, as it arrives. A download cut
        short is retried from the start (`restart` is told first): `handle` must ignore
        lines it has seen."""

        async def attempt() -> Success[None] | Failure:
            if restart is not None:
                restart()
            url = f"{self.base}/files/{file_id}/content"
            try:
                async with self.session.get(
                    url, timeout=transfer_timeout(self.timeout), allow_redirects=False
                ) as response:
                    if response.status != 200:
                        body = await response.read()
                        return classify(response.status, response.headers, body, self.api_key)
                    pending = b""
                    async for chunk in response.content.iter_chunked(READ_CHUNK):
                        *complete, pending = (pending + chunk).split(b"\n")
                        for line in complete:
                            if line.strip():
                                await handle(line)
                    if pending.strip():
                        await handle(pending)
            except asyncio.TimeoutError:
                return Failure(f"Reading file {file_id} timed out", "timeout", retriable=True)
            except aiohttp.ClientError as exc:
                return Failure(
                    f"Reading file {file_id} failed: {exc or type(exc).__name__}",
                    "connection_error",
                    retriable=True,
                )
            return Success(None)

        return await self._retrying(attempt, "download")

    async def _retrying(
        self, attempt: Callable[[], Awaitable[Success[Any] | Failure]], call: str
    ) -> Success[Any] | Failure:
        def on_retry(details: RetryDetails) -> None:
            failure = details.failure
            log_event(
                logger,
                logging.WARNING,
                "rate_limit" if failure.status == 429 else "retry",
                call=call,
                retry=f"{details.retry_number}/{self.policy.max_retries}",
                reason=failure.error_type,
                status=failure.status,
                delay=f"{details.wait:.3f}s",
            )

        return await retrying(
            attempt, self.policy, on_retry=on_retry, sleep=self.wait, counts=Retried()
        )

    def _traced(self, span: Attempt | None, reply: Reply | Failure) -> Success[Json] | Failure:
        """`_json`, its attempt's span ended with what it said (`engine.telemetry`)."""
        outcome = self._json(reply)
        if span is not None:
            batch_id = outcome.value.get("id") if isinstance(outcome, Success) else None
            span.end(reply, outcome, batch_id if isinstance(batch_id, str) else None)
        return outcome

    def _json(self, reply: Reply | Failure) -> Success[Json] | Failure:
        if isinstance(reply, Failure):
            return reply
        if reply.status != 200:
            return classify(reply.status, reply.headers, reply.body, self.api_key)
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            return bad_body(reply.status, len(reply.body))
        if not isinstance(data, dict):
            return bad_body(reply.status, len(reply.body))
        return Success(data)


def _form_parts(boundary: str, name: str) -> tuple[bytes, bytes]:
    """The multipart form of an upload around the file's bytes: `purpose=batch`, then the
    file's part header; and the closing boundary."""
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="purpose"\r\n\r\n'
        "batch\r\n"
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/jsonl\r\n\r\n"
    )
    return head.encode(), f"\r\n--{boundary}--\r\n".encode()


async def _form_body(
    path: str | os.PathLike[str], head: bytes, tail: bytes
) -> AsyncIterator[bytes]:
    """An upload's body, the file read `READ_CHUNK` at a time on the loop's own thread (a
    spool just written is in the page cache): aiohttp's file payload reads it in the
    default executor's threads, and each thread's malloc arena kept megabytes of those
    reads (6 MiB of a 200,000-prompt run's peak)."""
    yield head
    with open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK):
            yield chunk
    yield tail
