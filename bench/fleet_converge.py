"""Fleet converge: one host against three in the same run, with the number of image builds.

Each round starts from bare local container hosts (Debian 12 with systemd, made by demo/fleet.yml, each
with a new, empty Docker storage volume) and times the operator's command, `ansible-playbook
playbooks/site.yml`, until it returns: Docker engine, the image built (once, on the builder) and carried to
the other replicas (by `docker save` archive, through a new, empty archive directory), the systemd unit,
verification. Bare hosts serve nothing yet, so both rounds run in one batch (--batch 1,25% measures the
rolling batches). Then it counts the replicas that laid out a build context and the image IDs the replicas
run. The figure is `fleet_t3_over_t1`: the seed's way (every host builds) is about 3.

Both rounds run one after the other on this machine, so their ratio holds even where absolute times drift.
Writes bench/results/fleet-converge.json and prints a Markdown table. Takes about 25 minutes here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NETWORK = "vllm-bench"
FLEET_VARS = ROOT / "inventories" / "demo-fleet" / "group_vars" / "vllm_servers" / "fleet.yml"
LOCAL_VARS = ROOT / "inventories" / "local" / "group_vars" / "vllm_servers.yml"
ROLE_LINE = re.compile(r"^(\S+) -+ ([0-9.]+)s$")


def write_inventory(where: Path, hosts: list[str]) -> Path:
    """An inventory of `hosts` as local container hosts, with the fleet demo's settings."""
    (where / "group_vars" / "vllm_servers").mkdir(parents=True)
    (where / "group_vars" / "vllm_servers" / "local.yml").symlink_to(LOCAL_VARS)
    (where / "group_vars" / "vllm_servers" / "fleet.yml").symlink_to(FLEET_VARS)
    inventory = {"all": {"vars": {"ansible_connection": "community.docker.docker",
                                  "ansible_python_interpreter": "/usr/bin/python3"},
                         "children": {"vllm_servers": {"hosts": {h: None for h in hosts}}}}}
    (where / "hosts.yml").write_text(json.dumps(inventory, indent=2))
    return where / "hosts.yml"


def playbook(inventory: Path, name: str, extra: dict, env: dict) -> tuple[int, str, float]:
    start = time.monotonic()
    done = subprocess.run(["ansible-playbook", "-i", str(inventory), str(ROOT / name), "-e", json.dumps(extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - start


def docker_exec(host: str, *argv: str) -> str:
    return subprocess.run(["docker", "exec", host, *argv], capture_output=True, text=True, check=False).stdout.strip()


def one_round(count: int, env: dict, batch: str) -> dict:
    hosts = [f"bench-{i}" for i in range(1, count + 1)]
    with tempfile.TemporaryDirectory(prefix="vllm-bench-") as tmp:
        # facts gathered afresh: the other round's hosts had the same names
        env = {**env, "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(Path(tmp) / "facts")}
        inventory = write_inventory(Path(tmp) / "inventory", hosts)
        archives = Path(tmp) / "archives"
        archives.mkdir()
        hosts_vars = {"demo_network": NETWORK, "demo_gateways": []}
        playbook(inventory, "demo/fleet.yml", {**hosts_vars, "demo_state": "absent"}, env)
        rc, out, _ = playbook(inventory, "demo/fleet.yml", hosts_vars, env)
        if rc:
            sys.exit(f"creating the hosts failed:\n{out[-3000:]}")
        try:
            print(f"converging {count} host(s): {', '.join(hosts)} ...", flush=True)
            rc, out, seconds = playbook(inventory, "playbooks/site.yml",
                                        {"vllm_server_image_archive_dir": str(archives), "vllm_fleet_batch": batch},
                                        {**env, "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_roles"})
            if rc:
                sys.exit(f"site.yml failed on {count} host(s):\n{out[-5000:]}")
            builds = [h for h in hosts if docker_exec(h, "sh", "-c", "test -d /opt/vllm-server/build && echo y") == "y"]
            images = {h: docker_exec(h, "docker", "inspect", "--format", "{{.Image}}", "vllm-server") for h in hosts}
            roles = {m[1]: float(m[2]) for line in out.splitlines() if (m := ROLE_LINE.match(line.strip()))}
        finally:
            playbook(inventory, "demo/fleet.yml", {**hosts_vars, "demo_state": "absent"}, env)
    print(f"  {seconds:.0f} s, {len(builds)} build(s), {len(set(images.values()))} image ID(s)", flush=True)
    return {"hosts": count, "seconds": round(seconds, 1), "image_builds": len(builds), "builders": builds,
            "image_ids": sorted(set(images.values())), "role_seconds": roles}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=RESULTS / "fleet-converge.json")
    # Bare hosts serve nothing yet, so an operator provisions a new fleet in one batch; the rolling
    # batches (a canary of 1, then 25 %) are for hosts that serve. --batch 1,25% measures those.
    parser.add_argument("--batch", default="100%", help="vllm_fleet_batch of both rounds (default: 100%%)")
    args = parser.parse_args()
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    one, three = one_round(1, env, args.batch), one_round(3, env, args.batch)
    ratio = round(three["seconds"] / one["seconds"], 2)
    result = {
        "figure": "fleet_t3_over_t1", "value": ratio, "goal": "<= 1.3 with one build",
        "met": ratio <= 1.3 and three["image_builds"] == 1 and len(three["image_ids"]) == 1,
        "vllm_fleet_batch": args.batch, "rounds": [one, three],
        "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                    "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    roles = sorted({r for rnd in result["rounds"] for r in rnd["role_seconds"]})
    print("\n| hosts | site.yml (s) | image builds | image IDs | " + " | ".join(roles) + " |")
    print("|---|---|---|---|" + "---|" * len(roles))
    for rnd in result["rounds"]:
        print(f"| {rnd['hosts']} | {rnd['seconds']:.0f} | {rnd['image_builds']} | {len(rnd['image_ids'])} | "
              + " | ".join(f"{rnd['role_seconds'].get(r, 0):.0f}" for r in roles) + " |")
    verdict = "met" if result["met"] else "not met"
    print(f"\nvllm_fleet_batch {args.batch}; fleet_t3_over_t1 = {ratio} (goal <= 1.3 with one build: {verdict})")
    print(f"written to {args.output.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
