"""Faults injected into the converged service, in order. Each test injects one, checks that it took
effect, measures the seconds until a real chat completion through the host's published port
succeeds again, asserts a bound on them, and records `FAULT <name>: recovered in N.N s` (conftest.py
prints the table at the end and writes it to .cache/faults-report.txt). Faults the service must ride
through (a daemon-reload, a failed image build) are measured by a client sending requests all along:
their time is the longest run of failed requests, which must be none.

Each test undoes its own fault; should one fail half-way, `serving_again` puts the host back
together before the next test, so that one failure does not hide the others.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

HOST = "vllm-faults"
UNIT = "vllm-server"
PORT = 9999
WANTS = f"/etc/systemd/system/docker.service.wants/{UNIT}.service"
# the full-disk fault's filler, and the model's place while it is "removed"
FILL = "/var/lib/docker/faults-fill"
MODEL_AWAY_SUFFIX = ".faults-away"
# a build input changed so that the role must build a new image (the tag is a hash of the inputs),
# and one that reaches a RUN step, so that Docker's build cache cannot stand in for the build
REBUILD = {"vllm_server_build_pip_trusted_host": "faults-rebuild.invalid"}
# the forced rebuilds' own traffic only: new connections from the containers' bridge to anywhere
# else; replies to the published port (connections made from outside) still pass
NO_EGRESS = "DOCKER-USER -i docker0 ! -o docker0 -m conntrack --ctstate NEW -j REJECT"
# outages a restart may cost: the unit's RestartSec (10 s) plus vLLM's start on two CPU cores
# (25-50 s alone; more while other builds share them), with room
BOUND_RESTART = 180.0
BOUND_BOOT = 300.0


# --- the endpoint, from outside the host ---------------------------------------------------------


class Api:
    """The host's published port, as an OpenAI client sees it."""

    def __init__(self, base: str, model: str, key: str) -> None:
        self.base, self.model, self.key = base, model, key

    def _request(self, body: dict, query: str = "") -> urllib.request.Request:
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        return urllib.request.Request(f"{self.base}/v1/chat/completions{'?' + query if query else ''}",
                                      data=json.dumps(body).encode(), headers=headers, method="POST")

    def chat(self, max_tokens: int = 4, timeout: float = 10.0) -> dict | None:
        """One chat completion; the reply when it is a well-formed one, else None."""
        body = {"model": self.model, "max_tokens": max_tokens, "temperature": 0.2,
                "messages": [{"role": "user", "content": "Which company developed you as an AI agent?"}]}
        try:
            with urllib.request.urlopen(self._request(body), timeout=timeout) as resp:
                reply = json.load(resp)
        except (OSError, ValueError, http.client.HTTPException):
            return None
        ok = (reply.get("object") == "chat.completion" and reply.get("model") == self.model
              and reply["choices"][0]["message"]["role"] == "assistant"
              and reply["usage"]["completion_tokens"] == max_tokens)
        return reply if ok else None

    def stream(self, max_tokens: int, query: str = "") -> dict:
        """One streaming chat completion read to its end: what arrived, and how it ended. The tiny
        model would now and then sample its end-of-sequence token (one in its 1024): ignore_eos (a
        vLLM extension) keeps every stream generating to max_tokens, as a real model's long answers do.
        A query string, which vLLM ignores, marks the request in the server's access log."""
        body = {"model": self.model, "max_tokens": max_tokens, "stream": True, "ignore_eos": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": "Tell me a long story."}]}
        out = {"tokens": None, "done": False, "finish_reason": None, "error": None, "ended": None}
        try:
            with urllib.request.urlopen(self._request(body, query), timeout=180) as resp:
                for raw in resp:
                    line = raw.decode().strip()
                    if not line.startswith("data:"):
                        continue
                    data = line[len("data:"):].strip()
                    if data == "[DONE]":
                        out["done"] = True
                        continue
                    chunk = json.loads(data)
                    if chunk.get("usage"):
                        out["tokens"] = chunk["usage"]["completion_tokens"]
                    for choice in chunk.get("choices") or []:
                        out["finish_reason"] = choice.get("finish_reason") or out["finish_reason"]
        except (OSError, ValueError, http.client.HTTPException) as e:
            out["error"] = f"{type(e).__name__}: {e}"
        out["ended"] = time.monotonic()
        return out


class Prober:
    """Chat completions one after another on a thread, while a fault is injected: (start, end, ok)."""

    def __init__(self, api: Api) -> None:
        self.api, self.samples = api, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            ok = self.api.chat(timeout=15) is not None
            self.samples.append((start, time.monotonic(), ok))
            self._stop.wait(0.25)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)

    @property
    def failed(self) -> int:
        return sum(1 for _, _, ok in self.samples if not ok)

    def longest_outage(self) -> float:
        """Seconds from the start of a failed request to the end of the next good one, the longest."""
        longest, since = 0.0, None
        for start, end, ok in self.samples:
            if not ok and since is None:
                since = start
            elif ok and since is not None:
                longest, since = max(longest, end - since), None
        if since is not None:
            longest = max(longest, self.samples[-1][1] - since)
        return round(longest, 1)


def wait_serving(api: Api, since: float, bound: float, what: str) -> float:
    """Seconds from `since` until a chat completion succeeds; fails the test past `bound`."""
    while True:
        if api.chat() is not None:
            return round(time.monotonic() - since, 1)
        if time.monotonic() - since > bound:
            pytest.fail(f"{what}: no chat completion succeeded within {bound:.0f} s")
        time.sleep(0.5)


# --- the host -----------------------------------------------------------------------------------


def sh(host, cmd: str) -> str:
    """A command on the test host that must succeed; its output."""
    result = host.run(cmd)
    assert result.rc == 0, f"{cmd}: rc {result.rc}\n{result.stdout}\n{result.stderr}"
    return result.stdout.strip()


def controller(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def container(host) -> str | None:
    """The vLLM container's id and start time, or None when there is none."""
    result = host.run(f"docker inspect --format '{{{{.Id}}}} {{{{.State.StartedAt}}}}' {UNIT}")
    return result.stdout.strip() if result.rc == 0 else None


def unit_prop(host, prop: str) -> str:
    return host.run(f"systemctl show --property {prop} --value {UNIT}").stdout.strip()


def journal_since(host, epoch: int) -> str:
    return host.run(f"journalctl --unit {UNIT} --since @{epoch} --no-pager --output cat").stdout


def files_state(host) -> tuple:
    """What a failed build must leave alone: the unit and its configuration, the running container,
    the tagged images, and the containers there are (no build step left behind). The layers of the
    steps that did succeed stay in Docker's build cache, untagged, as after any failed build (for the
    next build to start from): build_layers counts them."""
    # every file of the role's configuration, the record of the last verified one included
    return (sh(host, f"find /etc/systemd/system/{UNIT}.service /etc/vllm-server -type f -print0 | sort -z"
                     " | xargs -0 sha256sum"),
            container(host),
            sh(host, "docker image ls --filter dangling=false --no-trunc --format '{{.ID}} {{.Repository}}:{{.Tag}}'"
                     " | sort"),
            sh(host, "docker ps --all --no-trunc --format '{{.ID}} {{.Image}} {{.State}}' | sort"))


def build_layers(host) -> int:
    """Untagged image layers: what a build leaves in Docker's build cache, steps that succeeded."""
    return len(sh(host, "docker image ls --all --quiet --filter dangling=true").split())


def quote(out: str, pattern: str) -> str:
    """What the run said, for the report: the first match of a regular expression in its output."""
    found = re.search(pattern, out)
    return found.group(0).replace("\\n", " ").replace("'", "").strip() if found else ""


def failed_task(out: str) -> str:
    """The name of the task that failed, from run_playbook's one line of words."""
    if "fatal:" not in out:
        return ""
    return out.split("fatal:", 1)[0].rsplit("TASK [", 1)[-1].split("]", 1)[0]


@pytest.fixture(scope="module")
def hv(host):
    return host.ansible.get_variables()


@pytest.fixture(scope="module")
def api(hv):
    published = controller("docker", "port", HOST, f"{PORT}/tcp").stdout.split()[0]
    return Api(f"http://{published}", hv["vllm_server_model_name"], hv.get("vllm_server_api_key") or "")


@pytest.fixture(autouse=True)
def serving_again(host, api):
    """After each test: the service answering, whatever the test left behind."""
    yield
    if api.chat() is not None:
        return
    if controller("docker", "inspect", "--format", "{{.State.Running}}", HOST).stdout.strip() != "true":
        controller("docker", "start", HOST)
        time.sleep(5)
    host.run(f"iptables -D {NO_EGRESS}; rm -f {FILL}*; "
             "mount -o remount,size=$(cat /run/faults-size 2>/dev/null || echo 12g) /var/lib/docker; "
             "for d in /srv/models/*" + MODEL_AWAY_SUFFIX + "; do [ -d \"$d\" ] && mv \"$d\" "
             "\"${d%" + MODEL_AWAY_SUFFIX + "}\"; done; systemctl start docker " + UNIT)
    wait_serving(api, time.monotonic(), BOUND_BOOT, "putting the host back together after a failed test")


# --- the faults, in order -------------------------------------------------------------------------


def test_enabled_at_boot_and_with_docker(host, api):
    """The unit is wanted by multi-user.target and by docker.service (so that starting Docker starts
    it), and a rerun of the role changes nothing."""
    assert sh(host, f"systemctl is-enabled {UNIT}") == "enabled"
    assert set(unit_prop(host, "WantedBy").split()) >= {"multi-user.target", "docker.service"}
    for link in (f"/etc/systemd/system/multi-user.target.wants/{UNIT}.service", WANTS):
        assert host.file(link).is_symlink, link
        assert host.file(link).linked_to == f"/etc/systemd/system/{UNIT}.service"
    # a host first enabled by a release whose [Install] named multi-user.target only: the role lays
    # the missing link though the unit is already enabled, and a second run changes nothing
    sh(host, f"rm -f {WANTS} && systemctl daemon-reload")
    rc, out = run_playbook(host, "vllm_server.yml")
    assert rc == 0, out[-3000:]
    assert "failed=0" in out and "changed=0" not in out, out[-2000:]
    assert host.file(WANTS).is_symlink and host.file(WANTS).linked_to == f"/etc/systemd/system/{UNIT}.service"
    assert "docker.service" in unit_prop(host, "WantedBy").split()
    rc, out = run_playbook(host, "vllm_server.yml")
    assert rc == 0, out[-3000:]
    assert "changed=0" in out and "failed=0" in out, out[-2000:]
    assert api.chat() is not None


def test_container_killed(host, api, record):
    """`docker kill` of the vLLM container: systemd (Restart=) starts a new one."""
    before, restarts = container(host), int(unit_prop(host, "NRestarts"))
    t0 = time.monotonic()
    sh(host, f"docker kill {UNIT}")
    assert api.chat(timeout=3) is None, "the container was killed, yet the server answered"
    seconds = wait_serving(api, t0, BOUND_RESTART, "after docker kill")
    assert container(host) not in (None, before)
    assert int(unit_prop(host, "NRestarts")) > restarts
    record("container-killed", seconds, "docker kill; systemd restarted the unit (Restart=always, RestartSec=10)")


def test_docker_restarted(host, api, record):
    """`systemctl restart docker`: Requires= restarts the unit with it."""
    before = container(host)
    t0 = time.monotonic()
    sh(host, "systemctl restart docker")
    seconds = wait_serving(api, t0, BOUND_RESTART, "after systemctl restart docker")
    assert container(host) not in (None, before)
    assert unit_prop(host, "ActiveState") == "active"
    record("docker-restarted", seconds, "systemctl restart docker; the unit restarted with it (Requires=)")


def test_docker_stopped_then_started(host, api, record):
    """`systemctl stop docker; systemctl start docker`, as a package upgrade does: the unit stops
    with Docker (Requires=) and starts again with it (WantedBy=docker.service)."""
    before = container(host)
    t0 = time.monotonic()
    sh(host, "systemctl stop docker")
    stopped = unit_prop(host, "ActiveState")
    sh(host, "systemctl start docker")
    assert stopped in ("inactive", "failed", "deactivating"), f"{UNIT} was {stopped} with Docker stopped"
    seconds = wait_serving(api, t0, BOUND_RESTART, "after systemctl stop docker; systemctl start docker "
                           f"({UNIT} is {unit_prop(host, 'ActiveState')})")
    assert container(host) not in (None, before)
    record("docker-stopped-started", seconds,
           f"the unit stopped with Docker ({stopped}) and was started by it (WantedBy=docker.service)")


def test_host_restarted(host, api, record):
    """The test host restarted: systemd halts it cleanly (SIGRTMIN+3, as `reboot` does in a
    container), the container starts again, and systemd, the inner Docker and the enabled unit
    come back on their own. The inner Docker storage is kept, as a disk would be."""
    before_host = controller("docker", "inspect", "--format", "{{.State.StartedAt}}", HOST).stdout
    t0 = time.monotonic()
    assert controller("docker", "kill", "--signal", "SIGRTMIN+3", HOST).returncode == 0
    if controller("docker", "wait", HOST, timeout=150).returncode != 0:
        controller("docker", "stop", HOST)
    halted = round(time.monotonic() - t0, 1)
    assert controller("docker", "start", HOST).returncode == 0
    seconds = wait_serving(api, t0, BOUND_BOOT, "after the host's restart")
    assert controller("docker", "inspect", "--format", "{{.State.StartedAt}}", HOST).stdout != before_host
    assert sh(host, f"systemctl is-active {UNIT}") == "active"
    record("host-restarted", seconds, f"clean halt in {halted} s, then started; systemd, Docker and the unit came back")


def test_daemon_reload(host, api, record):
    """`systemctl daemon-reload` with the service up: it stays up, and requests keep succeeding."""
    before = (container(host), unit_prop(host, "MainPID"), unit_prop(host, "NRestarts"))
    with Prober(api) as probe:
        time.sleep(2)
        for _ in range(3):
            sh(host, "systemctl daemon-reload")
            time.sleep(1)
        time.sleep(3)
    assert len(probe.samples) >= 5, probe.samples
    assert probe.failed == 0, f"{probe.failed} of {len(probe.samples)} requests failed during daemon-reload"
    assert (container(host), unit_prop(host, "MainPID"), unit_prop(host, "NRestarts")) == before
    record("daemon-reload", probe.longest_outage(),
           f"3 reloads; {len(probe.samples)} requests during them, none failed; same container and main PID")


def test_model_directory_removed(host, api, hv, record):
    """The model directory moved away and the service restarted: the entrypoint says so in the
    journal, the role's verification fails naming the directory and its variables, and with the
    model back a rerun of the playbook finds the service serving again."""
    model = f"{hv['vllm_server_model_root']}/{hv['vllm_server_model_dir']}"
    since = int(sh(host, "date +%s"))
    sh(host, f"mv {model} {model}{MODEL_AWAY_SUFFIX}")
    try:
        t0 = time.monotonic()
        sh(host, f"systemctl restart {UNIT}")
        deadline = time.monotonic() + 90
        while "config.json not found" not in journal_since(host, since):
            assert time.monotonic() < deadline, journal_since(host, since)[-3000:]
            time.sleep(1)
        assert api.chat(timeout=5) is None

        # the role's verification alone, as a run of the role ends (a short wait for /health)
        rc, out = run_playbook(host, "../molecule/faults/playbooks/verify_role.yml",
                               {"vllm_server_health_timeout": 10})
        assert rc != 0, out[-3000:]
        said = quote(out, r"vllm_server_model_root / vllm_server_model_dir: .*?so vLLM cannot load the model")
        for words in ("vllm_server_model_root / vllm_server_model_dir", f"{model} is missing on {HOST}",
                      "config.json not found", f"journalctl -u {UNIT}.service"):
            assert words in out, f"{words!r} not in: {out[-3000:]}"
        # the fleet check (playbooks/verify.yml): its preflight names them too
        rc, out = run_playbook(host, "verify.yml")
        assert rc != 0 and "vllm_server_model_root / vllm_server_model_dir" in out, out[-3000:]
    finally:
        host.run(f"test -d {model}{MODEL_AWAY_SUFFIX} && mv {model}{MODEL_AWAY_SUFFIX} {model}")
    down = round(time.monotonic() - t0, 1)

    t1 = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_playbook, host, "vllm_server.yml")
        seconds = wait_serving(api, t1, BOUND_RESTART, "with the model back")
        rc, out = run.result()
    assert rc == 0, out[-3000:]
    record("model-dir-removed", seconds, f"down {down} s; the role's verification said: {said}; "
                                         "time from the model's return, with the playbook rerun")


def test_disk_full_during_image_build(host, api, record):
    """The inner Docker's file system full while a changed build input forces a rebuild: the run
    fails saying so, the service keeps serving its image, and nothing else changes."""
    size = sh(host, "df --block-size=1M --output=size /var/lib/docker | tail -1") + "m"
    used = int(sh(host, "df --block-size=1M --output=used /var/lib/docker | tail -1"))
    sh(host, f"echo {size} > /run/faults-size")
    before, layers = files_state(host), build_layers(host)
    with Prober(api) as probe:
        try:
            # a small file system (what is there, and 256 MiB), filled: no gigabytes of memory spent
            sh(host, f"mount -o remount,size={used + 256}m /var/lib/docker")
            avail = int(sh(host, "df --block-size=1 --output=avail /var/lib/docker | tail -1"))
            host.run(f"fallocate --length {avail} {FILL}; dd if=/dev/zero of={FILL}.rest bs=64k 2>/dev/null")
            left = int(sh(host, "df --block-size=1 --output=avail /var/lib/docker | tail -1"))
            assert left < 1024**2, f"{left} bytes left on /var/lib/docker"
            rc, out = run_playbook(host, "vllm_server.yml", REBUILD)
        finally:
            host.run(f"rm -f {FILL} {FILL}.rest; mount -o remount,size={size} /var/lib/docker")
        time.sleep(2)
    assert rc != 0, out[-3000:]
    assert "no space left on device" in out.lower(), out[-3000:]
    assert failed_task(out).startswith("vllm_server : Build the image"), out[-3000:]
    assert "changed=0" in out, out[-1500:]
    assert files_state(host) == before
    assert probe.failed == 0, f"{probe.failed} of {len(probe.samples)} requests failed while the disk was full"
    said = quote(out, r"[\w /.:()-]{0,80}no space left on device")
    record("disk-full-build", probe.longest_outage(),
           f"build failed: {said}; "
           f"{len(probe.samples)} requests during it, none failed; "
           "unit, its configuration, container, images and containers unchanged; "
           f"{build_layers(host) - layers} build-cache layers added")


def test_no_network_during_image_build(host, api, record):
    """No egress for the containers (the build's RUN steps) while a rebuild is forced: the run fails
    with the network error, and the service keeps serving through the published port."""
    image = sh(host, f"docker inspect --format '{{{{.Config.Image}}}}' {UNIT}")
    before, layers = files_state(host), build_layers(host)
    with Prober(api) as probe:
        sh(host, f"iptables -I {NO_EGRESS}")
        try:
            # a container on the bridge, as the build's RUN steps are, cannot reach a package mirror
            blocked = host.run(f"docker run --rm --entrypoint python3 {image} -c " + shlex.quote(
                "import socket, sys\ntry: socket.create_connection(('deb.debian.org', 80), 5)\n"
                "except OSError as e: sys.exit(f'blocked: {e}')"))
            assert blocked.rc == 1 and "blocked:" in blocked.stderr, \
                f"a container still reached deb.debian.org: {blocked.rc} {blocked.stdout} {blocked.stderr}"
            rc, out = run_playbook(host, "vllm_server.yml", REBUILD)
        finally:
            host.run(f"iptables -D {NO_EGRESS}")
        time.sleep(2)
    assert rc != 0, out[-3000:]
    assert failed_task(out).startswith("vllm_server : Build the image"), out[-3000:]
    said = [w for w in ("Temporary failure resolving", "Temporary failure in name resolution", "Could not resolve",
                        "Network is unreachable", "Connection refused", "Failed to fetch") if w in out]
    assert said, out[-3000:]
    assert "changed=0" in out, out[-1500:]
    assert files_state(host) == before
    assert probe.failed == 0, f"{probe.failed} of {len(probe.samples)} requests failed while the build had no network"
    said = quote(out, re.escape(said[0]) + r"[ ']*[\w.-]*")
    record("no-network-build", probe.longest_outage(),
           f"build failed: {said}; {len(probe.samples)} requests during it, none failed; unit, its "
           "configuration, container, images and containers unchanged; "
           f"{build_layers(host) - layers} build-cache layers added (the steps before the failed one)")


def stop_while_streaming(host, api, streams: int, max_tokens: int) -> dict:
    """`systemctl stop` given inside the host the moment vLLM answers the first of `streams` streaming
    requests (it answers a stream, and logs it, when it starts generating it): that one is generating,
    the others wait in the engine's queue. Timed from outside, the stop came too late: under load the
    streamed text reaches the clients seconds behind the engine, vLLM's metrics answer as late, and so
    does `docker exec` (17 s seen here while vLLM's CPU workers held both cores)."""
    mark = f"faults-stop-{time.time_ns()}"  # a query string vLLM ignores and its access log shows
    host.run("rm -f /run/faults-armed /run/faults-stopped")
    watch = f"grep -m1 -qF '{mark}' <(timeout 600 journalctl -u {UNIT} -f -n 0 -o cat)"
    armed = controller("docker", "exec", "--detach", HOST, "bash", "-c",
                       f"touch /run/faults-armed; {watch}; begin=$(date +%s.%N); systemctl stop {UNIT}; "
                       "echo $? $begin $(date +%s.%N) > /run/faults-stopped")
    assert armed.returncode == 0, armed.stderr
    deadline = time.monotonic() + 60
    while not host.file("/run/faults-armed").exists:
        assert time.monotonic() < deadline, "the stop did not get ready within 60 s"
        time.sleep(0.2)
    time.sleep(1)  # journalctl follows from now on
    since = int(sh(host, "date +%s"))
    with ThreadPoolExecutor(streams) as pool:
        ends = [r.result(timeout=300) for r in [pool.submit(api.stream, max_tokens, mark) for _ in range(streams)]]
    deadline = time.monotonic() + 150
    while not host.file("/run/faults-stopped").exists:
        assert time.monotonic() < deadline, "the unit was not stopped within 150 s of the streams' end"
        time.sleep(0.5)
    rc, begin, end = sh(host, "cat /run/faults-stopped").split()
    # when docker stop's SIGTERM reached the container (Docker's kill event)
    kills = sh(host, f"docker events --since {int(float(begin))} --until {int(float(end)) + 1} --filter "
                     f"container={UNIT} --filter event=kill --format '{{{{.TimeNano}}}}'").split()
    log = [line for line in journal_since(host, since).splitlines() if "[shutdown]" in line]
    draining = [int(line.split("count=")[1].split()[0]) for line in log if "draining in-flight requests" in line]
    return {"rc": rc, "stop": round(float(end) - float(begin), 1), "ends": ends, "log": log,
            "signal": round(int(kills[0]) / 1e9 - float(begin), 1) if kills else None,
            "drained": draining[0] if draining else 0,
            "complete": sum(1 for e in ends if e["done"] and e["error"] is None and e["finish_reason"] == "length"
                            and e["tokens"] == max_tokens)}


def test_stop_with_streams_in_flight(host, api, hv, record):
    """`systemctl stop` while streaming completions are in flight: vLLM drains them (each ends with
    all its tokens and data: [DONE]) within its --shutdown-timeout, and the stop takes no longer than
    that and a margin. Then the service is started again.

    On this shared 2-core machine, docker stop's SIGTERM has reached the container up to 47 s after
    systemd began the stop (load average 40-50, other vLLM servers running): when it arrives after the
    engine has finished every stream, vLLM drains nothing and the attempt proves nothing, so it is
    made once more; the stream count keeps the engine busy for longer than that, most times."""
    drain = int(hv.get("vllm_server_shutdown_timeout") or 0)
    assert drain > 0, "the scenario's host_vars set vllm_server_shutdown_timeout"
    # as long as the model's context allows, and one at a time (host_vars: --max-num-seqs 1): enough
    # streams to keep the engine busy for about half the drain period, from the time one stream takes
    # on this machine now (2 s to 10 s have been seen here, for the same 2000 tokens)
    max_tokens = int(hv.get("vllm_server_max_model_len") or 2048) - 64
    t0 = time.monotonic()
    one = api.stream(max_tokens)
    per_stream = time.monotonic() - t0
    assert one["done"] and one["tokens"] == max_tokens, one
    streams = max(3, min(24, int(drain * 0.5 / per_stream)))
    print(f"\none stream of {max_tokens} tokens took {per_stream:.1f} s: {streams} streams")
    for attempt in (1, 2):
        got = stop_while_streaming(host, api, streams, max_tokens)
        seen = (f"stop took {got['stop']} s (--shutdown-timeout {drain}), SIGTERM reached the container "
                f"{got['signal']} s after it began; vLLM drained {got['drained']} requests; {got['complete']} of "
                f"{streams} streams of {max_tokens} tokens complete with [DONE]")
        print(f"\nattempt {attempt}: {seen}\n" + "\n".join(got["log"]))
        t1 = time.monotonic()
        sh(host, f"systemctl start {UNIT}")
        seconds = wait_serving(api, t1, BOUND_RESTART, "after systemctl start")
        if got["drained"] or got["complete"] < streams:
            break
    assert got["rc"] == "0", f"systemctl stop {UNIT}: rc {got['rc']}"
    assert got["drained"] > 0, f"the stop's signal came after every stream had been generated, twice: {seen}"
    assert got["complete"] == streams, f"{seen}: " + "; ".join(
        f"{e['tokens']} tokens, [DONE] {e['done']}, {e['finish_reason']}, error {e['error']}" for e in got["ends"])
    assert got["stop"] < drain + 15, seen
    record("stop-with-streams", seconds, f"{got['drained']} requests in vLLM's engine drained, {got['complete']} "
                                         f"streams of {max_tokens} tokens complete with [DONE]; stop took "
                                         f"{got['stop']} s (--shutdown-timeout {drain}; SIGTERM after "
                                         f"{got['signal']} s); attempt {attempt} (a stream alone {per_stream:.0f} s); "
                                         "time from systemctl start")


def test_serving_after_all_faults(host, api):
    assert sh(host, f"systemctl is-active {UNIT}") == "active"
    assert sh(host, f"systemctl is-enabled {UNIT}") == "enabled"
    assert api.chat(max_tokens=16) is not None
