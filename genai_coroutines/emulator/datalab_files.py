"""Presigned uploads: Datalab's file API and the object storage its upload URLs point to.

    POST /api/v1/files/upload              {"filename", "content_type"}, with X-API-Key
         -> {"file_id": 7, "upload_url": ..., "reference": "datalab://file-7", "expires_in": 3600}
    PUT  /storage/datalab-uploads/{key}?X-Amz-...   the raw bytes; a presigned URL, no key
    GET  /api/v1/files/{file_id}/confirm   the object exists: the file is `completed`
    GET  /api/v1/files/{file_id}           its metadata (datalab-python-sdk `get_file_metadata`)

then `file_url=datalab://file-7` on `/marker`, `/convert`, `/extract` and `/segment` reads the
stored bytes instead of an upload. Shapes: api-reference/files/request-upload-url and
.../confirm-upload, the file-upload recipe, datalab-python-sdk's `_upload_single_file` (which
PUTs from a fresh session, without the key, and reads only `created` from the confirmation).

The storage is R2 upstream; this one lives on the emulator's own port under `/storage/`, and
answers as S3-compatible storage does: a PUT after the URL's `X-Amz-Expires` is a 403 with an
XML `AccessDenied` "Request has expired" body (what a client must answer by asking for a new
URL), a wrong signature a 403 `SignatureDoesNotMatch`. It never asks for the API key, and a PUT
that carries one anyway (`X-Api-Key` or `Authorization`) is counted in
`Stats.storage_key_leaks`. Choices where the docs say nothing: a reference to a file not yet
confirmed is refused 400, an unknown one 404; stored files never expire.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from aiohttp import web
from yarl import URL

from . import datalab_form
from .datalab_form import reply
from .faults import maybe_fault
from .state import digest

if TYPE_CHECKING:
    from .shared import Shared

FILES = "datalab_files"
STORAGE = "storage_put"
"""Fault endpoints: the file API (`/api/v1/files/...`) and the storage PUT."""

BUCKET = "datalab-uploads"
LEAKED_HEADERS = ("X-Api-Key", "Authorization")
"""Headers that must never reach the storage host (aiohttp matches them in any case)."""


@dataclass(slots=True)
class StoredFile:
    """A file the API knows: pending until its bytes are PUT and the upload confirmed."""

    file_id: int
    filename: str
    content_type: str
    key: str
    """The object key in the bucket, which the upload URL signs."""
    issued_at: float
    """When its upload URL was issued (loop time); it expires `datalab_upload_url_ttl` later."""
    created: str
    data: bytes | None = None
    status: str = "pending"

    @property
    def reference(self) -> str:
        return f"{datalab_form.REFERENCE_SCHEME}://file-{self.file_id}"

    def metadata(self) -> dict[str, object]:
        return {
            "file_id": self.file_id,
            "original_filename": self.filename,
            "content_type": self.content_type,
            "reference": self.reference,
            "upload_status": self.status,
            "file_size": None if self.data is None else len(self.data),
            "created": self.created,
        }


class DatalabFiles:
    """The stored files of one emulator, and the handlers of the file API and the storage."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.files: dict[int, StoredFile] = {}
        self._by_key: dict[str, StoredFile] = {}
        self._secret = secrets.token_bytes(16)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/files/upload", self.request_upload)
        app.router.add_get(r"/api/v1/files/{file_id:\d+}/confirm", self.confirm)
        app.router.add_get(r"/api/v1/files/{file_id:\d+}", self.metadata)
        app.router.add_put(f"/storage/{BUCKET}/{{key}}", self.put)

    def resolve(self, reference: str) -> datalab_form.ReceivedUpload:
        """The stored upload a `datalab://file-N` names; `FormError` as the API would refuse it."""
        number = reference.removeprefix(f"{datalab_form.REFERENCE_SCHEME}://file-")
        stored = self.files.get(int(number)) if number.isdigit() else None
        if stored is None:
            raise datalab_form.FormError(404, f"File {reference} not found.")
        if stored.status != "completed" or stored.data is None:
            raise datalab_form.FormError(
                400,
                f"File {reference} is not ready (upload_status: {stored.status}). "
                "Upload it to its upload_url, then confirm the upload.",
            )
        if not stored.data:
            raise datalab_form.FormError(400, "The uploaded file is empty.")
        return datalab_form.ReceivedUpload(
            data=stored.data,
            file_url=reference,
            filename=stored.filename,
            content_type=stored.content_type,
        )

    # -- the file API (with the key) ------------------------------------------------------

    async def request_upload(self, request: web.Request) -> web.StreamResponse:
        faulted = await maybe_fault(FILES, request, self.shared.faults, self.shared.stats)
        if faulted is not None:
            return faulted
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return reply(400, {"detail": "The request body must be JSON."})
        if not isinstance(body, dict) or not isinstance(body.get("filename"), str):
            missing = {"type": "missing", "loc": ["body", "filename"], "msg": "Field required"}
            return reply(422, {"detail": [{**missing, "input": body}]})
        content_type = body.get("content_type") or "application/octet-stream"
        number = len(self.files) + 1
        stored = StoredFile(
            file_id=number,
            filename=body["filename"],
            content_type=str(content_type),
            key=f"{secrets.token_hex(12)}-{number}",
            issued_at=asyncio.get_running_loop().time(),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.files[number] = stored
        self._by_key[stored.key] = stored
        ttl = self.shared.config.datalab_upload_url_ttl
        answer = {
            "file_id": number,
            "upload_url": self._upload_url(request, stored, ttl),
            "reference": stored.reference,
            "expires_in": math.ceil(ttl),
        }
        self.shared.stats.log("files", f"upload url {stored.reference}")
        return reply(200, answer)

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        faulted = await maybe_fault(FILES, request, self.shared.faults, self.shared.stats)
        if faulted is not None:
            return faulted
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused
        stored = self.files.get(int(request.match_info["file_id"]))
        if stored is None:
            return reply(404, {"detail": "File not found."})
        if stored.data is None:
            detail = "File not found in storage. PUT it to its upload_url before confirming."
            return reply(400, {"detail": detail})
        stored.status = "completed"
        self.shared.stats.log("files", f"confirmed {stored.reference}")
        return reply(200, {"success": True, **stored.metadata(), "message": "Upload confirmed."})

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused
        stored = self.files.get(int(request.match_info["file_id"]))
        if stored is None:
            return reply(404, {"detail": "File not found."})
        return reply(200, stored.metadata())

    # -- the storage (no key) -------------------------------------------------------------

    async def put(self, request: web.Request) -> web.StreamResponse:
        stats = self.shared.stats
        if any(name in request.headers for name in LEAKED_HEADERS):
            stats.storage_key_leaks += 1
        faulted = await maybe_fault(STORAGE, request, self.shared.faults, stats)
        if faulted is not None:
            return faulted
        stored = self._by_key.get(request.match_info["key"])
        signature = request.query.get("X-Amz-Signature", "")
        if stored is None or not hmac.compare_digest(signature, self._sign(stored)):
            stats.count(STORAGE, 403)
            return _s3_error(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided. Check your secret access key and signing method.",
            )
        now = asyncio.get_running_loop().time()
        if now > stored.issued_at + self.shared.config.datalab_upload_url_ttl:
            stats.count(STORAGE, 403)
            stats.log("storage", f"expired {stored.reference}")
            return _s3_error("AccessDenied", "Request has expired")
        data = await request.read()
        stored.data = data
        stats.count(STORAGE, 200)
        stats.storage_puts_by_digest[digest(data)] += 1
        stats.storage_bytes += len(data)
        stats.log("storage", f"put {stored.reference} {len(data)} bytes")
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def _sign(self, stored: StoredFile) -> str:
        return hmac.new(self._secret, stored.key.encode(), hashlib.sha256).hexdigest()

    def _upload_url(self, request: web.Request, stored: StoredFile, ttl: float) -> str:
        """A URL shaped like an R2 presigned PUT (SigV4 query parameters) on this server."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        query = {
            "X-Amz-Algorithm": "AWS4-HMAC-SHA256",
            "X-Amz-Credential": f"emulator/{stamp[:8]}/auto/s3/aws4_request",
            "X-Amz-Date": stamp,
            "X-Amz-Expires": str(math.ceil(ttl)),
            "X-Amz-SignedHeaders": "host",
            "X-Amz-Signature": self._sign(stored),
        }
        base = URL(f"{request.scheme}://{request.host}")
        return str(base.with_path(f"/storage/{BUCKET}/{stored.key}") % query)


def _s3_error(code: str, message: str) -> web.Response:
    """The XML error body S3-compatible storage (R2) answers with."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    )
    return web.Response(status=403, text=body, content_type="application/xml")
