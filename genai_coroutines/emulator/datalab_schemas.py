"""Saved extraction schemas: `POST /api/v1/extraction_schemas`, `GET .../{schema_id}`, and
the `schema_id` (+ `schema_version`) an `/extract` names instead of a `page_schema`.

Shapes: datalab-python-sdk's `create_extraction_schema`, `get_extraction_schema` and
`ExtractionSchema`; an unknown id or version is a 404.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from . import datalab_form
from .datalab_form import reply

if TYPE_CHECKING:
    from .shared import Shared


@dataclass(slots=True)
class SavedSchema:
    """An extraction schema saved with `POST /api/v1/extraction_schemas`; versions from 1."""

    schema_id: str
    name: str
    description: str | None
    versions: list[dict[str, Any]] = field(default_factory=list)
    created: str = ""

    def body(self, number: int) -> dict[str, Any]:
        return {
            "id": number,
            "schema_id": self.schema_id,
            "name": self.name,
            "description": self.description,
            "schema_json": self.versions[-1],
            "version": len(self.versions),
            "version_history": [],
            "archived": False,
            "created": self.created,
            "updated": self.created,
        }


class SavedSchemas:
    """The schemas saved on one emulator, and their two routes."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.schemas: dict[str, SavedSchema] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/v1/extraction_schemas", self.create_schema)
        app.router.add_get("/api/v1/extraction_schemas/{schema_id}", self.get_schema)

    def save(self, schema_json: Any, name: str = "schema", description: str | None = None) -> str:
        """Save an extraction schema as `POST /api/v1/extraction_schemas` does; its id."""
        datalab_form.check_schema_json("schema_json", schema_json)
        saved = SavedSchema(
            schema_id=f"sch_{secrets.token_hex(6)}",
            name=name,
            description=description,
            versions=[schema_json],
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        self.schemas[saved.schema_id] = saved
        return saved.schema_id

    def resolve(self, options: datalab_form.Options) -> datalab_form.Options:
        """`options` with a `schema_id` replaced by the saved schema it names."""
        if options.schema_id is None:
            return options
        saved = self.schemas.get(options.schema_id)
        version = options.schema_version or (len(saved.versions) if saved else 0)
        if saved is None or not 1 <= version <= len(saved.versions):
            detail = f"Extraction schema {options.schema_id!r}"
            if options.schema_version is not None:
                detail += f" version {options.schema_version}"
            raise datalab_form.FormError(404, f"{detail} not found.")
        return dataclasses.replace(options, page_schema=saved.versions[version - 1])

    async def create_schema(self, request: web.Request) -> web.Response:
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return reply(400, {"detail": "The request body must be JSON."})
        if not isinstance(body, dict) or not isinstance(body.get("name"), str):
            return reply(400, {"detail": "name (a string) and schema_json are required."})
        try:
            schema_id = self.save(body.get("schema_json"), body["name"], body.get("description"))
        except datalab_form.FormError as error:
            return reply(error.status, {"detail": error.detail})
        return reply(200, self.schemas[schema_id].body(len(self.schemas)))

    async def get_schema(self, request: web.Request) -> web.Response:
        refused = datalab_form.unauthorized(request, self.shared.config.datalab_api_key)
        if refused is not None:
            return refused
        schema_id = request.match_info["schema_id"]
        saved = self.schemas.get(schema_id)
        if saved is None:
            return reply(404, {"detail": f"Extraction schema {schema_id!r} not found."})
        return reply(200, saved.body(list(self.schemas).index(schema_id) + 1))
