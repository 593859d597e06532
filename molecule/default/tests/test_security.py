"""The security claims of the README, each checked on the converged hosts.

vllm-keyed runs with an API key, a secret environment variable (HF_TOKEN), a pip index with
credentials for its image build and vllm_server_allowed_sources; vllm-plain runs without a key
(published for the demo through vllm_server_unauthenticated_remote_access).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import docker
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

UNIT = "vllm-server"
KEY = "molecule-test-key-0123456789"  # host_vars/vllm-keyed.yml
TOKEN = "hf_molecule_not_a_real_token"
BUILD_PW = "build-pw-0123456789"  # host_vars/vllm-keyed.yml: the password in its pip index's URL
SECRETS = (KEY, TOKEN, BUILD_PW)


def address_of(container) -> str:
    """The test host's address on the outer engine's network (newer APIs list it per network only)."""
    settings = container.attrs["NetworkSettings"]
    return settings.get("IPAddress") or next(n["IPAddress"] for n in settings["Networks"].values() if n["IPAddress"])


def keyed(host) -> bool:
    return host.backend.get_hostname() == "vllm-keyed"


@pytest.fixture(scope="module")
def base_url(host):
    container = docker.from_env().containers.get(host.backend.get_hostname())
    return f"http://127.0.0.1:{container.ports['9999/tcp'][0]['HostPort']}"


@pytest.fixture(scope="module")
def inspect(host):
    return json.loads(host.check_output(f"docker inspect {UNIT}"))[0]


# ---- secrets: only in a root-only file read at start -------------------------------------------
def test_secrets_are_in_a_root_only_file(host):
    env = host.file(f"/etc/vllm-server/{UNIT}.env")
    assert (env.user, env.group, env.mode) == ("root", "root", 0o600)
    assert host.file("/etc/vllm-server").mode == 0o700
    if keyed(host):
        assert f"VLLM_API_KEY={KEY}" in env.content_string and f"HF_TOKEN={TOKEN}" in env.content_string


def test_secrets_are_not_in_docker_inspect(host, inspect):
    text = json.dumps(inspect)
    assert not any(s in text for s in SECRETS)
    assert not any(e.startswith(("VLLM_API_KEY=", "HF_TOKEN=")) for e in inspect["Config"]["Env"])
    mounts = {m["Destination"]: m for m in inspect["Mounts"]}
    assert mounts["/run/secrets/vllm-server.env"]["RW"] is False


def test_secrets_are_not_in_any_process_list_unit_journal_or_other_file(host):
    with host.sudo():
        argv = host.check_output("ps -eo args")
        unit = host.file(f"/etc/systemd/system/{UNIT}.service").content_string
        journal = host.check_output(f"journalctl -u {UNIT} --no-pager -o cat")
        # every file under the places the roles and Docker write, but the env file itself
        holders = host.run(f"grep -rlF -e {KEY} -e {TOKEN} -e {BUILD_PW} /etc /opt /usr/local /var/cache/vllm-server "
                           f"/var/lib/docker/containers /tmp 2>/dev/null").stdout.split()
        # the environment's copy in the last-good record (what a rollback restores) is root only too
        copy = host.file(f"/etc/vllm-server/{UNIT}.last-good/env")
        record = host.file(f"/etc/vllm-server/{UNIT}.last-good")
        assert (copy.user, copy.mode, record.user, record.mode) == ("root", 0o600, "root", 0o700)
    for secret in SECRETS:
        assert secret not in argv and secret not in unit and secret not in journal
    expected = [f"/etc/vllm-server/{UNIT}.env", f"/etc/vllm-server/{UNIT}.last-good/env"]
    assert sorted(holders) == (expected if keyed(host) else [])


def test_secrets_are_not_in_the_image_history(host, inspect):
    history = host.check_output(f"docker history --no-trunc {inspect['Config']['Image']}")
    assert not any(s in history for s in SECRETS)


def test_build_credentials_came_as_a_buildkit_secret(host, inspect):
    """vllm-keyed's pip index has credentials: its image is built with BuildKit from the cpu-secrets
    stage, which read the URL from the secret build-env (the image names the setting, not its value);
    vllm-plain's, without any, by the classic builder. The secret's file is gone after the build."""
    image = inspect["Config"]["Image"]
    names = host.check_output(f"docker run --rm --entrypoint cat {image} /opt/vllm-fleet/build-secrets")
    history = host.check_output(f"docker history --no-trunc --format '{{{{.CreatedBy}}}} {{{{.Comment}}}}' {image}")
    if keyed(host):
        assert names.split() == ["PIP_INDEX_URL"]
        assert "buildkit.dockerfile.v0" in history
        # the install step's record names the index without its credentials (BuildKit's cache key)
        assert "BUILD_SECRETS=PIP_INDEX_URL=https://<credentials>@pypi.org/simple" in history
    else:
        assert names.split() == []
        assert "buildkit" not in history and "BUILD_SECRETS" not in history
    with host.sudo():
        assert not host.file(f"/etc/vllm-server/{UNIT}.build-env").exists


def test_build_credentials_are_nowhere_docker_keeps(host):
    """Every layer, image configuration, build cache record and container of the host's engine, and the
    build context: the password of vllm-keyed's pip index is in none of them."""
    if not keyed(host):
        pytest.skip("the host that builds with credentials")
    with host.sudo():
        found = host.run(f"grep -rlsF --devices=skip {BUILD_PW} /var/lib/docker /opt/vllm-server /etc")
        # the same search finds what the build did write: the index without its credentials (the
        # history of the install step, in the image's configuration), so it did read Docker's storage
        control = host.run("grep -rlsF --devices=skip BUILD_SECRETS=PIP_INDEX_URL=https:// /var/lib/docker/image")
    assert found.stdout == "", found.stdout[:2000]
    assert control.stdout.strip(), "the search did not reach the image's configuration"


def test_a_changed_key_is_not_shown_by_check_and_diff(host):
    """A check run with --diff that would change the key: the key is in no line of the output."""
    if not keyed(host):
        pytest.skip("the keyed host")
    new_key = "sk-never-shown-9876543210"
    rc, out = run_playbook(host, "vllm_server.yml", {"vllm_server_api_key": new_key}, "--check", "--diff")
    assert rc == 0, out[-3000:]
    assert new_key not in out and KEY not in out
    assert "changed=" in out


def test_secrets_are_not_in_the_controllers_fact_cache(host):
    """ansible.cfg caches facts in .cache/facts (plain JSON files): the converted variables are a fact,
    the API key and the secret environment are not (plugins/action/role_arguments.py)."""
    if not keyed(host):
        pytest.skip("the keyed host (the check run above wrote its cache)")
    cache = Path(__file__).resolve().parents[3] / ".cache" / "facts"
    mine = json.loads((cache / host.backend.get_hostname()).read_text())
    assert mine["__vllm_server"]["model_name"]  # the role's fact is cached ...
    assert not {"api_key", "secret_env", "build_pip_index_url", "build_pip_extra_index_url", "build_http_proxy",
                "build_https_proxy", "vllm_git_url"} & set(mine["__vllm_server"])  # ... without the secrets
    text = "".join(p.read_text() for p in cache.iterdir() if p.is_file())
    assert not any(s in text for s in (*SECRETS, "sk-never-shown-9876543210"))


# ---- exposure: the key on every path, no docs, no CORS, only the listed sources -----------------
@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/models"), ("POST", "/v1/chat/completions"),
                                              ("POST", "/invocations"), ("POST", "/tokenize"),
                                              ("POST", "/pause"), ("POST", "/abort_requests"), ("GET", "/metrics")])
def test_every_path_needs_the_key(host, base_url, method, path):
    if not keyed(host):
        pytest.skip("the keyed host")
    without = requests.request(method, base_url + path, json={}, timeout=30)
    assert without.status_code == 401, (path, without.status_code, without.text[:200])
    wrong = requests.request(method, base_url + path, json={}, timeout=30, headers={"Authorization": "Bearer wrong"})
    assert wrong.status_code == 401


def test_health_answers_without_the_key(host, base_url):
    assert requests.get(base_url + "/health", timeout=30).status_code == 200


def test_no_api_docs_and_no_cross_origin_calls(host, base_url):
    assert requests.get(base_url + "/docs", timeout=30).status_code in (401, 404)
    assert requests.get(base_url + "/openapi.json", timeout=30).status_code in (401, 404)
    preflight = requests.options(base_url + "/v1/models", timeout=30, headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in {k.lower() for k in preflight.headers}


def test_without_a_key_the_endpoint_is_local_unless_the_inventory_says_otherwise(host):
    unit = host.file(f"/etc/systemd/system/{UNIT}.service").content_string
    # vllm-plain: no key, published on every address only because inventories/local says so
    assert "0.0.0.0:9999:9999" in unit


def test_only_the_listed_sources_reach_the_keyed_host(host):
    """vllm-keyed allows only the outer bridge's gateway (this machine): vllm-plain is dropped."""
    if not keyed(host):
        pytest.skip("the keyed host")
    with host.sudo():
        rules = host.check_output("iptables -S VLLM-P9999")
        assert "-j DROP" in rules and "-j RETURN" in rules
    client = docker.from_env()
    keyed_ip = address_of(client.containers.get("vllm-keyed"))
    plain = client.containers.get("vllm-plain")
    reached = plain.exec_run(["python3", "-c", f"import socket; socket.create_connection(('{keyed_ip}', 9999), 5)"])
    assert reached.exit_code != 0, reached.output


def test_the_rule_leaves_the_containers_own_connections_alone(host):
    """The keyed host's vLLM container connects out to port 9999 of vllm-plain: that connection
    passes the keyed host's FORWARD chain too, and is not dropped (the rule matches DNAT only)."""
    if not keyed(host):
        pytest.skip("the keyed host")
    plain_ip = address_of(docker.from_env().containers.get("vllm-plain"))
    probe = (f"import urllib.request; print(urllib.request.urlopen('http://{plain_ip}:9999/health', "
             "timeout=10).status)")
    out = host.run(f"docker exec {UNIT} python3 -c {probe!r}")
    assert out.rc == 0 and out.stdout.strip() == "200", out.stderr


# ---- the container: locked down ------------------------------------------------------------------
def test_the_container_is_locked_down(host, inspect):
    hc = inspect["HostConfig"]
    assert "no-new-privileges" in hc["SecurityOpt"] or "no-new-privileges:true" in hc["SecurityOpt"]
    assert hc["CapDrop"] == ["ALL"] or hc["CapDrop"] == ["all"]
    assert sorted(c.upper().removeprefix("CAP_") for c in hc["CapAdd"]) == ["SETGID", "SETUID"]
    assert hc["PidsLimit"] == 8192
    assert hc["LogConfig"]["Type"] == "json-file"
    assert hc["LogConfig"]["Config"] == {"max-size": "50m", "max-file": "3"}


def test_vllm_runs_unprivileged_under_an_init(host):
    with host.sudo():
        assert host.check_output(f"docker exec {UNIT} cat /proc/1/comm") == "tini"
        users = host.check_output(f"docker top {UNIT} -eo pid,uid,comm").splitlines()[1:]
    # every process of the container, tini included, runs as the image's user
    assert users and all(line.split()[1] == "2000" for line in users), users
    status = host.check_output(f"docker exec {UNIT} grep -E '^(CapEff|NoNewPrivs)' /proc/self/status")
    assert "NoNewPrivs:\t1" in status


def test_the_cache_belongs_to_the_container_user(host):
    cache = host.file(f"/var/cache/vllm-server/{UNIT}")
    assert (cache.uid, cache.gid, cache.mode) == (2000, 2000, 0o750)
