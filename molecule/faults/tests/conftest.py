"""The faults' recovery times, collected as the tests measure them, then printed as a table at the end
of the run and written to the project's cache (.cache/faults-report.txt)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
REPORT = Path(os.environ.get("VLLM_FLEET_CACHE") or PROJECT / ".cache") / "faults-report.txt"

# (fault, seconds until a chat completion succeeded again or None when it did not, what was seen)
RESULTS: list[tuple[str, float | None, str]] = []


@pytest.fixture(scope="session")
def record():
    """record(fault, seconds, note): one measured fault, printed at once as `FAULT <name>: ...`."""

    def add(fault: str, seconds: float | None, note: str = "") -> None:
        RESULTS.append((fault, seconds, note))
        said = f"recovered in {seconds:.1f} s" if seconds is not None else "did NOT recover"
        print(f"\nFAULT {fault}: {said}" + (f" ({note})" if note else ""), flush=True)

    return add


def table() -> str:
    width = max([len(f) for f, _, _ in RESULTS] + [5])
    lines = [f"{'fault':<{width}}  {'recovery':>9}  what was seen", f"{'-' * width}  {'-' * 9}  {'-' * 13}"]
    for fault, seconds, note in RESULTS:
        lines.append(f"{fault:<{width}}  {(f'{seconds:.1f} s' if seconds is not None else 'NONE'):>9}  {note}")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter):
    if not RESULTS:
        return
    text = table()
    terminalreporter.section("faults: measured recovery times")
    terminalreporter.write_line(text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(f"molecule faults, {time.strftime('%Y-%m-%d %H:%M:%S')}\n{text}\n")
    terminalreporter.write_line(f"(written to {REPORT})")
