"""Bad input stops the run before anything on the host changes, and the service keeps serving.

Each case runs the real site playbook against the converged host with one wrong variable (as
typed JSON, or as the string `-e name=value` would give), and must fail with a message that names
the variable and what was expected. The cases run four at a time; the host's state (files the
roles write, units, images, containers) is compared before and after all of them, and each run's
recap must say changed=0.
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

HOST = "vllm-plain"
FOREIGN_UNIT = "/etc/systemd/system/foreign.service"
SQUATTER = "squatter"

# case: (variables, words the message must hold). Wrong types come as the strings -e gives.
CASES = {
    # ---- vllm_server: types, ranges, names, paths, control characters, conflicts ----
    "port zero": ({"vllm_server_port": "0"}, "vllm_server_port: expected a TCP port 1-65535, got 0"),
    "port too large": ({"vllm_server_port": "70000"}, "vllm_server_port: expected a TCP port 1-65535, got 70000"),
    "port not a number": ({"vllm_server_port": "http"}, "argument 'vllm_server_port' is of type"),
    "gpu memory share above one": ({"vllm_server_gpu_memory_utilization": "1.5"},
                                   "vllm_server_gpu_memory_utilization: expected a fraction in (0, 1]"),
    "gpu listed twice": ({"vllm_server_device": "cuda", "vllm_server_gpus": "0,0"},
                         "vllm_server_gpus: GPU indices listed twice"),
    "tensor parallel size not dividing": ({"vllm_server_device": "cuda", "vllm_server_gpus": [0, 1],
                                           "vllm_server_tensor_parallel_size": "3"},
                                          "vllm_server_tensor_parallel_size: 3 does not divide"),
    "unknown device": ({"vllm_server_device": "rocm"}, "vllm_server_device must be one of: cuda, cpu"),
    "instance with a path": ({"vllm_server_instance": "../../tmp/x"}, "vllm_server_instance: expected a name"),
    "instance named after docker": ({"vllm_server_instance": "docker"},
                                    "vllm_server_instance: 'docker' is the name of a system unit"),
    "instance with a newline": ({"vllm_server_instance": "a\nExecStart=/bin/sh"},
                                "vllm_server_instance: holds a control character ('\\n'"),
    "instance of a unit not ours": ({"vllm_server_instance": "foreign"},
                                    "vllm_server_instance: a unit named foreign.service already exists"),
    "instance of a container not ours": ({"vllm_server_instance": SQUATTER},
                                         f"vllm_server_instance: a container named {SQUATTER} runs"),
    "carriage return in the environment": ({"vllm_server_env": {"A": "x\rExecStart=/bin/sh -c id\r#"}},
                                           "vllm_server_env: the value of 'A' holds a control character ('\\r'"),
    "the key in the environment": ({"vllm_server_env": {"VLLM_API_KEY": "sk-0123456789"}},
                                   "vllm_server_env: VLLM_API_KEY is set by the role from vllm_server_api_key"),
    "the port in the environment": ({"vllm_server_env": {"VLLM_PORT": "1"}},
                                    "vllm_server_env: VLLM_PORT is set by the role from vllm_server_port"),
    "a token in the plain environment": ({"vllm_server_env": {"HF_TOKEN": "hf_abc"}},
                                         "vllm_server_env: HF_TOKEN looks like a secret"),
    "secret environment as a string": ({"vllm_server_secret_env": "hf_mistyped_secret_value"},
                                       "argument 'vllm_server_secret_env' is of type"),
    "the key as an underscored flag": ({"vllm_server_extra_args": ["--api_key", "sk-0123456789"]},
                                       "vllm_server_extra_args: --api-key is set by the role"),
    "the key as a flag prefix": ({"vllm_server_extra_args": ["--api-k", "sk-0123456789"]},
                                 "vllm_server_extra_args: --api-k (a prefix vLLM reads as --api-key)"),
    "a config file of flags": ({"vllm_server_extra_args": ["--config", "/srv/x.yaml"]},
                               "vllm_server_extra_args: --config is set by the role"),
    "the model name as a flag": ({"vllm_server_extra_args": ["--served_model_name", "x"]},
                                 "use vllm_server_model_name instead"),
    "a flag the role owns": ({"vllm_server_extra_args": ["--port", "8000"]},
                             "vllm_server_extra_args: --port is set by the role: use vllm_server_port"),
    "bind address not an address": ({"vllm_server_bind_address": "999.1.1.1"},
                                    "vllm_server_bind_address: expected an IP address"),
    "open to others without a key": ({"vllm_server_bind_address": "0.0.0.0",
                                      "vllm_server_unauthenticated_remote_access": "false"},
                                     "vllm_server_bind_address: 0.0.0.0 would let other machines"),
    "relative model root": ({"vllm_server_model_root": "models"},
                            "vllm_server_model_root: expected the absolute host path"),
    "model root with ..": ({"vllm_server_model_root": "/srv/../etc"}, "vllm_server_model_root: expected"),
    "model root with a colon": ({"vllm_server_model_root": "/srv:/etc"},
                                "vllm_server_model_root: '/srv:/etc' holds ':' or ','"),
    "model root that is a file": ({"vllm_server_model_root": "/etc/hostname"},
                                  "vllm_server_model_root: /etc/hostname is not a directory on"),
    "model directory with a slash": ({"vllm_server_model_dir": "a/b"}, "vllm_server_model_dir: expected"),
    "model not on the host": ({"vllm_server_model_dir": "no-such-model"}, "no-such-model/config.json is not on"),
    "cache in a system directory": ({"vllm_server_cache_dir": "/var"},
                                    "vllm_server_cache_dir: '/var' is a system directory"),
    "shared memory too small": ({"vllm_server_shm_size": "64m"}, "vllm_server_shm_size: '64m' is too small"),
    "short api key": ({"vllm_server_api_key": "short"}, "vllm_server_api_key: expected at least 8 characters"),
    "quantization with a flag": ({"vllm_server_quantization": "awq --trust-remote-code"},
                                 "vllm_server_quantization: expected a method name"),
    "no image and no build": ({"vllm_server_image_build": "false", "vllm_server_image": ""},
                              "vllm_server_image: set the image to run when vllm_server_image_build is false"),
    "image not a reference": ({"vllm_server_image_build": "no", "vllm_server_image": "Bad Image"},
                              "vllm_server_image: expected a Docker image reference"),
    "git ref as an option": ({"vllm_server_vllm_git_ref": "--upload-pack=x"},
                             "vllm_server_vllm_git_ref: expected a tag, branch or commit"),
    "cors origin not an origin": ({"vllm_server_cors_origins": ["javascript:alert(1)"]},
                                  "vllm_server_cors_origins: expected a list of origins"),
    "pids limit too low": ({"vllm_server_pids_limit": "10"}, "vllm_server_pids_limit: expected 256 or more"),
    "negative model length": ({"vllm_server_max_model_len": "-1"}, "vllm_server_max_model_len: expected 0"),
    "remote code as a word": ({"vllm_server_trust_remote_code": "maybe"},
                              "argument 'vllm_server_trust_remote_code' is of type"),
    "unknown restart policy": ({"vllm_server_restart": "sometimes"}, "vllm_server_restart must be one of"),
    # a GPU that is not there: the test hosts have none, so the GPU preflight stops the run
    "gpu that does not exist": ({"vllm_server_device": "cuda", "vllm_server_gpus": [3]},
                                "vllm_server_device: cuda needs a working NVIDIA driver on"),
    # ---- docker_engine ----
    "unknown engine source": ({"docker_engine_source": "snap"}, "docker_engine_source must be one of"),
    "proxy with a unit line": ({"docker_engine_http_proxy": "http://proxy:3128\nExecStart=/bin/sh"},
                               "docker_engine_http_proxy: holds a control character ('\\n'"),
    "proxy with a quote": ({"docker_engine_http_proxy": 'http://proxy:3128" "NO_PROXY=*'},
                           "docker_engine_http_proxy: expected an http://, https:// or socks5:// URL"),
    "proxy with a space": ({"docker_engine_https_proxy": "http://proxy:3128 http://other:3128"},
                           "docker_engine_https_proxy: expected an http://, https:// or socks5:// URL"),
    "no_proxy with a quote": ({"docker_engine_no_proxy": 'localhost"'},
                              "docker_engine_no_proxy: expected a comma-separated list of host names"),
    "engine enabled as a word": ({"docker_engine_service_enabled": "perhaps"},
                                 "argument 'docker_engine_service_enabled' is of type"),
    "daemon options not a mapping": ({"docker_engine_daemon_options": "data-root"},
                                     "argument 'docker_engine_daemon_options' is of type"),
    "daemon.json keys in a variable no longer read": (
        {"docker_engine_daemon_contributions": {"a_role": {"data-root": "/data/docker"}}},
        "docker_engine_daemon_contributions is no longer read"),
    # ---- nvidia_driver ----
    "driver branch not a branch": ({"nvidia_driver_branch": "latest"},
                                   "nvidia_driver_branch: 'latest' is not a driver branch"),
    "package names with B for the branch": (
        {"nvidia_driver_packages": {"userspace": ["my-nvidia-B-libs"]}},
        "nvidia_driver_packages: names with B for the branch are no longer expanded"),
    "reboot timeout not a number": ({"nvidia_driver_reboot_timeout": "soon"},
                                    "argument 'nvidia_driver_reboot_timeout' is of type"),
    "driver force as a word": ({"nvidia_driver_force": "perhaps"}, "argument 'nvidia_driver_force' is of type"),
    # ---- nvidia_container_toolkit ----
    "toolkit version not a version": ({"nvidia_container_toolkit_version": "latest"},
                                      "nvidia_container_toolkit_version: 'latest' is not a version"),
    "toolkit force as a word": ({"nvidia_container_toolkit_force": "perhaps"},
                                "argument 'nvidia_container_toolkit_force' is of type"),
    "toolkit repository with a newline": ({"nvidia_container_toolkit_repo_url": "https://x\nEnabled: no"},
                                          "nvidia_container_toolkit_repo_url: holds a control character"),
}
# values that must never appear in any output
NEVER_SHOWN = ["hf_mistyped_secret_value"]


def state(host) -> str:
    """What must not change: the files the roles write, the units, the images and containers."""
    return host.check_output(
        "find /etc/vllm-server /etc/systemd/system /etc/docker /etc/apt/sources.list.d /etc/apt/keyrings "
        "/opt/vllm-server /var/cache/vllm-server -xdev \\( -type f -o -type l \\) -print0 2>/dev/null "
        "| sort -z | xargs -0 sha256sum; "
        "docker ps -a --no-trunc --format '{{.Names}} {{.ID}} {{.Status}}' | sed 's/Up .*/Up/' | sort; "
        "docker images --no-trunc --format '{{.Repository}}:{{.Tag}} {{.ID}}' | sort; "
        "docker inspect --format '{{.State.StartedAt}}' vllm-server; systemctl is-active vllm-server")


@pytest.fixture(scope="module")
def outcomes(host):
    """Every case run against the converged host, four at a time; the state before and after."""
    if host.backend.get_hostname() != HOST:
        pytest.skip("checked on one host")
    host.run(f"printf '[Service]\\nExecStart=/bin/true\\n' > {FOREIGN_UNIT}")
    image = host.check_output("docker inspect --format '{{.Config.Image}}' vllm-server")
    host.run(f"docker create --name {SQUATTER} --entrypoint /bin/true {image}")
    try:
        before = state(host)
        with ThreadPoolExecutor(max_workers=4) as pool:
            runs = pool.map(lambda c: run_playbook(host, "site.yml", CASES[c][0]), CASES)
            results = dict(zip(CASES, runs, strict=True))
        after = state(host)
    finally:
        host.run(f"rm -f {FOREIGN_UNIT}; docker rm --force {SQUATTER}")
    return before, after, results


def test_the_table_is_wide():
    prefixes = ("vllm_server_", "docker_engine_", "nvidia_driver_", "nvidia_container_toolkit_")
    roles = {p for variables, _ in CASES.values() for name in variables for p in prefixes if name.startswith(p)}
    assert len(CASES) >= 40
    assert roles == set(prefixes), roles


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_by_name(outcomes, case):
    _, _, results = outcomes
    rc, out = results[case]
    out = out.replace("''", "'")  # the YAML callback doubles quotes inside quoted strings
    message = " ".join(CASES[case][1].split())
    assert rc != 0, out[-3000:]
    assert message in out, out[-3000:]
    assert "changed=0" in out and not re.search(r"changed=[1-9]", out)
    for secret in NEVER_SHOWN:
        assert secret not in out


def test_nothing_on_the_host_changed(outcomes, host):
    before, after, _ = outcomes
    assert after == before
    assert host.service("vllm-server").is_running


def test_failed_verification_says_why_and_shows_the_log(host):
    """The verify playbook against a model name the server does not serve: a clear failure with the log."""
    if host.backend.get_hostname() != HOST:
        pytest.skip("checked on one host")
    rc, out = run_playbook(host, "verify.yml", {"vllm_server_model_name": "not-served"})
    assert rc != 0, out
    assert "does not serve model 'not-served'" in out, out[-3000:]
    assert "journalctl -u vllm-server.service" in out
    assert "GET /health HTTP/1.1" in out  # the log lines themselves: vLLM logs each request


def test_a_failed_build_shows_its_log_without_the_credentials(host):
    """vllm-keyed builds through a pip index with credentials (a BuildKit secret). With an index that
    cannot be reached the build fails: the run (at -vvv, every module's arguments and results shown)
    shows the end of the build's log, the credentials hidden, and the service, its files, images and
    containers stay as they were."""
    if host.backend.get_hostname() != "vllm-keyed":
        pytest.skip("the host that builds with BuildKit")
    password = "failed-build-pw-0123456789"
    before = state(host)
    rc, out = run_playbook(host, "vllm_server.yml", {
        "vllm_server_build_pip_index_url": f"https://vllm-fleet-ci:{password}@pypi.invalid/simple"}, "-vvv")
    assert rc != 0, out[-3000:]
    assert "The image build failed" in out and "credentials hidden" in out, out[-3000:]
    assert "pypi.invalid" in out, out[-3000:]  # pip's own lines, from the build's log
    assert password not in out
    assert state(host) == before
    assert host.service("vllm-server").is_running
    cache = Path(__file__).resolve().parents[3] / ".cache" / "facts"
    assert not [p.name for p in cache.iterdir() if p.is_file() and password in p.read_text()]
