"""Every tag the README advertises for this scenario's playbooks runs its part alone on a converged
host: it fails nowhere, changes nothing, and selects its own tasks only (tests/tag_runner.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from tag_runner import SCENARIOS, check_tags  # noqa: E402

HOST, PLAYBOOKS = SCENARIOS["default"]


def test_every_advertised_tag_runs_its_part_alone(host):
    if host.backend.get_hostname() != HOST:
        pytest.skip(f"run once, against {HOST}")
    assert check_tags(HOST, PLAYBOOKS) == []
