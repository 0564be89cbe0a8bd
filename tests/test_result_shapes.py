"""The public result dicts of both APIs and the pipeline's row, against golden examples.

The goldens (tests/golden/*.json, written by `python -m tests.golden_capture`) were
captured before results became typed outcomes rendered once by each adapter: the keys,
the type of every value, and every value that does not vary from run to run (ids and
timings do) must stay what they were.
"""

from __future__ import annotations

import json
from typing import Any

from genai_coroutines.emulator import Emulator
from tests.golden_capture import GOLDEN, capture, normalised


def differences(golden: Any, got: Any, where: str = "") -> list[str]:
    """Where `got` departs from `golden`, key by key (in any order)."""
    if isinstance(golden, dict) and isinstance(got, dict):
        found = [f"{where}: missing {key!r}" for key in golden.keys() - got.keys()]
        found += [f"{where}: unexpected {key!r}" for key in got.keys() - golden.keys()]
        for key in golden.keys() & got.keys():
            found += differences(golden[key], got[key], f"{where}.{key}")
        return found
    return [] if golden == got else [f"{where}: {got!r} where the golden has {golden!r}"]


async def test_the_result_dicts_of_both_apis_and_the_pipeline_keep_their_shapes(
    emulator: Emulator,
) -> None:
    captured = await capture(emulator)

    assert sorted(captured) == sorted(path.stem for path in GOLDEN.glob("*.json"))
    for name, result in captured.items():
        golden = json.loads((GOLDEN / f"{name}.json").read_text())
        assert differences(golden, normalised(result), name) == []
