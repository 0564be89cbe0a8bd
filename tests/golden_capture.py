"""Capture the public result dicts of both APIs and of a pipeline row as golden examples.

Run from the repository root: `python -m tests.golden_capture` writes tests/golden/*.json.
`tests/test_result_shapes.py` compares today's results with them key by key.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from genai_coroutines import DocumentProcessor
from genai_coroutines.emulator import Emulator, EmulatorConfig
from tests import samples
from tests.documents_support import config_for
from tests.pipeline_support import invoice_pdf
from tests.responses_support import run
from tests.test_pipeline import pipeline_for

GOLDEN = Path(__file__).parent / "golden"
VOLATILE = {
    "latency_ms",
    "processing_time_secs",
    "request_id",
    "checkpoint_id",
    "response_ids",
    "raw_response",
}
"""Keys whose values vary from run to run: only their type is kept."""


def normalised(value: Any, request_id: str | None = None) -> Any:
    """`value` with the volatile keys' values replaced by their type's name (and the
    request id quoted in a message by `<request_id>`)."""
    if isinstance(value, dict):
        found = value.get("request_id")
        request_id = found if isinstance(found, str) else request_id
        return {
            key: f"<{type(inner).__name__}>" if key in VOLATILE else normalised(inner, request_id)
            for key, inner in value.items()
        }
    if isinstance(value, list):
        return [normalised(inner, request_id) for inner in value]
    if isinstance(value, str) and request_id:
        return value.replace(request_id, "<request_id>")
    return value


async def capture(emulator: Emulator) -> dict[str, Any]:
    emulator.faults.schedule("responses", "400", when_input_contains="FAILS")
    responses = await run(emulator, ["Say hi", "this FAILS"])
    ok, failed = responses["results"]
    docs = await DocumentProcessor(config_for(emulator)).process(
        [samples.pdf(1), samples.pdf(1, extra=samples.FAIL_MARKER)]
    )
    [row] = await pipeline_for(emulator).process([invoice_pdf(0)])
    return {
        "responses_success": ok,
        "responses_failure": failed,
        "documents_success": docs[0],
        "documents_failure": docs[1],
        "pipeline_success": row,
    }


async def main() -> None:
    async with Emulator(EmulatorConfig(seconds_per_page=0.01)) as emulator:
        captured = await capture(emulator)
    for name, result in captured.items():
        text = json.dumps(normalised(result), indent=1, sort_keys=True)
        (GOLDEN / f"{name}.json").write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
