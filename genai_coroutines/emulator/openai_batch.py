"""The Batch API: `POST /v1/batches`, `GET /v1/batches[/{id}]`, `POST /v1/batches/{id}/cancel`.

A batch names an uploaded `purpose: "batch"` file (`openai_files`) of JSONL request lines
`{"custom_id", "method": "POST", "url": "/v1/responses", "body": {...}}` and goes, over
compressible time, through the real states:

    validating --(batch_validating_seconds)--> in_progress --(batch_seconds_per_line each)-->
    finalizing --(batch_finalizing_seconds)--> completed

or `failed` (the file does not validate, or the enqueued-token limit is reached), `expired`
(after `batch_expire_after_lines` lines ran), `cancelling` -> `cancelled` (a cancel, then
`batch_cancelling_seconds`). Each line's `body` is answered by the code that answers `POST
/v1/responses` (`OpenAIEmulation.check` then `produce`): a body that would get a 400 there
gets that status and error body in the error file. At `batch_line_failure_rate` (seeded) a
line fails with a 500 `server_error` instead. Lines cost nothing from the `/v1/responses`
buckets (the Batch API's pool is separate); each run counts in
`Stats.batch_executions_by_custom_id`, so a test can prove nothing ran twice.

Output lines, in input order (the real API does not promise one; join on `custom_id`):
`{"id": "batch_req_...", "custom_id", "response": {"status_code", "request_id", "body"},
"error": null}`; an expired line is `{"response": null, "error": {"code":
"batch_expired", ...}}` in the error file. `output_file_id` / `error_file_id` stay null when
no line went there. `request_counts.failed` counts failed and expired lines.

Choices where the real API is not observable from outside (codes and wording of the
validation errors are the emulator's own unless noted):

- Validation reports every bad line (up to `MAX_REPORTED_ERRORS`) in `errors.data` with
  its 1-based `line`: not a JSON object (`invalid_json_line`), no `custom_id`
  (`missing_required_parameter`), a duplicate `custom_id` (`duplicate_custom_id`), a method
  other than POST or a `url` other than the batch's endpoint (`invalid_value` / `invalid_url`),
  a `body` that is not an object or has no `model`, models that differ between lines
  (`mismatched_model`); a file of more than `batch_max_requests` lines
  (`request_limit_exceeded`), above `batch_max_bytes` (`file_too_large`) or empty
  (`empty_file`).
- The enqueued-token limit (`batch_enqueued_token_limit`) is per model, as the real one;
  a batch's tokens are its lines' estimated input tokens, enqueued from validation until it
  ends. The error is the real one: `token_limit_exceeded`, "Enqueued token limit reached ...".
- Only `/v1/responses` batches run; creating one for another endpoint of the SDK's list is a
  400. A cancel of a batch that is finalizing or has ended is a 409; of one cancelling or
  cancelled it answers the batch again. Cancelled batches keep the lines that ran (output
  and error files); lines that never ran appear in neither.
- Faults: `batches_create`, `batches_poll` (retrieve and list), `batches_cancel`, and
  `batch_lines` (`fault_kinds.LINE_FAULTS`), which spoils the output of a line that ran:
  copies under odd custom_ids, the line cut in half, a 200 whose body is no response, or
  no line at all.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from .fault_kinds import LINE_ENDPOINT
from .openai_output import input_tokens
from .openai_validate import JSON_BODY_ERROR, ApiError, invalid_type, invalid_value, missing

if TYPE_CHECKING:
    from .openai_files import FilesEmulation
    from .openai_host import ResponsesHost

CREATE_ENDPOINT = "batches_create"
POLL_ENDPOINT = "batches_poll"
CANCEL_ENDPOINT = "batches_cancel"
BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
"""`BatchCreateParams.endpoint` in openai-python."""
RUNNABLE_ENDPOINT = "/v1/responses"
COMPLETION_WINDOWS = ("24h",)
WINDOW_SECONDS = 24 * 3600
CREATE_FIELDS = frozenset(
    {"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"}
)
METADATA_LIMIT = 16
MAX_REPORTED_ERRORS = 100
YIELD_EVERY = 100
"""Lines run between yields to the event loop when lines take no time."""
LIST_LIMIT = (1, 100)
CANCELLABLE = ("validating", "in_progress")
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
SERVER_ERROR: dict[str, Any] = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": "server_error",
    }
}
EXPIRED: dict[str, Any] = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}

NOT_A_RESPONSE = "<html><body><h1>502 Bad Gateway</h1></body></html>"
"""The body of a `line-body-not-json` line: what a proxy might have put in its place."""
ODD_ID_PREFIXES = ("\u00b2", "9" * 5000)
"""Put before a line's custom_id by `line-odd-ids`: a digit `int()` refuses, and more
digits than Python's `int()` takes."""


def _spoiled(raw: bytes, fault: str | None) -> list[bytes]:
    """What is written of an output line `raw` under a `batch_lines` fault (see
    `fault_kinds.LINE_FAULTS`; `line-body-not-json` is applied before the line is made)."""
    if fault == "line-missing":
        return []
    if fault == "line-not-json":
        return [raw[: len(raw) // 2]]
    if fault == "line-odd-ids":
        line = orjson.loads(raw)
        return [raw] + [
            orjson.dumps({**line, "custom_id": prefix + line["custom_id"]})
            for prefix in ODD_ID_PREFIXES
        ]
    return [raw]


@dataclass
class Line:
    number: int
    """1-based line number in the input file."""
    custom_id: str
    body: dict[str, Any]


def _zero_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }


@dataclass
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: str = "validating"
    times: dict[str, int | None] = field(default_factory=lambda: dict.fromkeys(TIMESTAMPS))
    counts: dict[str, int] = field(
        default_factory=lambda: {"total": 0, "completed": 0, "failed": 0}
    )
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[dict[str, Any]] | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=_zero_usage)
    enqueued_tokens: int = 0
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def enter(self, status: str) -> None:
        """Move to `status`, stamping its `<status>_at` time."""
        self.status = status
        stamp = f"{status}_at"
        if stamp in self.times:
            self.times[stamp] = int(time.time())

    def object(self) -> dict[str, Any]:
        """The `Batch` the API answers for it."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + WINDOW_SECONDS,
            **self.times,
            "request_counts": dict(self.counts),
            "usage": self.usage,
            "metadata": self.metadata,
        }


def line_error(
    code: str, message: str, line: int | None, param: str | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def parse_lines(data: bytes, endpoint: str) -> tuple[list[Line], list[dict[str, Any]]]:
    """The request lines of a batch input file, and what is wrong with them (see module doc)."""
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    model: str | None = None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        if not raw.strip():
            continue
        problem = _line_problem(raw, number, endpoint, seen)
        if isinstance(problem, dict):
            errors.append(problem)
            continue
        seen.add(problem.custom_id)
        model = model or problem.body["model"]
        if problem.body["model"] != model:
            errors.append(
                line_error(
                    "mismatched_model",
                    f"All requests in a batch must use the same model; this one uses "
                    f"'{problem.body['model']}' where earlier ones use '{model}'.",
                    number,
                    "body.model",
                )
            )
            continue
        lines.append(problem)
    return lines, errors


def _line_problem(raw: bytes, number: int, endpoint: str, seen: set[str]) -> Line | dict[str, Any]:
    """The line, or the error that stops it."""
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError:
        item = None
    if not isinstance(item, dict):
        return line_error("invalid_json_line", "This line is not parseable as valid JSON.", number)
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return line_error(
            "missing_required_parameter",
            "Missing required parameter: 'custom_id'.",
            number,
            "custom_id",
        )
    if custom_id in seen:
        return line_error(
            "duplicate_custom_id",
            f"The custom_id '{custom_id}' is used by more than one request; custom_id must be "
            "unique for each request in a batch.",
            number,
            "custom_id",
        )
    if item.get("method") != "POST":
        return line_error(
            "invalid_value",
            "Only the POST method is supported for batch requests.",
            number,
            "method",
        )
    if item.get("url") != endpoint:
        return line_error(
            "invalid_url",
            f"The URL '{item.get('url')}' of this request does not match the batch's endpoint "
            f"'{endpoint}'.",
            number,
            "url",
        )
    body = item.get("body")
    if not isinstance(body, dict):
        return line_error(
            "invalid_type", "The 'body' of a batch request must be an object.", number, "body"
        )
    if not isinstance(body.get("model"), str):
        return line_error(
            "missing_required_parameter",
            "Missing required parameter: 'body.model'.",
            number,
            "body.model",
        )
    return Line(number, custom_id, body)


class BatchEmulation:
    """The batches of one emulator and the tasks that run them."""

    def __init__(self, api: ResponsesHost, files: FilesEmulation) -> None:
        self.api = api
        self.files = files
        self.batches: dict[str, Batch] = {}
        self._rng = random.Random(f"batch-{api.shared.config.seed}")

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/batches", self.create)
        app.router.add_get("/v1/batches", self.list_batches)
        app.router.add_get("/v1/batches/{batch_id}", self.retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self.cancel)

    async def close(self) -> None:
        tasks = [batch.task for batch in self.batches.values() if batch.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _get(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
        return batch

    # -- endpoints --------------------------------------------------------------------------

    async def create(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            try:
                body: Any = orjson.loads(await request.read())
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict):
                raise ApiError(400, JSON_BODY_ERROR)
            batch = self._new_batch(body)
            self.batches[batch.id] = batch
            self.api.shared.stats.batches_created += 1
            batch.task = asyncio.get_running_loop().create_task(self._run(batch))
            return self.api.plain_json(200, batch.object(), started)

        return await self.api.guarded(CREATE_ENDPOINT, request, handler)

    def _new_batch(self, body: dict[str, Any]) -> Batch:
        """The batch a create body asks for, or the 400/404 it gets."""
        for name in body:
            if name not in CREATE_FIELDS:
                raise ApiError(
                    400, f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter"
                )
        for name in ("input_file_id", "endpoint", "completion_window"):
            if body.get(name) is None:
                raise missing(name)
            if not isinstance(body[name], str):
                raise invalid_type(name, "a string", body[name])
        endpoint, window = body["endpoint"], body["completion_window"]
        if endpoint not in BATCH_ENDPOINTS:
            raise invalid_value("endpoint", endpoint, BATCH_ENDPOINTS)
        if endpoint != RUNNABLE_ENDPOINT:
            raise ApiError(
                400,
                f"The emulator runs batches for '{RUNNABLE_ENDPOINT}' only, not '{endpoint}'.",
                param="endpoint",
                code="unsupported_value",
            )
        if window not in COMPLETION_WINDOWS:
            raise invalid_value("completion_window", window, COMPLETION_WINDOWS)
        metadata = body.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise invalid_type("metadata", "an object", metadata)
        if metadata is not None and len(metadata) > METADATA_LIMIT:
            raise ApiError(
                400,
                f"Invalid 'metadata': too many properties. Expected an object with at most "
                f"{METADATA_LIMIT} properties, but got an object with {len(metadata)} "
                "properties instead.",
                param="metadata",
                code="object_above_max_properties",
            )
        stored = self.files.get(body["input_file_id"], "input_file_id")
        if stored.purpose != "batch":
            raise ApiError(
                400,
                f"The input file {stored.id} has purpose '{stored.purpose}'; batch input files "
                "must be uploaded with purpose 'batch'.",
                param="input_file_id",
            )
        return Batch(
            id=f"batch_{secrets.token_hex(16)}",
            input_file_id=stored.id,
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
        )

    async def retrieve(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            batch = self._get(request.match_info["batch_id"])
            return self.api.plain_json(200, batch.object(), started)

        return await self.api.guarded(POLL_ENDPOINT, request, handler)

    async def list_batches(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            raw = request.query.get("limit", "20")
            low, high = LIST_LIMIT
            if not raw.isdigit() or not low <= int(raw) <= high:
                raise ApiError(
                    400,
                    f"Invalid 'limit': expected an integer from {low} to {high}, but got "
                    f"'{raw}' instead.",
                    param="limit",
                    code="invalid_value",
                )
            newest_first = list(reversed(self.batches.values()))
            after = request.query.get("after")
            ids = [batch.id for batch in newest_first]
            start = ids.index(after) + 1 if after in ids else 0
            page = newest_first[start : start + int(raw)]
            return self.api.plain_json(
                200,
                {
                    "object": "list",
                    "data": [batch.object() for batch in page],
                    "first_id": page[0].id if page else None,
                    "last_id": page[-1].id if page else None,
                    "has_more": start + len(page) < len(newest_first),
                },
                started,
            )

        return await self.api.guarded(POLL_ENDPOINT, request, handler)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()

        async def handler() -> web.StreamResponse:
            batch = self._get(request.match_info["batch_id"])
            if batch.status in CANCELLABLE:
                batch.enter("cancelling")
                batch.cancel_requested.set()
            elif batch.status not in ("cancelling", "cancelled"):
                raise ApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            return self.api.plain_json(200, batch.object(), started)

        return await self.api.guarded(CANCEL_ENDPOINT, request, handler)

    # -- the run ----------------------------------------------------------------------------

    async def _pause(self, batch: Batch, seconds: float) -> None:
        """Sleep `seconds`, or less if the batch is cancelled meanwhile."""
        if seconds <= 0:
            return
        try:
            await asyncio.wait_for(batch.cancel_requested.wait(), seconds)
        except asyncio.TimeoutError:  # the builtin TimeoutError only from 3.11
            pass

    async def _run(self, batch: Batch) -> None:
        config = self.api.shared.config
        try:
            await self._pause(batch, config.batch_validating_seconds)
            if batch.cancel_requested.is_set():
                await self._end_cancelled(batch, [], [])
                return
            lines = self._validate(batch)
            if lines is None:
                return
            batch.enter("in_progress")
            batch.counts["total"] = len(lines)
            outputs: list[bytes] = []
            failures: list[bytes] = []
            executed = await self._execute_lines(batch, lines, outputs, failures)
            if batch.cancel_requested.is_set():
                await self._end_cancelled(batch, outputs, failures)
            elif executed < len(lines):
                for line in lines[executed:]:
                    failures.append(self._output_line(line, None, None, EXPIRED))
                batch.counts["failed"] += len(lines) - executed
                self._write_files(batch, outputs, failures)
                batch.enter("expired")
            else:
                batch.enter("finalizing")
                await asyncio.sleep(config.batch_finalizing_seconds)
                self._write_files(batch, outputs, failures)
                batch.enter("completed")
        finally:
            batch.enqueued_tokens = 0
            batch.task = None

    def _validate(self, batch: Batch) -> list[Line] | None:
        """The batch's lines once its file validates and its tokens fit the enqueued limit;
        else None, with the batch `failed`."""
        config = self.api.shared.config
        data = self.files.files[batch.input_file_id].data
        errors: list[dict[str, Any]] = []
        lines: list[Line] = []
        if len(data) > config.batch_max_bytes:
            errors.append(
                line_error(
                    "file_too_large",
                    f"The batch input file is larger than the {config.batch_max_bytes:,} byte "
                    "limit.",
                    None,
                )
            )
        else:
            lines, errors = parse_lines(data, batch.endpoint)
            if not errors and not lines:
                errors.append(line_error("empty_file", "The batch input file is empty.", None))
            elif not errors and len(lines) > config.batch_max_requests:
                errors.append(
                    line_error(
                        "request_limit_exceeded",
                        f"The batch input file holds {len(lines):,} requests; the limit is "
                        f"{config.batch_max_requests:,}.",
                        None,
                    )
                )
        if not errors:
            batch.model = lines[0].body["model"]
            tokens = sum(input_tokens(line.body) for line in lines)
            errors = self._enqueue(batch, tokens)
        if errors:
            batch.errors = errors
            batch.enter("failed")
            return None
        return lines

    def _enqueue(self, batch: Batch, tokens: int) -> list[dict[str, Any]]:
        """Enqueue the batch's tokens, or the `token_limit_exceeded` error when they do not fit."""
        limit = self.api.shared.config.batch_enqueued_token_limit
        enqueued = sum(
            other.enqueued_tokens for other in self.batches.values() if other.model == batch.model
        )
        if limit is not None and enqueued + tokens > limit:
            return [
                line_error(
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {batch.model} in organization "
                    f"org-emulator. Limit: {limit:,} enqueued tokens. Please try again once "
                    "some in_progress batches have been completed.",
                    None,
                )
            ]
        batch.enqueued_tokens = tokens
        return []

    async def _execute_lines(
        self, batch: Batch, lines: list[Line], outputs: list[bytes], failures: list[bytes]
    ) -> int:
        """Run lines until done, cancelled or expired; returns how many ran."""
        config = self.api.shared.config
        started = time.monotonic()
        executed = 0
        for line in lines:
            limit = config.batch_expire_after_lines
            if batch.cancel_requested.is_set() or (limit is not None and executed >= limit):
                break
            per_line = config.batch_seconds_per_line
            if per_line > 0:
                await self._pause(batch, started + (executed + 1) * per_line - time.monotonic())
                if batch.cancel_requested.is_set():
                    break
            elif executed % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            self._execute(batch, line, outputs, failures)
            executed += 1
        return executed

    def _execute(
        self, batch: Batch, line: Line, outputs: list[bytes], failures: list[bytes]
    ) -> None:
        """Answer one line as `POST /v1/responses` would (with no rate limit), or fail it;
        a `batch_lines` fault then spoils what is written of it."""
        self.api.shared.stats.batch_executions_by_custom_id[line.custom_id] += 1
        fault = self.api.shared.faults.pick(LINE_ENDPOINT)
        if fault is not None:
            self.api.shared.stats.faults[f"{LINE_ENDPOINT} {fault}"] += 1
        if self._rng.random() < self.api.shared.config.batch_line_failure_rate:
            failures.extend(_spoiled(self._output_line(line, 500, SERVER_ERROR), fault))
            batch.counts["failed"] += 1
            return
        try:
            self.api.check(line.body)
        except ApiError as error:
            failures.extend(_spoiled(self._output_line(line, error.status, error.body()), fault))
            batch.counts["failed"] += 1
            return
        result = self.api.produce(line.body, keep=False)
        answered: Any = NOT_A_RESPONSE if fault == "line-body-not-json" else result
        outputs.extend(_spoiled(self._output_line(line, 200, answered), fault))
        batch.counts["completed"] += 1
        used, total = result["usage"], batch.usage
        self.api.shared.stats.bill(used)
        total["input_tokens"] += used["input_tokens"]
        total["input_tokens_details"]["cached_tokens"] += used["input_tokens_details"][
            "cached_tokens"
        ]
        total["output_tokens"] += used["output_tokens"]
        total["output_tokens_details"]["reasoning_tokens"] += used["output_tokens_details"][
            "reasoning_tokens"
        ]
        total["total_tokens"] += used["total_tokens"]

    @staticmethod
    def _output_line(
        line: Line,
        status: int | None,
        body: Any,
        error: dict[str, Any] | None = None,
    ) -> bytes:
        response = (
            None
            if status is None
            else {"status_code": status, "request_id": f"req_{secrets.token_hex(16)}", "body": body}
        )
        return orjson.dumps(
            {
                "id": f"batch_req_{secrets.token_hex(16)}",
                "custom_id": line.custom_id,
                "response": response,
                "error": error,
            }
        )

    def _write_files(self, batch: Batch, outputs: list[bytes], failures: list[bytes]) -> None:
        files = self.files
        if outputs:
            data = b"\n".join(outputs) + b"\n"
            batch.output_file_id = files.add(f"{batch.id}_output.jsonl", "batch_output", data).id
        if failures:
            data = b"\n".join(failures) + b"\n"
            batch.error_file_id = files.add(f"{batch.id}_error.jsonl", "batch_output", data).id

    async def _end_cancelled(
        self, batch: Batch, outputs: list[bytes], failures: list[bytes]
    ) -> None:
        await asyncio.sleep(self.api.shared.config.batch_cancelling_seconds)
        self._write_files(batch, outputs, failures)
        batch.enter("cancelled")
