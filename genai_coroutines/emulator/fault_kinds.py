"""The faults the emulator knows: their kinds, the endpoints they fit, and `--fault` parsing.

Apart from `faults` (which carries them out) so that `EmulatorConfig` can parse its
`fault_rates` with them while `faults` reads that config: the vocabulary imports nothing
of the emulator, and no module imports in a circle.
"""

from __future__ import annotations

BROKEN_STREAMS = ("stream-error", "stream-failed", "stream-cut")
"""Streamed answers that never complete."""
STREAM_FAULTS = (*BROKEN_STREAMS, "stream-reframed")
"""Faults in how a streamed answer is sent; the endpoint carries them out, `apply` does not."""

FAULT_KINDS = (
    "500",
    "502",
    "503",
    "504",
    "503-retry-after",
    "500-no-retry",
    "400-should-retry",
    "reset",
    "hang",
    "stall",
    "malformed",
    "slow",
    *STREAM_FAULTS,
)
"""The named kinds. A status kind is any `NNN` (the body real servers send; 502 is a proxy's
HTML page), optionally suffixed: `NNN-retry-after` adds `retry-after`/`retry-after-ms`
(`EmulatorConfig.fault_retry_after`), `NNN-should-retry` / `NNN-no-retry` add
`x-should-retry: true` / `false`. `reset` drops the connection before any answer, `hang`
never answers, `stall` sends headers then a body that never ends, `malformed` is a 200
whose body is not JSON, `slow` answers `slow_seconds` late. Streamed answers: after a
few deltas, `stream-error` sends an `error` event, `stream-failed` a `response.failed`
(both with `EmulatorConfig.fault_error_code`), `stream-cut` ends the body without a
terminal event; `stream-reframed` is a whole answer framed as a proxy might pass it on
(CRLF, a comment, multi-line `data:`, 7-byte writes)."""

LINE_ENDPOINT = "batch_lines"
LINE_FAULTS = ("line-odd-ids", "line-not-json", "line-body-not-json", "line-missing")
"""Faults of one line of a batch's output (endpoint `batch_lines`): `line-odd-ids` adds,
after the line, two copies under custom_ids no client wrote (`²` and 5,000 `9`s before
its own); `line-not-json` writes the line cut in half; `line-body-not-json` answers it
`status_code` 200 with a body that is a string of HTML, not a response; `line-missing`
runs the line but writes it into neither file."""

SHOULD_RETRY = {"should-retry": "true", "no-retry": "false"}
FAULT_ENDPOINTS = (
    "responses",
    "responses_poll",
    "responses_cancel",
    "files_upload",
    "files_stored",
    "files_read",
    "batches_create",
    "batches_poll",
    "batches_cancel",
    "marker_submit",
    "marker_poll",
    "marker_accepted",
    "datalab_files",
    "storage_put",
    LINE_ENDPOINT,
)
"""Where faults can be injected; "marker_accepted" fires after a job was accepted, so the
job runs (and is billed) but the client never learns its id; `datalab_files` is Datalab's
`POST /api/v1/files/upload` and `GET .../confirm`, `storage_put` the PUT to a presigned upload
URL. The OpenAI async paths:
`responses_poll` is `GET /v1/responses/{id}`, `responses_cancel` its `/cancel`;
`files_upload` is `POST /v1/files`, `files_stored` strikes after an upload was stored (the
file exists and counts, but the client never learns its id), `files_read` `GET /v1/files`
(the list), `GET /v1/files/{id}` and its `/content`;
`batches_create` is `POST /v1/batches`, `batches_poll` `GET /v1/batches[/{id}]`,
`batches_cancel` `POST /v1/batches/{id}/cancel`; `batch_lines` each line a batch runs
(`LINE_FAULTS`)."""
STATUS_SUFFIXES = ("", "retry-after", *SHOULD_RETRY)


def is_fault_kind(kind: str) -> bool:
    """A named kind, a status with one of the `STATUS_SUFFIXES`, or a line fault."""
    status, _, suffix = kind.partition("-")
    return (
        kind in FAULT_KINDS
        or kind in LINE_FAULTS
        or (status.isdigit() and suffix in STATUS_SUFFIXES)
    )


def misfit(endpoint: str, kind: str) -> str | None:
    """Why `kind` can never fire at `endpoint`; None when it can."""
    if (endpoint == LINE_ENDPOINT) != (kind in LINE_FAULTS):
        return f"line faults ({', '.join(LINE_FAULTS)}) fit {LINE_ENDPOINT!r}, and only they"
    return None


def parse_fault(text: str) -> tuple[str, str, float]:
    """`ENDPOINT:KIND:RATE`, as `emulate --fault` takes it."""
    try:
        endpoint, kind, rate = text.split(":")
        share = float(rate)
    except ValueError:
        raise ValueError(f"expected ENDPOINT:KIND:RATE, got {text!r}") from None
    if endpoint not in FAULT_ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; known: {', '.join(FAULT_ENDPOINTS)}")
    if not is_fault_kind(kind):
        raise ValueError(f"unknown fault {kind!r}; known: any NNN, {', '.join(FAULT_KINDS)}")
    problem = misfit(endpoint, kind)
    if problem is not None:
        raise ValueError(problem)
    return endpoint, kind, share


def rates_from_faults(faults: list[tuple[str, str, float]]) -> dict[str, dict[str, float]]:
    """`fault_rates` from parsed `--fault` values: endpoint -> {kind -> rate}."""
    rates: dict[str, dict[str, float]] = {}
    for endpoint, kind, rate in faults:
        rates.setdefault(endpoint, {})[kind] = rate
    return rates
