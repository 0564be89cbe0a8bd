"""`DocumentProcessor.estimate` and `genai-coroutines ocr ... --estimate`: pages counted
locally, Datalab's list cents per endpoint, minutes at the configured rate; nothing sent
(the emulator counts every request it gets)."""

from __future__ import annotations

import io
from importlib import resources
from pathlib import Path

import orjson
import pypdf
import pytest

from genai_coroutines import DocumentProcessor
from genai_coroutines.emulator import Emulator
from tests import samples
from tests.documents_support import config_for
from tests.test_cli import run


def sample(name: str) -> bytes:
    return (resources.files("genai_coroutines") / "samples" / name).read_bytes()


def pages_of(data: bytes) -> int:
    """The test's own count, with pypdf."""
    return len(pypdf.PdfReader(io.BytesIO(data)).pages)


SAMPLES = ("invoice-acme.pdf", "invoice-globex.pdf", "receipt-initech.pdf")


async def test_estimate_counts_pages_locally_prices_each_endpoint_and_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    (tmp_path / "scan.png").write_bytes(samples.png())
    docs: list[object] = [sample(name) for name in SAMPLES]
    docs += [samples.pdf(4, compact=True), samples.bundle(), tmp_path / "scan.png"]
    expected = sum(pages_of(doc) for doc in docs[:5]) + 1  # the image is one page
    processor = DocumentProcessor(config_for(emulator, requests_per_minute=30))

    figures = await processor.estimate(docs)

    assert sum(emulator.stats.requests.values()) == 0, "nothing sent"
    assert figures["documents"] == 6 and figures["pages"] == expected
    assert figures["documents_of_unknown_pages"] == 0
    assert figures["cost_cents"] == pytest.approx(expected * 0.6)  # "accurate" parse
    assert {name: e["cents_per_page"] for name, e in figures["endpoints"].items()} == {
        "convert": 0.6,
        "extract": pytest.approx(1.2),
        "segment": pytest.approx(0.8),
    }
    assert figures["endpoints"]["extract"]["cost_usd"] == pytest.approx(expected * 1.2 / 100)
    assert figures["minutes"] == pytest.approx(6 / 30, abs=0.01)

    ranged = await processor.estimate(docs, config_for(emulator, page_range="0-1", mode="fast"))
    assert ranged["pages"] == sum(min(2, pages_of(doc)) for doc in docs[:5]) + 1
    assert ranged["cents_per_page"] == 0.4 and ranged["minutes"] is None  # no rpm: unknown
    assert sum(emulator.stats.requests.values()) == 0


async def test_estimate_refuses_bad_input_before_reading(emulator: Emulator) -> None:
    processor = DocumentProcessor(config_for(emulator))
    with pytest.raises(TypeError, match="not a single document"):
        await processor.estimate(samples.pdf(1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"inputs\[1\]"):
        await processor.estimate([samples.pdf(1), 3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="config must be a DocumentConfig"):
        await processor.estimate([samples.pdf(1)], {"mode": "fast"})  # type: ignore[arg-type]


async def test_ocr_estimate_prints_the_figures_and_sends_nothing(
    emulator: Emulator, tmp_path: Path
) -> None:
    for name in SAMPLES:
        (tmp_path / name).write_bytes(sample(name))
    code, out, err = await run(
        emulator,
        "ocr",
        str(tmp_path / "*.pdf"),
        "--api-url",
        emulator.marker_url,
        "--estimate",
        "--output",
        str(tmp_path / "out.jsonl"),
    )
    assert code == 0, err
    figures = orjson.loads(out)
    assert figures["pages"] == sum(pages_of(sample(name)) for name in SAMPLES)
    assert figures["endpoint"] == "marker" and set(figures["endpoints"]) == {
        "convert",
        "extract",
        "segment",
    }
    assert sum(emulator.stats.requests.values()) == 0 and not (tmp_path / "out.jsonl").exists()
