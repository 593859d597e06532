"""Every tag the README advertises runs its part alone, fails nowhere, and changes nothing on a host
that is already converged.

The README's playbook table is the list: each scenario's test_tags.py names the playbooks it runs
(the two scenarios together cover every advertised playbook and tag, which tests/unit checks), and
EXPECT below says, for every tag, a task it must select and one it must leave out.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[1]))
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# which scenario runs which playbooks' tags, and on which of its hosts (converged by that scenario)
SCENARIOS: dict[str, tuple[str, list[str]]] = {
    "default": ("vllm-plain", ["site.yml", "vllm_server.yml", "stage_image.yml"]),
    "fleet": ("fleet-gw", ["gateway.yml", "registry.yml"]),
    "gpu-prep": ("gpuprep-forced", ["nvidia_driver.yml", "docker_engine.yml", "nvidia_container_toolkit.yml"]),
}

# tag -> (a task the tag must run, a task it must leave out); the first must report ok or changed
# on the scenario's host, not merely be listed as skipped. Where a part cannot do anything without a
# GPU (the toolkit's --gpus proof), SELECTED_ONLY accepts its task being selected and skipped.
EXPECT: dict[str, tuple[str | None, str | None]] = {
    "nvidia_driver": ("Report the decision", None),
    "nvidia_driver_preflight": ("Report the decision", "Install the driver's packages"),
    "nvidia_driver_install": ("Install the driver's packages", "Say why the driver's services are left alone"),
    "nvidia_driver_services": ("Say why the driver's services are left alone", "Install the driver's packages"),
    "docker_engine": ("Install the engine's packages", None),
    "docker_engine_preflight": ("Refuse an engine source the platform does not offer",
                                "Install the engine's packages"),
    "docker_engine_install": ("Install the engine's packages", "Write /etc/docker/daemon.json"),
    "docker_engine_configure": ("Write /etc/docker/daemon.json", "Install the engine's packages"),
    "nvidia_container_toolkit": ("Check the variables", None),
    "nvidia_container_toolkit_preflight": ("Check the variables",
                                           "Install the toolkit's packages at the pinned version"),
    "nvidia_container_toolkit_install": ("Install the toolkit's packages at the pinned version",
                                         "Create /dev/char links when the NVIDIA driver loads"),
    "nvidia_container_toolkit_configure": ("Create /dev/char links when the NVIDIA driver loads",
                                           "Install the toolkit's packages at the pinned version"),
    "nvidia_container_toolkit_verify": ("Run nvidia-smi in a container given every GPU (docker run --gpus all)",
                                        "Install the toolkit's packages at the pinned version"),
    "vllm_server": ("Write the systemd unit", None),
    "vllm_server_preflight": ("Look for the model's config.json", "Write the systemd unit"),
    "vllm_server_image": ("Build the image", "Write the systemd unit"),
    "vllm_server_service": ("Write the systemd unit", "Wait for /health, then send the seed's chat request"),
    "vllm_server_verify": ("Wait for /health, then send the seed's chat request", "Write the systemd unit"),
    "vllm_gateway": ("Write HAProxy's configuration, checked by haproxy -c", None),
    "vllm_gateway_preflight": ("Check the replicas, keys, sources and paths", "Install HAProxy and socat"),
    "vllm_gateway_install": ("Install HAProxy and socat", "Write HAProxy's configuration"),
    "vllm_gateway_configure": ("Write HAProxy's configuration, checked by haproxy -c", "Install HAProxy and socat"),
    "vllm_gateway_verify": ("Prove the gateway answers for every model", "Write HAProxy's configuration"),
    "docker_registry": ("Write the registry's configuration", None),
    "docker_registry_preflight": ("Refuse a storage directory that is not absolute",
                                  "Install the registry and what makes its certificate"),
    "docker_registry_install": ("Install the registry and what makes its certificate",
                                "Write the registry's configuration"),
    "docker_registry_configure": ("Write the registry's configuration",
                                  "Install the registry and what makes its certificate"),
    "docker_registry_verify": ("Wait for the registry's API", "Write the registry's configuration"),
}
SELECTED_ONLY = {"nvidia_container_toolkit_verify"}


def ran(out: str, task: str) -> bool:
    """The task's banner is followed by an ok or changed result (one line of words, as run_tag gives)."""
    return re.search(rf"TASK \[[^\]]*: {re.escape(task)}[^\]]*\][^\[]*?\b(ok|changed):", out) is not None


def advertised() -> dict[str, list[str]]:
    """playbook -> its tags, from the README's table of playbooks."""
    table: dict[str, list[str]] = {}
    for line in (PROJECT / "README.md").read_text().splitlines():
        m = re.match(r"\| `playbooks/([\w-]+\.yml)` \|.*\|([^|]*)\|\s*$", line)
        if m:
            table[m.group(1)] = re.findall(r"`([a-z_]+)`", m.group(2))
    return table


def run_tag(inventory: str, host: str, playbook: str, tag: str) -> tuple[int, str]:
    """`ansible-playbook PLAYBOOK --tags TAG` against one host; (rc, output as one line of words)."""
    with tempfile.TemporaryDirectory() as facts:  # runs go in parallel: a fact cache each
        env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
               "ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_CACHE_PLUGIN_CONNECTION": facts}
        result = subprocess.run(
            ["ansible-playbook", "-i", inventory, "--limit", host, "--tags", tag,
             str(PROJECT / "playbooks" / playbook)],
            capture_output=True, text=True, env=env, timeout=900)
    return result.returncode, " ".join(ANSI.sub("", result.stdout + result.stderr).split())


def check_tags(host: str, playbooks: list[str]) -> list[str]:
    """Runs every advertised tag of the playbooks (three at a time); returns the problems found."""
    table = advertised()
    runs = [(pb, tag) for pb in playbooks for tag in table[pb]]
    assert runs, f"the README advertises no tags for {playbooks}"
    inventory = os.environ["MOLECULE_INVENTORY_FILE"]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda r: run_tag(inventory, host, *r), runs))
    problems = []
    for (pb, tag), (rc, out) in zip(runs, results, strict=True):
        must, must_not = EXPECT[tag]
        recap = re.search(rf"{re.escape(host)} : (ok=\d+ changed=\d+ unreachable=\d+ failed=\d+)", out)
        where = f"{pb} --tags {tag}"
        if rc != 0 or not recap:
            problems.append(f"{where}: rc {rc}: {out[-1500:]}")
            continue
        if "changed=0" not in recap.group(1) or "failed=0" not in recap.group(1):
            problems.append(f"{where}: {recap.group(1)} on a converged host")
        if must and not (ran(out, must) or (tag in SELECTED_ONLY and f": {must}" in out)):
            problems.append(f"{where}: did not run '{must}'")
        if must_not and f": {must_not}" in out:
            problems.append(f"{where}: ran '{must_not}', which belongs to another part")
        # once per host and run; "Discover the GPUs again, ..." after a driver install is the exception
        discoveries = re.findall(r"TASK \[fleet_common : Discover the GPUs\][^\[]*?(ok|skipping):", out).count("ok")
        if discoveries > 1:
            problems.append(f"{where}: GPU discovery ran {discoveries} times; once per host and run is the rule")
    return problems
