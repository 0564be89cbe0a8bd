"""A journal that stops taking writes mid-batch stops the batch from paying for more.

The journal's files are made immutable (`chattr +i`, which holds for root too) while the
batch runs: the next record fails, nothing more is sent, every item not yet sent ends
`journal_error` with `attempts: 0`, and what finished stays in the output.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

from genai_coroutines import ResponsesProcessor
from genai_coroutines.emulator import Emulator
from tests.responses_support import request_for


def _immutable(paths: list[Path], on: bool) -> None:
    flag = "+i" if on else "-i"
    for path in paths:
        if path.exists():
            subprocess.run(["chattr", flag, str(path)], check=True)


async def test_a_journal_that_fails_mid_batch_stops_sending(
    emulator: Emulator, tmp_path: Path
) -> None:
    journal = tmp_path / "batch.journal"
    files = [journal, Path(f"{journal}-wal")]  # not -shm: SQLite maps it in memory

    def prompts() -> Iterator[str]:
        for i in range(30):
            if i == 10:
                _immutable(files, on=True)
            yield f"prompt {i}"

    try:
        results = await ResponsesProcessor().process_batch(
            request_for(emulator, prompts(), max_concurrent_requests=1), journal=journal
        )
    finally:
        _immutable(files, on=False)

    rows = results["results"]
    assert len(rows) == 30 and [r["index"] for r in rows] == list(range(30))
    assert all(r["success"] for r in rows[:10])
    stopped = [r for r in rows if r.get("error_type") == "journal_error"]
    assert stopped and all(r["attempts"] == 0 for r in stopped)
    assert "cannot write" in stopped[0]["error"]
    assert emulator.stats.total("responses") <= 11  # at most the one in flight at the failure
