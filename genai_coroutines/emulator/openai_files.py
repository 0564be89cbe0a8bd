"""The Files API, as far as the Batch API needs it: upload, list, metadata, content.

`POST /v1/files` (multipart: `file`, `purpose`, optional `expires_after[...]`) answers a
`FileObject`; `GET /v1/files` lists them as the real API's cursor page (`purpose`,
`limit` 1 to 10,000, default 10,000, `order` `desc` by default, `after` a file id:
`{"object": "list", "data", "first_id", "last_id", "has_more"}`); `GET /v1/files/{id}`
the same object; `GET /v1/files/{id}/content` the bytes.
Bearer auth and OpenAI's error envelope as on `/v1/responses`. The upload is read part by
part in `UPLOAD_CHUNK` pieces into one buffer, so a 20,000-line batch file (tens of MB)
costs one copy of itself, and the app's `client_max_size` does not apply to it.

Files live in memory until the emulator stops. A `purpose: "batch"` upload must be named
`*.jsonl` (the real API's 400 text); the Batch API's own limits (lines, size) are checked
when a batch validates the file, not here. Files the batches write have purpose
`batch_output`. Faults: `files_upload` for the POST, `files_stored` after an upload is
stored (its answer lost on the way back), `files_read` for the GETs. Uploads are counted
per digest of their bytes (`Stats.files_by_digest`).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import BodyPartReader, web

from .faults import maybe_fault
from .openai_validate import ApiError, invalid_value, missing

if TYPE_CHECKING:
    from .openai_host import ResponsesHost

UPLOAD_ENDPOINT = "files_upload"
STORED_ENDPOINT = "files_stored"
READ_ENDPOINT = "files_read"
LIST_LIMIT = (1, 10_000)
"""`limit` of `GET /v1/files`: the real API's bounds (and its default, the upper one)."""
UPLOAD_CHUNK = 2**20
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
"""Purposes an upload may name (`batch_output` and friends are the API's own)."""
BATCH_FILE_EXPIRY = 30 * 24 * 3600
"""Batch files expire 30 days after upload by default."""
NOT_JSONL = "Invalid file format for Batch API. Must be .jsonl"
ID_ALPHABET = string.ascii_letters + string.digits


def file_id() -> str:
    """`file-` and 22 letters and digits, as OpenAI's are."""
    return "file-" + "".join(secrets.choice(ID_ALPHABET) for _ in range(22))


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def object(self) -> dict[str, Any]:
        """The `FileObject` the API answers for it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "expires_at": self.created_at + BATCH_FILE_EXPIRY
            if self.purpose.startswith("batch")
            else None,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def no_such_file(identifier: str, param: str = "id") -> ApiError:
    return ApiError(404, f"No such File object: {identifier}", param=param)


class FilesEmulation:
    """The files one emulator holds: uploaded ones and the batches' output and error files."""

    def __init__(self, api: ResponsesHost) -> None:
        self.api = api
        self.files: dict[str, StoredFile] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/files", self.upload)
        app.router.add_get("/v1/files", self.list_files)
        app.router.add_get("/v1/files/{file_id}", self.retrieve)
        app.router.add_get("/v1/files/{file_id}/content", self.content)

    def add(self, filename: str, purpose: str, data: bytes) -> StoredFile:
        stored = StoredFile(file_id(), filename, purpose, data, int(time.time()))
        self.files[stored.id] = stored
        return stored

    def get(self, identifier: str, param: str = "id") -> StoredFile:
        stored = self.files.get(identifier)
        if stored is None:
            raise no_such_file(identifier, param)
        return stored

    async def upload(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            if not request.content_type.startswith("multipart/"):
                raise ApiError(
                    400,
                    "Invalid Content-Type header "
                    f"({request.content_type or 'none'}), expected multipart/form-data.",
                )
            data, filename, purpose = await self._read_form(request)
            if data is None:
                raise missing("file")
            if purpose is None:
                raise missing("purpose")
            if purpose not in PURPOSES:
                raise invalid_value("purpose", purpose, PURPOSES)
            if purpose == "batch" and not filename.endswith(".jsonl"):
                raise ApiError(400, NOT_JSONL)
            stored = self.add(filename, purpose, data)
            stats = self.api.shared.stats
            stats.files_uploaded += 1
            stats.files_by_digest[hashlib.sha256(data).hexdigest()] += 1
            lost = await maybe_fault(STORED_ENDPOINT, request, self.api.shared.faults, stats)
            if lost is not None:
                return lost
            return self.api.plain_json(200, stored.object(), started)

        return await self.api.guarded(UPLOAD_ENDPOINT, request, handler)

    @staticmethod
    async def _read_form(request: web.Request) -> tuple[bytes | None, str, str | None]:
        """The `file` part's bytes and name and the `purpose` field; other fields are ignored."""
        reader = await request.multipart()
        data: bytes | None = None
        filename = "upload"
        purpose: str | None = None
        while True:
            part = await reader.next()
            if part is None:
                break
            if not isinstance(part, BodyPartReader):
                continue  # a nested multipart: not a field the API reads
            if part.name == "file":
                buffer = bytearray()
                while chunk := await part.read_chunk(UPLOAD_CHUNK):
                    buffer.extend(chunk)
                data = bytes(buffer)
                filename = part.filename or filename
            elif part.name == "purpose":
                purpose = (await part.text()).strip()
            else:
                await part.release()
        return data, filename, purpose

    async def list_files(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            query = request.query
            raw = query.get("limit", str(LIST_LIMIT[1]))
            low, high = LIST_LIMIT
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ApiError(
                    400,
                    f"Invalid 'limit': expected an integer from {low} to {high}, but got "
                    f"'{raw}' instead.",
                    param="limit",
                    code="invalid_value",
                )
            order = query.get("order", "desc")
            if order not in ("asc", "desc"):
                raise invalid_value("order", order, ("asc", "desc"))
            purpose = query.get("purpose")
            chosen = [f for f in self.files.values() if purpose is None or f.purpose == purpose]
            if order == "desc":
                chosen.reverse()
            ids = [stored.id for stored in chosen]
            after = query.get("after")
            start = ids.index(after) + 1 if after in ids else 0
            page = chosen[start : start + int(raw)]
            return self.api.plain_json(
                200,
                {
                    "object": "list",
                    "data": [stored.object() for stored in page],
                    "first_id": page[0].id if page else None,
                    "last_id": page[-1].id if page else None,
                    "has_more": start + len(page) < len(chosen),
                },
                started,
            )

        return await self.api.guarded(READ_ENDPOINT, request, handler)

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            stored = self.get(request.match_info["file_id"])
            return self.api.plain_json(200, stored.object(), started)

        return await self.api.guarded(READ_ENDPOINT, request, handler)

    async def content(self, request: web.Request) -> web.StreamResponse:
        async def handler() -> web.StreamResponse:
            stored = self.get(request.match_info["file_id"])
            return web.Response(
                status=200, body=stored.data, content_type="application/octet-stream"
            )

        return await self.api.guarded(READ_ENDPOINT, request, handler)
