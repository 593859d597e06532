"""Run the project's real playbooks against converged molecule hosts, from testinfra tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[1]))
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_playbook(host, playbook: str, extra: dict | None = None, *options: str, limit: str = "") -> tuple[int, str]:
    """The real playbook against one converged host, or the hosts of limit (options: more ansible-playbook
    arguments, such as --check); returns (rc, output as one line of words)."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"],
         "--limit", limit or host.backend.get_hostname(),
         str(PROJECT / "playbooks" / playbook), "-e", json.dumps(extra or {}), *options],
        capture_output=True, text=True, env=env, timeout=900)
    return result.returncode, " ".join(ANSI.sub("", result.stdout + result.stderr).split())
