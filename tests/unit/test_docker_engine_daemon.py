"""daemon.json has one writer: defaults, then the fragments other roles hand over, then the operator's keys."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from role_vars import defaults_and_vars, with_typed

ROLE = Path(__file__).resolve().parents[2] / "roles" / "docker_engine"
init_plugin_loader()


def merged(**overrides) -> dict:
    variables = with_typed("docker_engine", {**defaults_and_vars("docker_engine"), **overrides})
    text = Templar(loader=DataLoader(), variables=variables).template(
        "{{ __docker_engine_daemon_merged | to_nice_json }}")
    return json.loads(text)


def test_defaults_rotate_logs_and_keep_containers_over_restarts():
    assert merged() == {"log-driver": "json-file", "log-opts": {"max-size": "100m", "max-file": "5"},
                        "live-restore": True}


def slurped(keys: dict) -> dict:
    """A fragment as the role's slurp task registers it."""
    return {"content": base64.b64encode(json.dumps(keys).encode()).decode()}


def test_fragments_merge_recursively_over_the_defaults_and_the_operator_wins():
    nvidia = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
    out = merged(__docker_engine_fragments={"results": [slurped({"log-opts": {"max-size": "50m"}}), slurped(nvidia)]},
                 docker_engine_daemon_options={"log-opts": {"max-file": "10"}, "data-root": "/data/docker"})
    assert out["runtimes"] == nvidia["runtimes"]
    assert out["log-opts"] == {"max-size": "50m", "max-file": "10"}
    assert out["data-root"] == "/data/docker"
    assert out["live-restore"] is True


def test_later_fragments_win_over_earlier_ones():
    out = merged(__docker_engine_fragments={"results": [slurped({"default-runtime": "a"}),
                                                        slurped({"default-runtime": "z"})]})
    assert out["default-runtime"] == "z"


def test_the_operator_wins_over_fragments():
    out = merged(__docker_engine_fragments={"results": [slurped({"default-runtime": "nvidia"})]},
                 docker_engine_daemon_options={"default-runtime": "runc"})
    assert out["default-runtime"] == "runc"


def test_only_the_role_writes_daemon_json():
    """No file outside the docker_engine role names daemon.json itself: other roles leave fragments
    in daemon.json.d/ (or hand over keys) and run docker_engine's daemon tasks."""
    root = ROLE.parent.parent
    mentions = [p.relative_to(root) for d in ("roles", "playbooks", "inventories") for p in (root / d).rglob("*.yml")
                if re.search(r"daemon\.json(?!\.d)", p.read_text())]
    assert mentions and all(p.parts[:2] == ("roles", "docker_engine") for p in mentions), mentions
