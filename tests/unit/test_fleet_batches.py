"""The playbooks that restart or reboot hosts act in batches (Ansible's `serial`) and stop at the first
failed batch. Each play's own keywords are taken from the real playbook into a playbook whose only task
reports the host (or fails where told), run by ansible-playbook against six local hosts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from fleet import fleet_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = str(Path(sys.executable).parent / "ansible-playbook")
BATCHED = ["nvidia_driver", "docker_engine", "nvidia_container_toolkit", "vllm_server", "rollout", "gateway",
           "registry"]
# plays that restart nothing: the inventory's check, the image staged (built or loaded) beside the running service
NOT_RESTARTING = {"Check the inventory before changing anything", "Stage the vLLM image on every host",
                  "Trust the fleet's image registry"}
HOSTS = [f"gpu-{i}" for i in range(1, 7)]


@pytest.mark.parametrize(("value", "batches"), [
    (None, [1, "25%"]), ("", [1, "25%"]), ([], [1, "25%"]),
    (2, [2]), ("2", [2]), ("25%", ["25%"]), ("1,50%", [1, "50%"]), ([1, "50%", "100%"], [1, "50%", "100%"]),
    (" 1 , 3 ", [1, 3]),
])
def test_batches_are_read_however_they_arrive(value, batches):
    assert fleet_batch(value) == batches


@pytest.mark.parametrize("value", ["0", 0, "-1", "101%", "0%", "all", "1;reboot", [1, "x"], True, "1,,2", "2.5"])
def test_a_bad_batch_is_refused_by_name(value):
    with pytest.raises(AnsibleFilterError, match=r"^vllm_fleet_batch: expected a number of hosts"):
        fleet_batch(value)


def plays(name: str) -> list[dict]:
    """The plays of a playbook, those it imports included."""
    out = []
    for play in yaml.safe_load((ROOT / "playbooks" / f"{name}.yml").read_text()):
        imported = play.get("ansible.builtin.import_playbook")
        out += plays(Path(imported).stem) if imported else [play]
    return out


def play_keywords(name: str) -> dict:
    play = [p for p in plays(name) if p["name"] not in NOT_RESTARTING][0]
    return {k: play[k] for k in ("serial", "max_fail_percentage") if k in play}


@pytest.mark.parametrize("name", BATCHED)
def test_every_play_that_restarts_hosts_is_batched(name):
    restarting = [p for p in plays(name) if p["name"] not in NOT_RESTARTING]
    assert restarting
    for play in restarting:
        keywords = {k: play.get(k) for k in ("serial", "max_fail_percentage")}
        assert keywords == {"serial": "{{ vllm_fleet_batch | default([]) | vllm_fleet.fleet.fleet_batch }}",
                            "max_fail_percentage": 0}, play["name"]


def test_the_plays_that_restart_nothing_touch_no_service():
    for name in BATCHED:
        for play in plays(name):
            if play["name"] in NOT_RESTARTING:
                text = yaml.safe_dump(play)
                entry_points = any(f"tasks_from: {e}" in text for e in ("build", "validate", "client"))
                assert "roles" not in play and entry_points, play["name"]


def run(tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    play = {"name": "batched", "hosts": "vllm_servers", "gather_facts": False, **play_keywords(name),
            "tasks": [{"name": "act", "ansible.builtin.debug": {"msg": "acting on {{ inventory_hostname }}"}},
                      {"name": "fail where told", "ansible.builtin.fail": {"msg": "broken"},
                       "when": "inventory_hostname in (fail_on | default([]))"}]}
    (tmp_path / "play.yml").write_text(yaml.safe_dump([play]))
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"children": {"vllm_servers": {
        "hosts": {h: {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
                  for h in HOSTS}}}}}))
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACKS_ENABLED": "", "ANSIBLE_STDOUT_CALLBACK": "default"}
    return subprocess.run([PLAYBOOK_BIN, "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml"), *extra],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False, timeout=300)


def batches(out: str) -> list[list[str]]:
    """The hosts of each batch, in order: every batch starts with the play's banner."""
    found: list[list[str]] = []
    for chunk in out.split("PLAY [batched]")[1:]:
        act = chunk.split("TASK [fail where told]")[0]
        found.append(sorted(re.findall(r"ok: \[(gpu-\d+)\]", act)))  # a batch's hosts run in parallel
    return found


@pytest.mark.parametrize(("extra", "expected"), [
    ((), [["gpu-1"], ["gpu-2"], ["gpu-3"], ["gpu-4"], ["gpu-5"], ["gpu-6"]]),  # 1, then 25 % of 6 = 1
    (("-e", "vllm_fleet_batch=1,50%"), [["gpu-1"], ["gpu-2", "gpu-3", "gpu-4"], ["gpu-5", "gpu-6"]]),
    (("-e", "vllm_fleet_batch=2"), [["gpu-1", "gpu-2"], ["gpu-3", "gpu-4"], ["gpu-5", "gpu-6"]]),
    (("-e", '{"vllm_fleet_batch": [1, "100%"]}'), [["gpu-1"], HOSTS[1:]]),
])
def test_hosts_are_acted_on_in_batches(tmp_path, extra, expected):
    result = run(tmp_path, "vllm_server", *extra)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert batches(result.stdout) == expected


@pytest.mark.parametrize("name", BATCHED)
def test_a_failed_batch_stops_the_run(tmp_path, name):
    """gpu-3 fails in the second batch (of two hosts): the third batch is never started."""
    result = run(tmp_path, name, "-e", "vllm_fleet_batch=1,2", "-e", '{"fail_on": ["gpu-3"]}')
    assert result.returncode != 0
    assert batches(result.stdout) == [["gpu-1"], ["gpu-2", "gpu-3"]]
    assert not re.search(r"gpu-[456]", result.stdout.split("PLAY RECAP")[0])


def test_a_bad_batch_stops_the_run_before_any_host(tmp_path):
    result = run(tmp_path, "vllm_server", "-e", "vllm_fleet_batch=0")
    assert result.returncode != 0
    assert "vllm_fleet_batch: expected a number of hosts" in result.stdout + result.stderr
    assert "acting on" not in result.stdout
