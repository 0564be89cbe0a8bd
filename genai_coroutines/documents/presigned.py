"""Presigned uploads: a large file travels once, then is named by its `datalab://` reference.

    POST {api}/files/upload {"filename", "content_type"}  (with the key)
         -> {"file_id", "upload_url", "reference": "datalab://file-N", "expires_in"}
    PUT  upload_url  the bytes, from a session without the key: the URL is signed for the
         storage (R2 upstream), another host, which must never see the key
    GET  {api}/files/{file_id}/confirm  (with the key): the file is usable

then each submission of the document sends `file_url=<reference>` instead of the bytes
(api-reference/files/request-upload-url and .../confirm-upload; datalab-python-sdk's
`_upload_single_file`, which PUTs from a fresh session and names no size from which to
use it). A `StoredFile` keeps how far it got, so a failed step is retried from where it
stopped (a URL granted is PUT to, a PUT done is confirmed), and a reference, once confirmed,
serves every later submission of the document: a retried submission never sends the bytes
again. It is journaled as the item's `UPLOAD_STAGE`, so a resumed batch reuses it too.

Storage answering the PUT 403 (S3 and R2 say "Request has expired" once the URL's
`expires_in` has passed, e.g. after a long wait for a retry) asks for a new URL, at most
`FRESH_URLS` times; any other failure is the round's, retried as an upload is.

Whether `/convert`, `/extract` and `/segment` take a reference is not stated by Datalab's
API reference (its `file_url` "Optional file URL (http/https)"; third-party clients send
one). An endpoint answering a reference 400 or 422 about `file_url` is sent multipart from
then on, for the rest of the batch (`References.refused`), with one WARNING; a journaled
reference the API no longer knows is stored afresh, once (`StoredFile.forget`).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import orjson

from ..engine import Failure, ItemRun, Reply, log_event, send
from ..engine.journal import request_digest
from ..engine.stages import StageKey
from .errors import json_reply
from .sources import Upload

logger = logging.getLogger("genai_coroutines.ocr")

UPLOAD_STAGE = "upload"
"""The journal stage holding an item's confirmed reference."""

FRESH_URLS = 2
"""New upload URLs asked for after storage refused one (expired), per document and round."""

_S3_CODE = re.compile(rb"<Code>([^<]{1,100})</Code>")


def files_url(api_url: str) -> str:
    """Datalab's file API beside the endpoint: `.../api/v1/convert` -> `.../api/v1/files`."""
    return urljoin(api_url, "files")


@dataclass
class References:
    """A batch's use of references: from which size, where the file API is, and which
    endpoints refused one (sent multipart since)."""

    min_bytes: int | None
    files: str
    refused: set[str] = field(default_factory=set)

    def wanted(self, upload: Upload, url: str) -> bool:
        """Whether this document goes to `url` by reference: bytes of at least `min_bytes`,
        to an endpoint that has not refused references."""
        data, least = upload.data, self.min_bytes
        return (
            least is not None
            and data is not None
            and len(data) >= least
            and url not in self.refused
        )

    def refuses(self, url: str, failure: Failure) -> bool:
        """Whether `failure`, the answer to a submission by reference, says the endpoint takes
        no reference (a 400 or 422 about `file_url`); if so, `url` is sent multipart from
        now on, said once in the log."""
        if failure.status not in (400, 422) or "file_url" not in failure.message.lower():
            return False
        if url not in self.refused:
            self.refused.add(url)
            log_event(
                logger,
                logging.WARNING,
                "references_refused",
                endpoint=url,
                then="multipart",
                error=failure.message,
            )
        return True


class StoredFile:
    """One document's trip to Datalab's storage (see the module docstring)."""

    def __init__(
        self, references: References, upload: Upload, run: ItemRun, *, timeout: float, api_key: str
    ) -> None:
        self.references = references
        self.upload = upload
        self.run = run
        self.timeout = timeout
        self.api_key = api_key
        self.file_id: Any = None
        self.upload_url: str | None = None
        self.granted: str | None = None
        """The reference the upload URL was granted with (the confirmation may repeat it)."""
        self.put_done = False
        self.reference: str | None = None
        self.resumed = False
        """The reference came from the journal (an earlier run stored it)."""
        self.forgotten = False
        """A journaled reference was lost upstream: the journal is not asked again."""
        self._digest: str | None = None

    async def reference_of(self, session: aiohttp.ClientSession) -> str | Failure:
        """The document's confirmed reference: journaled, known, or stored now."""
        if self.reference is None and not self.forgotten and self.run.batch.journal is not None:
            journaled = self.run.batch.journal.stage_result(
                StageKey(self.run.index, UPLOAD_STAGE), await self._content_digest()
            )
            reference = None if journaled is None else journaled.get("reference")
            if isinstance(reference, str) and reference:
                self.reference, self.resumed = reference, True
        fresh = 0
        while self.reference is None:
            if self.upload_url is None:
                granted = await self._grant(session)
                if granted is not None:
                    return granted
            if not self.put_done:
                put = await self._put(session)
                if put is not None:
                    if put.status != 403 or fresh >= FRESH_URLS:
                        return put
                    fresh += 1
                    self.upload_url = None  # expired: ask for another
                    log_event(
                        logger,
                        logging.WARNING,
                        "upload_url_refused",
                        index=self.run.index,
                        error=put.message,
                        fresh=f"{fresh}/{FRESH_URLS}",
                    )
                    continue
            confirmed = await self._confirm(session)
            if confirmed is not None:
                return confirmed
        return self.reference

    def forget(self, failure: Failure) -> bool:
        """Whether `failure` says the API no longer knows a journaled reference (a 400 or
        404 naming it); if so, the document is stored afresh at its next submission, once."""
        reference = self.reference
        if not self.resumed or reference is None or failure.status not in (400, 404):
            return False
        if reference not in failure.message:
            return False
        self.resumed, self.reference, self.forgotten = False, None, True
        self.file_id, self.upload_url, self.put_done = None, None, False
        return True

    async def _grant(self, session: aiohttp.ClientSession) -> Failure | None:
        upload = self.upload
        body = {"filename": upload.filename, "content_type": upload.content_type}
        reply = await send(
            session,
            "POST",
            f"{self.references.files}/upload",
            timeout=self.timeout,
            data=orjson.dumps(body),
            headers={"Content-Type": "application/json"},
        )
        answer = self._json(reply, "upload URL")
        if isinstance(answer, Failure):
            return answer
        upload_url, reference = answer.get("upload_url"), answer.get("reference")
        file_id = answer.get("file_id")
        if not (_is_http(upload_url) and isinstance(reference, str) and reference and file_id):
            return Failure(
                "Datalab's upload URL answer lacks file_id, an http(s) upload_url or reference",
                "invalid_response",
                retriable=True,
            )
        assert isinstance(upload_url, str)
        self.file_id, self.upload_url, self.granted = file_id, upload_url, reference
        return None

    async def _put(self, session: aiohttp.ClientSession) -> Failure | None:
        """PUT the bytes to the presigned URL from a session without the batch's headers
        (on the same connection pool): the key never reaches the storage host."""
        assert self.upload_url is not None and self.upload.data is not None
        async with aiohttp.ClientSession(
            connector=session.connector, connector_owner=False
        ) as storage:
            reply = await send(
                storage,
                "PUT",
                self.upload_url,
                timeout=self.timeout,
                data=self.upload.data,
                headers={"Content-Type": self.upload.content_type or "application/octet-stream"},
            )
        if isinstance(reply, Failure):
            return reply
        if 200 <= reply.status < 300:
            self.put_done = True
            log_event(
                logger,
                logging.DEBUG,
                "stored",
                index=self.run.index,
                bytes=len(self.upload.data),
                host=urlsplit(self.upload_url).hostname,
            )
            return None
        code = _S3_CODE.search(reply.body)
        said = code.group(1).decode("utf-8", "replace") if code else f"HTTP {reply.status}"
        return Failure(
            f"Datalab's storage refused the upload [{reply.status}]: {said}",
            "server_error" if reply.status >= 500 else "api_error",
            retriable=reply.status >= 500 or reply.status in (408, 429),
            status=reply.status,
        )

    async def _confirm(self, session: aiohttp.ClientSession) -> Failure | None:
        url = f"{self.references.files}/{self.file_id}/confirm"
        answer = self._json(await send(session, "GET", url, timeout=self.timeout), "confirmation")
        if isinstance(answer, Failure):
            return answer
        reference = answer.get("reference")
        self.reference = reference if isinstance(reference, str) and reference else self.granted
        digest, stored = await self._content_digest(), {"reference": self.reference}
        index = self.run.index
        self.run.batch.journaled(
            lambda j: j.record_stage(StageKey(index, UPLOAD_STAGE), digest, stored)
        )
        return None

    def _json(self, reply: Reply | Failure, what: str) -> dict[str, Any] | Failure:
        """A 2xx answer's JSON object, or the failure (a 403 about credits ends the batch)."""
        body = json_reply(reply, what, self.api_key)
        if isinstance(body, Failure):
            self.run.batch.stop.record(body)
        return body

    async def _content_digest(self) -> str:
        """The journal's name for the document's bytes (whatever the batch's settings: the
        stored file serves any of them), digested once, off the event loop."""
        if self._digest is None:
            data = self.upload.data or b""
            self._digest = await asyncio.to_thread(request_digest, data)
        return self._digest


def _is_http(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
