"""Every tag the README advertises for this scenario's playbooks runs its part alone on a converged
host: it fails nowhere, changes nothing, and runs its own tasks only (tests/tag_runner.py). The same
file serves every scenario (molecule/gpu-prep/tests/test_tags.py links here): tag_runner.SCENARIOS
says which playbooks and which host each one checks."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
                       / "tests"))
from tag_runner import SCENARIOS, check_tags  # noqa: E402

HOST, PLAYBOOKS = SCENARIOS[os.environ["MOLECULE_SCENARIO_NAME"]]


def test_every_advertised_tag_runs_its_part_alone(host):
    if host.backend.get_hostname() != HOST:
        pytest.skip(f"run once, against {HOST}")
    assert check_tags(HOST, PLAYBOOKS) == []
