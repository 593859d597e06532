"""The fleet behind its gateway: one image everywhere, a rolling change under load without a failed request,
a change that cannot start rolled back after the first batch, a killed replica out of rotation within
10 s, and the gateway's keys and allowlist. Clients are real HTTP clients on this machine, through the
gateway's published port; the rollout is the real playbook against the scenario's inventory. Each figure
is printed as `FLEET <what>: ...` as it is measured."""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))
REPLICAS = ["fleet-1", "fleet-2", "fleet-3"]
GATEWAY = "fleet-gw"
PORT = 18000
MODEL = "tiny-chat"
KEYS = ["fleet-client-key-one-0123", "fleet-client-key-two-4567"]
REPLICA_KEY = "fleet-replica-key-0123456789"
ARCHIVES = Path(os.environ.get("VLLM_FLEET_CACHE") or PROJECT / ".cache") / "fleet-images"
ANSI = re.compile(r"\x1b\[[0-9;]*m")



def replica(name: str):
    return testinfra.get_host(f"docker://{name}")


def say(what: str) -> None:
    print(f"\nFLEET {what}", flush=True)


def docker_exec(host: str, *argv: str, stdin: str | None = None) -> str:
    return subprocess.run(["docker", "exec", "-i", host, *argv], input=stdin, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def gateway_rows() -> dict[str, str]:
    """replica -> its status in the gateway's backend (HAProxy's runtime API)."""
    out = docker_exec(GATEWAY, "socat", "-", "UNIX-CONNECT:/run/haproxy/admin.sock", stdin="show stat\n")
    lines = out.splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, line.split(","), strict=False)) for line in lines[1:] if line]
    return {r["svname"]: r["status"] for r in rows if r["svname"] in REPLICAS}


def request(method: str, path: str, body: dict | None = None, key: str | None = KEYS[0],
            auth: str | None = None, timeout: float = 120) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if auth is not None:
        headers["Authorization"] = auth
    elif key:
        headers["Authorization"] = f"Bearer {key}"
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def chat(stream: bool = False, model: str = MODEL, max_tokens: int = 8) -> dict:
    return {"model": model, "stream": stream, "max_tokens": max_tokens, "temperature": 0.2,
            "messages": [{"role": "user", "content": "Which company developed you as an AI agent?"}]}


def run_playbook(playbook: str, extra: dict | None = None) -> tuple[int, str]:
    env = {**os.environ, "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_FORCE_COLOR": "0"}
    result = subprocess.run(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], str(PROJECT / "playbooks" / playbook),
         "-e", json.dumps(extra or {})], capture_output=True, text=True, env=env, timeout=1800)
    return result.returncode, ANSI.sub("", result.stdout + result.stderr)


def run_rollout(extra: dict) -> tuple[int, str]:
    return run_playbook("rollout.yml", extra)


class Load:
    """A bounded load: `clients` threads, each sending streaming chat requests one after another through
    the gateway until stopped, with a pause between them: three vLLM servers, the playbook and the load
    share this machine's two cores, and a vLLM CPU server's worker spins for a second after every step
    (vLLM's shm queue), so that a replica asked every second never idles and the one restarting gets a
    third of a core (measured: 130-160 s out of rotation with a 1 s pause, against about 60 s without
    load). A request counts as failed if it does not answer 200, or its stream does not end with [DONE]
    (cut)."""

    def __init__(self, clients: int = 2, pause: float = 4.0) -> None:
        self.pause = pause
        self.clients, self.ok, self.failed, self.errors = clients, 0, 0, []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _one(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=300)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps(chat(stream=True, max_tokens=16)),
                         headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEYS[0]}"})
            resp = conn.getresponse()
            data = resp.read().decode(errors="replace")
            if resp.status != 200 or not data.rstrip().endswith("data: [DONE]"):
                raise RuntimeError(f"status {resp.status}, ends {data[-80:]!r}")
            with self._lock:
                self.ok += 1
        except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
            with self._lock:
                self.failed += 1
                self.errors.append(f"{time.strftime('%H:%M:%S')} {exc}")
        finally:
            conn.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._one()
            self._stop.wait(self.pause)

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=320)


def unit_text(host) -> str:
    return host.file("/etc/systemd/system/vllm-server.service").content_string


def wait_all_up(timeout: float = 300) -> dict[str, str]:
    end = time.monotonic() + timeout
    rows = {}
    while time.monotonic() < end:
        rows = gateway_rows()
        if len(rows) == len(REPLICAS) and all(s.startswith("UP") for s in rows.values()):
            return rows
        time.sleep(1)
    return rows


# --- one image -----------------------------------------------------------------------------------


def test_one_build_and_one_image_everywhere():
    ids = {h: docker_exec(h, "docker", "inspect", "--format", "{{.Image}}", "vllm-server").strip() for h in REPLICAS}
    say(f"image: {len(set(ids.values()))} image ID on {len(ids)} replicas ({next(iter(ids.values()))[:19]})")
    assert len(set(ids.values())) == 1, ids
    # only the builder laid out a build context; the others loaded its image
    built = [h for h in REPLICAS
             if docker_exec(h, "sh", "-c", "test -d /opt/vllm-server/build && echo yes || true").strip()]
    say(f"image builds: hosts with a build context: {built}")
    assert built == ["fleet-1"]


def test_the_controller_keeps_the_running_archive_only():
    """fleet-3 received its image as an archive through the controller: the controller keeps that archive
    (a later host finds it there), and the older archive of the same image that prepare left is gone; the
    archive of another image stays."""
    image = docker_exec("fleet-1", "docker", "inspect", "--format", "{{.Config.Image}}", "vllm-server").strip()
    current = "fleet-" + re.sub(r"[^A-Za-z0-9._-]", "_", image) + ".tar"
    names = sorted(p.name for p in ARCHIVES.glob("fleet-*.tar"))
    say(f"controller archives: {names}")
    assert current in names
    assert "fleet-vllm-server_0.0.0-cpu-older.tar" not in names
    assert "fleet-another-image_1.0.tar" in names
    (ARCHIVES / "fleet-another-image_1.0.tar").unlink()


def test_the_registry_carried_the_image_to_fleet_2():
    """fleet-2 receives by registry (host_vars), fleet-3 by archive: the registry on fleet-gw holds the
    builder's image under its tag, reached over HTTPS with the fleet's own authority, and neither the
    builder nor fleet-2 keeps the registry's name."""
    image = docker_exec("fleet-1", "docker", "inspect", "--format", "{{.Config.Image}}", "vllm-server").strip()
    name, tag = image.rsplit(":", 1)
    ca = "/etc/docker/certs.d/fleet-gw:5000/ca.crt"
    script = ("import json, ssl, sys, urllib.request\n"
              "ctx = ssl.create_default_context(cafile=sys.argv[2]) if sys.argv[2] else ssl.create_default_context()\n"
              "print(json.dumps(json.load(urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10))))\n")
    url = f"https://fleet-gw:5000/v2/vllm-fleet/{name.rsplit('/', 1)[-1]}/tags/list"
    tags = json.loads(docker_exec("fleet-2", "python3", "-c", script, url, ca))["tags"]
    say(f"registry: fleet-gw:5000 holds {name.rsplit('/', 1)[-1]} tags {tags}")
    assert tag in tags
    # the fleet's own authority, not an open door: without it the certificate is refused
    untrusted = subprocess.run(["docker", "exec", "fleet-2", "python3", "-c", script, url, ""],
                               capture_output=True, text=True, timeout=60)
    assert untrusted.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr, untrusted.stderr[-500:]
    for host in ("fleet-1", "fleet-2"):
        names = json.loads(docker_exec(host, "docker", "image", "inspect", "--format", "{{json .RepoTags}}", image))
        assert names == [image], (host, names)
    # no account guards it, so nobody deletes through it: the manifest's DELETE is refused (405)
    delete = ("import ssl, sys, urllib.error, urllib.request\n"
              "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
              "accept = ('application/vnd.docker.distribution.manifest.v2+json, '\n"
              "          'application/vnd.oci.image.manifest.v1+json')\n"
              "head = urllib.request.Request(sys.argv[1] + sys.argv[3], method='HEAD', headers={'Accept': accept})\n"
              "digest = urllib.request.urlopen(head, context=ctx, timeout=10).headers['Docker-Content-Digest']\n"
              "try:\n"
              "    urllib.request.urlopen(urllib.request.Request(sys.argv[1] + digest, method='DELETE'), context=ctx,\n"
              "                           timeout=10)\n"
              "    print(200)\n"
              "except urllib.error.HTTPError as e:\n"
              "    print(e.code)\n")
    manifests = f"https://fleet-gw:5000/v2/vllm-fleet/{name.rsplit('/', 1)[-1]}/manifests/"
    assert docker_exec("fleet-2", "python3", "-c", delete, manifests, ca, tag).strip() == "405"


def test_a_bad_registry_is_refused_before_anything_changes():
    units = {h: unit_text(replica(h)) for h in REPLICAS}
    rc, out = run_rollout({"vllm_server_image_distribution": "registry", "vllm_server_image_registry": "fleet gw:5000"})
    assert rc != 0
    assert "vllm_server_image_registry: expected host:port" in out, out[-3000:]
    assert "Stage the vLLM image" not in out
    assert {h: unit_text(replica(h)) for h in REPLICAS} == units


def test_a_rollout_that_changes_what_the_gateway_routes_is_refused_before_anything_changes():
    """A rollout does not reconfigure the gateway: a new model name (or port, key, replica) would leave every
    restarted replica failing the gateway's checks. Refused at the start, naming the difference."""
    units = {h: unit_text(replica(h)) for h in REPLICAS}
    rc, out = run_rollout({"vllm_server_model_name": "tiny-chat-renamed"})
    assert rc != 0
    assert "The inventory changes what the gateway fleet-gw routes to: model tiny-chat is no longer served; " \
           "model tiny-chat-renamed is new" in " ".join(out.split()), out[-3000:]
    assert "Stage the vLLM image" not in out
    assert not re.search(r"changed=[1-9]", out), out[-2000:]
    assert {h: unit_text(replica(h)) for h in REPLICAS} == units
    assert set(gateway_rows().values()) == {"UP"}


# --- the gateway ---------------------------------------------------------------------------------


def test_the_gateway_playbook_again_changes_nothing():
    rc, out = run_playbook("gateway.yml")
    assert rc == 0 and re.search(r"fleet-gw\s*:\s*ok=\d+\s+changed=0\s", out), out[-2000:]


def test_the_gateway_answers_with_a_key_and_streams():
    for key in KEYS:
        status, body = request("POST", "/v1/chat/completions", chat(), key=key)
        assert status == 200, body
        assert json.loads(body)["model"] == MODEL
    status, body = request("POST", "/v1/chat/completions", chat(stream=True, max_tokens=16))
    chunks = [line for line in body.decode().splitlines() if line.startswith("data: ")]
    assert status == 200 and len(chunks) > 2 and chunks[-1] == "data: [DONE]", body[-200:]
    status, body = request("GET", "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(body)["data"]] == [MODEL]


@pytest.mark.parametrize(("auth", "what"), [
    (None, "no key"), ("Bearer wrong-key-0123456789", "a wrong key"), (f"Bearer {REPLICA_KEY}", "the replicas' key"),
    (f"Basic {KEYS[0]}", "another scheme"), (f"Bearer {KEYS[0]}x", "a longer key"), ("Bearer", "an empty key"),
])
def test_the_gateway_refuses_without_a_valid_key(auth, what):
    for method, path, body in [("POST", "/v1/chat/completions", chat()), ("GET", "/v1/models", None)]:
        status, answer = request(method, path, body, key=None, auth=auth)
        assert status == 401, (what, path, answer)
        assert json.loads(answer)["error"]["code"] == 401


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/invocations"), ("POST", "/pause"), ("POST", "/resume"), ("POST", "/abort_requests"),
    ("POST", "/tokenize"), ("POST", "/detokenize"), ("GET", "/metrics"), ("GET", "/docs"), ("GET", "/openapi.json"),
    ("POST", "/v1/load_lora_adapter"), ("POST", "/reset_prefix_cache"), ("POST", "/sleep"), ("GET", "/version"),
    ("POST", "/v1/chat/completions/../../invocations"), ("POST", "/v1/chat/completionsx"), ("GET", "/server_info"),
])
def test_the_gateway_passes_on_the_api_paths_only(method, path):
    status, body = request(method, path, chat())
    assert status == 404, (path, body)
    assert b"the gateway passes on" in body


def test_the_gateway_answers_wrong_methods_and_models_itself():
    assert request("GET", "/v1/chat/completions")[0] == 405
    assert request("POST", "/v1/models", {})[0] == 405
    status, body = request("POST", "/v1/chat/completions", chat(model="no-such-model"))
    assert status == 404 and b"no-such-model" in body, body
    # the gateway's own health: every model has a replica in rotation
    assert request("GET", "/health", key=None)[0] == 200


# --- a rolling change under load ------------------------------------------------------------------


def test_a_rolling_change_under_load_fails_no_request():
    before = {h: unit_text(replica(h)) for h in REPLICAS}
    assert all("--max-num-seqs 16" not in text for text in before.values())
    start = time.monotonic()
    with Load() as load:
        time.sleep(5)
        # a canary, then the other two together (vllm_fleet_batch): one replica serves while they restart
        rc, out = run_rollout({"vllm_server_extra_args": ["--max-num-seqs", "16"], "vllm_fleet_batch": "1,2"})
        time.sleep(5)
    took = time.monotonic() - start
    outs = re.findall(r"(fleet-\d) was out of rotation for ([0-9.]+) s", out)
    say(f"rolling change: rc {rc} in {took:.0f} s; {load.ok} requests served, {load.failed} failed; "
        f"out of rotation: {', '.join(f'{h} {s} s' for h, s in outs)}")
    assert rc == 0, out[-3000:]
    assert load.failed == 0, load.errors[:10]
    assert load.ok > 0
    assert sorted(h for h, _ in outs) == REPLICAS
    after = {h: unit_text(replica(h)) for h in REPLICAS}
    assert all("--max-num-seqs 16" in text for text in after.values())
    assert all(s.startswith("UP") for s in wait_all_up().values())
    # the same change again changes nothing and drains nothing (one batch: with nothing to restart, the
    # batches would only repeat the same checks one host after the other)
    t0 = time.monotonic()
    rc, out = run_rollout({"vllm_server_extra_args": ["--max-num-seqs", "16"], "vllm_fleet_batch": "100%"})
    say(f"the same rollout again: rc {rc} in {time.monotonic() - t0:.0f} s, "
        f"{len(re.findall(r'changed=0 ', out))} hosts changed=0")
    assert rc == 0 and re.search(r"changed=[1-9]", out) is None, out[-3000:]
    assert "out of rotation for" not in out


def test_a_change_that_cannot_start_is_rolled_back_after_the_first_batch():
    before = {h: unit_text(replica(h)) for h in REPLICAS}
    with Load() as load:
        rc, out = run_rollout({"vllm_server_extra_args": ["--max-num-seqs", "16", "--kv-cache-dtype", "no-such-dtype"],
                               "vllm_server_health_timeout": 90})
        time.sleep(5)
    say(f"failing change: rc {rc}; {load.ok} requests served, {load.failed} failed during it")
    assert rc != 0
    assert "Rollout stopped at fleet-1" in out, out[-3000:]
    assert load.failed == 0, load.errors[:10]
    after = {h: unit_text(replica(h)) for h in REPLICAS}
    assert after == before  # fleet-1 back on its verified unit; no later batch touched
    assert replica("fleet-1").service("vllm-server").is_running
    rows = wait_all_up()
    assert all(s.startswith("UP") for s in rows.values()), rows
    status, _ = request("POST", "/v1/chat/completions", chat())
    assert status == 200


# --- a killed replica ----------------------------------------------------------------------------


def test_a_killed_replica_is_out_of_rotation_within_10_s_and_no_request_fails():
    assert all(s.startswith("UP") for s in wait_all_up().values())
    killed = time.monotonic()
    docker_exec("fleet-2", "docker", "kill", "vllm-server")
    out_after = None
    while time.monotonic() - killed < 30:
        if not gateway_rows()["fleet-2"].startswith("UP"):
            out_after = time.monotonic() - killed
            break
        time.sleep(0.2)
    results = [request("POST", "/v1/chat/completions", chat())[0] for _ in range(12)]
    say(f"killed replica: out of rotation after {out_after and round(out_after, 1)} s; "
        f"{results.count(200)} of {len(results)} requests after it answered")
    assert out_after is not None and out_after <= 10
    assert results == [200] * len(results)
    # systemd restarts it; the gateway takes it back
    rows = wait_all_up(timeout=420)
    unit = docker_exec("fleet-2", "systemctl", "show", "vllm-server", "-p", "ActiveState,SubState,NRestarts")
    say(f"killed replica: back in rotation: {rows.get('fleet-2')}; {' '.join(unit.split())}")
    journal = "" if rows["fleet-2"].startswith("UP") else docker_exec(
        "fleet-2", "journalctl", "-u", "vllm-server", "-n", "40", "--no-pager")
    assert rows["fleet-2"].startswith("UP"), (rows, unit, journal)
