"""Bad input stops the run before anything on the host changes, and the service keeps serving.

Each case runs the real site playbook against the converged host with one wrong variable.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

UNIT = "/etc/systemd/system/vllm-server.service"


def only_first_host(host):
    if host.backend.get_hostname() != "vllm-plain":
        pytest.skip("checked on one host")


CASES = {
    "gpu listed twice": ({"vllm_server_device": "cuda", "vllm_server_gpus": [0, 0]},
                         "vllm_server_gpus: GPU indices listed twice"),
    "flag the role owns": ({"vllm_server_extra_args": ["--port", "8000"]},
                           "vllm_server_extra_args: --port is set by the role: use vllm_server_port"),
    "relative model root": ({"vllm_server_model_root": "models"},
                            "vllm_server_model_root: expected the absolute host path"),
    "model not on the host": ({"vllm_server_model_dir": "no-such-model"},
                              "no-such-model/config.json\nis not on"),
    # variables of earlier releases, refused by name rather than silently ignored
    "daemon.json keys in a variable no longer read": (
        {"docker_engine_daemon_contributions": {"a_role": {"data-root": "/data/docker"}}},
        "docker_engine_daemon_contributions is no longer read"),
    "package names with B for the branch": (
        {"nvidia_driver_packages": {"userspace": ["my-nvidia-B-libs"]}},
        "nvidia_driver_packages: names with B for the branch are no longer expanded"),
    # a GPU that is not there: the test hosts have none, so the GPU preflight stops the run
    "gpu that does not exist": ({"vllm_server_device": "cuda", "vllm_server_gpus": [3]},
                                "vllm_server_device: cuda needs a working NVIDIA driver on"),
}


def state(host):
    """What must not change: the unit, the env file, the running container."""
    return (host.file(UNIT).sha256sum, host.file("/etc/vllm-server/vllm-server.env").sha256sum,
            host.check_output("docker inspect --format '{{.Id}} {{.State.StartedAt}}' vllm-server"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_any_change(host, case):
    extra, message = CASES[case]
    only_first_host(host)
    before = state(host)
    rc, out = run_playbook(host, "site.yml", extra)
    assert rc != 0, out
    assert " ".join(message.split()) in out, out[-3000:]
    assert "changed=0" in out
    assert state(host) == before
    assert host.service("vllm-server").is_running


def test_failed_verification_says_why_and_shows_the_log(host):
    """The verify playbook against a model name the server does not serve: a clear failure with the log."""
    only_first_host(host)
    rc, out = run_playbook(host, "verify.yml", {"vllm_server_model_name": "not-served"})
    assert rc != 0, out
    assert "does not serve model 'not-served'" in out, out[-3000:]
    assert "journalctl -u vllm-server.service" in out
    assert "GET /health HTTP/1.1" in out  # the log lines themselves: vLLM logs each request
