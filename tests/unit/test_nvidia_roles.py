"""What the NVIDIA roles would configure for users, rendered for every supported platform.

NVIDIA's repositories are not reachable from this project's CI, so the definitions users get (the
repository URL and key, the packages per source and distribution, the branch limits) are rendered
here from the roles' own variables, with the facts each platform reports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from role_vars import defaults_and_vars, with_typed

init_plugin_loader()
ROOT = Path(__file__).resolve().parents[2]

PLATFORMS = {  # distribution, version, major, os_family, release
    "ubuntu2004": ("Ubuntu", "20.04", "20", "Debian", "focal"),
    "ubuntu2204": ("Ubuntu", "22.04", "22", "Debian", "jammy"),
    "ubuntu2404": ("Ubuntu", "24.04", "24", "Debian", "noble"),
    "debian11": ("Debian", "11", "11", "Debian", "bullseye"),
    "debian12": ("Debian", "12", "12", "Debian", "bookworm"),
    "centos7": ("CentOS", "7.9", "7", "RedHat", "Core"),
    "rocky8": ("Rocky", "8.10", "8", "RedHat", "Green Obsidian"),
    "rocky9": ("Rocky", "9.6", "9", "RedHat", "Blue Onyx"),
}


def render(role: str, expr: str, platform: str, **overrides: Any) -> Any:
    distribution, version, major, family, release = PLATFORMS[platform]
    facts = {"distribution": distribution, "distribution_version": version, "distribution_major_version": major,
             "os_family": family, "distribution_release": release, "architecture": "x86_64",
             "kernel": "6.8.0-45-generic"}
    variables = defaults_and_vars(role, facts)
    variables = with_typed(role, {**variables, "ansible_facts": facts, "fleet_common_deb_architecture": "amd64",
                                  **overrides})
    return Templar(loader=DataLoader(), variables=variables).template(expr)


@pytest.mark.parametrize(("platform", "directory"), [
    ("ubuntu2004", "ubuntu2004"), ("ubuntu2204", "ubuntu2204"), ("ubuntu2404", "ubuntu2404"),
    ("debian11", "debian11"), ("debian12", "debian12"), ("centos7", "rhel7"), ("rocky8", "rhel8"),
    ("rocky9", "rhel9")])
def test_the_cuda_repository_directory_and_key(platform, directory):
    base = f"https://developer.download.nvidia.com/compute/cuda/repos/{directory}/x86_64"
    assert render("nvidia_driver", "{{ __nvidia_driver_cuda_repo }}", platform) == base
    key = "3bf863cc.pub" if platform.startswith(("ubuntu", "debian")) else "D42D0685.pub"
    assert render("nvidia_driver", "{{ __nvidia_driver_cuda_repo_key }}", platform) == f"{base}/{key}"


@pytest.mark.parametrize(("platform", "source", "modules", "userspace", "kernel"), [
    ("ubuntu2204", "cuda_repo", "open", ["nvidia-utils-580", "libnvidia-compute-580", "nvidia-compute-utils-580"],
     ["nvidia-driver-580-open"]),
    ("ubuntu2404", "cuda_repo", "proprietary", None, ["cuda-drivers-580"]),
    ("ubuntu2004", "distro", "open", ["nvidia-utils-580-server", "libnvidia-compute-580-server",
                                      "nvidia-compute-utils-580-server"], ["nvidia-driver-580-server-open"]),
    ("debian12", "distro", "proprietary", ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced",
                                           "libnvidia-cfg1"], ["nvidia-kernel-dkms", "firmware-misc-nonfree"]),
    ("debian12", "cuda_repo", "open", None, ["nvidia-open"]),
    ("rocky9", "cuda_repo", "open", ["nvidia-driver-cuda", "nvidia-persistenced"], ["@nvidia-driver:580-open"]),
    ("rocky8", "cuda_repo", "proprietary", None, ["@nvidia-driver:580-dkms"]),
    ("centos7", "cuda_repo", "proprietary", ["nvidia-driver-branch-580-cuda", "nvidia-persistenced"],
     ["nvidia-driver-branch-580", "kmod-nvidia-latest-dkms"]),
])
def test_packages_per_source_and_platform(platform, source, modules, userspace, kernel):
    kw = {"nvidia_driver_source": source, "nvidia_driver_kernel_modules": modules}
    if userspace is not None:
        assert render("nvidia_driver", "{{ __nvidia_driver_userspace_packages }}", platform, **kw) == userspace
    assert render("nvidia_driver", "{{ __nvidia_driver_kernel_packages }}", platform, **kw) == kernel


def test_a_mirror_that_renames_packages_is_followed():
    kw = {"nvidia_driver_packages": {"userspace": ["my-nvidia-{{ nvidia_driver_branch }}-libs"],
                                     "kernel": ["my-nvidia-{{ nvidia_driver_branch }}-kmod"]}}
    assert render("nvidia_driver", "{{ __nvidia_driver_userspace_packages }}", "debian12", **kw) == \
        ["my-nvidia-580-libs"]
    assert render("nvidia_driver", "{{ __nvidia_driver_kernel_packages }}", "debian12", **kw) == \
        ["my-nvidia-580-kmod"]


@pytest.mark.parametrize(("platform", "headers"), [
    ("ubuntu2204", ["linux-headers-6.8.0-45-generic"]),
    ("rocky9", ["kernel-devel-6.8.0-45-generic", "kernel-headers-6.8.0-45-generic"]),
])
def test_headers_for_the_running_kernel(platform, headers):
    assert render("nvidia_driver", "{{ __nvidia_driver_headers }}", platform) == headers


@pytest.mark.parametrize(("platform", "limits"), [
    ("centos7", {"cuda_repo": 550}), ("debian11", {"distro": 470}), ("debian12", {"distro": 535}),
    ("ubuntu2204", {}), ("rocky9", {})])
def test_branch_limits_name_centos7_and_debians_archive(platform, limits):
    assert render("nvidia_driver", "{{ __nvidia_driver_newest_branch }}", platform) == limits


@pytest.mark.parametrize(("platform", "sources"), [
    ("ubuntu2004", ["cuda_repo", "distro"]), ("debian12", ["cuda_repo", "distro"]), ("rocky9", ["cuda_repo"]),
    ("centos7", ["cuda_repo"])])
def test_the_sources_offered_per_platform(platform, sources):
    assert render("nvidia_driver", "{{ __nvidia_driver_sources }}", platform) == sources


@pytest.mark.parametrize(("platform", "arch"), [("ubuntu2204", "amd64"), ("rocky9", "x86_64")])
def test_the_toolkit_repository(platform, arch):
    assert render("nvidia_container_toolkit", "{{ nvidia_container_toolkit_repo_url }}", platform) == \
        "https://nvidia.github.io/libnvidia-container/stable"
    assert render("nvidia_container_toolkit", "{{ nvidia_container_toolkit_repo_key_url }}", platform) == \
        "https://nvidia.github.io/libnvidia-container/gpgkey"
    repo = render("nvidia_container_toolkit", "{{ __nvidia_container_toolkit_repository }}", platform)
    if platform.startswith("ubuntu"):
        assert repo["uris"] == [f"https://nvidia.github.io/libnvidia-container/stable/deb/{arch}"]
        assert repo["suites"] == ["/"]
    else:
        assert repo["baseurl"] == "https://nvidia.github.io/libnvidia-container/stable/rpm/$basearch"
        assert repo["repo_gpgcheck"] is True


def test_the_toolkit_hands_docker_only_the_runtime_unless_asked():
    keys = render("nvidia_container_toolkit", "{{ __nvidia_container_toolkit_daemon_keys }}", "ubuntu2204")
    assert keys == {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}}}
    keys = render("nvidia_container_toolkit", "{{ __nvidia_container_toolkit_daemon_keys }}", "ubuntu2204",
                  nvidia_container_toolkit_docker_default_runtime=True)
    assert keys["default-runtime"] == "nvidia"


@pytest.mark.parametrize(("overrides", "cuda"), [
    ({}, "13.0"),
    ({"vllm_server_vllm_version": "0.10.2"}, "12.8"),
    ({"vllm_server_vllm_version": "0.20.1"}, ""),
    ({"vllm_server_vllm_version": "0.20.1", "vllm_server_image_cuda_version": "12.9"}, "12.9"),
    ({"vllm_server_build_target": "cuda-source"}, "13.0"),
    ({"vllm_server_image_build": False, "vllm_server_image": "registry.example.com/vllm:x"}, ""),
])
def test_the_image_cuda_vllm_server_checks_drivers_against(overrides, cuda):
    assert render("vllm_server", "{{ __vllm_server_image_cuda }}", "ubuntu2204", **overrides) == cuda


@pytest.mark.parametrize(("overrides", "size"), [
    ({}, 1), ({"vllm_server_gpus": [0, 1, 2, 3]}, 4), ({"vllm_server_gpus": [0, 1, 2, 3],
                                                      "vllm_server_tensor_parallel_size": 2}, 2),
    ({"vllm_server_device": "cpu", "vllm_server_gpus": []}, 1)])
def test_the_gpu_preflight_gets_the_resolved_tensor_parallel_size_without_validate(overrides, size):
    """preflight_gpu is an entry point of its own (gpu_check.yml): the size it hands the GPU check
    must not need what validate sets (the image fixed for the run)."""
    assert int(render("vllm_server", "{{ __vllm_server_tensor_parallel_size }}", "ubuntu2204", **overrides)) == size


# ---- every repository's key is pinned by fingerprint (fleet_common's repository refuses one without) ----
REPOSITORY_ROLES = ["docker_engine", "nvidia_driver", "nvidia_container_toolkit"]
REPOSITORY_VAR = re.compile(r"^__\w+_repositor(y|ies)$")
FINGERPRINT = re.compile(r"^([0-9A-F]{40}|[0-9A-F]{64})$")


def repository_vars(role: str) -> set[str]:
    """The variables of a role's vars files that hold repository definitions (one, or a list)."""
    names = set()
    for path in (ROOT / "roles" / role / "vars").glob("*.yml"):
        names |= {name for name in (yaml.safe_load(path.read_text()) or {}) if REPOSITORY_VAR.match(name)}
    return names


def definitions(node: Any) -> list[dict]:
    """Every mapping that defines a repository (it has uris or a baseurl), however deep."""
    if isinstance(node, dict):
        found = [node] if {"uris", "baseurl"} & set(node) else []
        return found + [d for v in node.values() for d in definitions(v)]
    if isinstance(node, list):
        return [d for v in node for d in definitions(v)]
    return []


@pytest.mark.parametrize("path", sorted((ROOT / "roles").glob("*/vars/*.yml")),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_repository_definition_in_every_vars_file_names_a_fingerprint(path):
    for definition in definitions(yaml.safe_load(path.read_text())):
        assert "fingerprint" in definition, f"{path.relative_to(ROOT)}: {definition.get('name')} has no fingerprint"


def test_the_repositories_are_found():
    assert repository_vars("docker_engine") == {"__docker_engine_repositories"}
    assert repository_vars("nvidia_driver") == {
        "__nvidia_driver_cuda_repository", "__nvidia_driver_distro_repositories", "__nvidia_driver_kernel_repositories"}
    assert repository_vars("nvidia_container_toolkit") == {"__nvidia_container_toolkit_repository"}


@pytest.mark.parametrize("platform", list(PLATFORMS))
@pytest.mark.parametrize("role", REPOSITORY_ROLES)
def test_every_repository_renders_a_full_fingerprint(role, platform):
    rendered = 0
    for name in sorted(repository_vars(role)):
        value = render(role, f"{{{{ {name} | default(None) }}}}", platform)
        for definition in definitions(value):
            assert FINGERPRINT.match(definition["fingerprint"]), (role, platform, definition)
            rendered += 1
    assert rendered or role == "nvidia_driver" and platform.startswith("ubuntu"), (role, platform)


# fingerprints as the roles pin them; the vars files say where each was checked
DOCKER_APT, DOCKER_RPM = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88", "060A61C51B558A7F742B77AAC52FEB6B621E9F35"
CUDA_DEB, CUDA_RPM = "EB693B3035CD5710E231E123A4B469963BF863CC", "610C7B14E068A878070DA4E99CD0A493D42D0685"
TOOLKIT = "C95B321B61E88C1809C4F759DDCAE044F796ECB0"


@pytest.mark.parametrize(("platform", "expected"), [
    ("ubuntu2204", {"docker": DOCKER_APT}), ("debian12", {"docker": DOCKER_APT}),
    ("rocky9", {"docker-ce-stable": DOCKER_RPM}),
    ("centos7", {"centos7-vault-extras": "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5", "docker-ce-stable": DOCKER_RPM})])
def test_dockers_repositories_pin_dockers_keys(platform, expected):
    repos = render("docker_engine", "{{ __docker_engine_repositories }}", platform)
    assert {r["name"]: r["fingerprint"] for r in repos} == expected
    mirror = render("docker_engine", "{{ __docker_engine_repositories }}", platform,
                    docker_engine_repo_key_url="https://mirror.example/docker.gpg",
                    docker_engine_repo_key_fingerprint="AAAA BBBB CCCC DDDD EEEE FFFF 0000 1111 2222 3333")
    docker = next(r for r in mirror if r["name"].startswith("docker"))
    assert docker["fingerprint"] == "AAAA BBBB CCCC DDDD EEEE FFFF 0000 1111 2222 3333"
    assert (docker.get("signed_by") or docker.get("gpgkey")) == "https://mirror.example/docker.gpg"


@pytest.mark.parametrize(("platform", "cuda", "distro"), [
    ("ubuntu2204", CUDA_DEB, None), ("debian11", CUDA_DEB, "1F89983E0081FDE018F3CC9673A4F27B8DD47936"),
    ("debian12", CUDA_DEB, "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"), ("rocky9", CUDA_RPM, None),
    ("centos7", CUDA_RPM, None)])
def test_the_driver_repositories_pin_nvidias_and_debians_keys(platform, cuda, distro):
    assert render("nvidia_driver", "{{ __nvidia_driver_cuda_repository.fingerprint }}", platform) == cuda
    repos = render("nvidia_driver", "{{ __nvidia_driver_distro_repositories }}", platform)
    assert [r["fingerprint"] for r in repos] == ([distro] if distro else [])
    if distro:  # the release's archive key, out of the keyring debian-archive-keyring installs
        assert repos[0]["signed_by"] == "/usr/share/keyrings/debian-archive-keyring.gpg"
    if platform == "centos7":
        (epel,) = render("nvidia_driver", "{{ __nvidia_driver_kernel_repositories }}", platform)
        assert epel["fingerprint"] == "91E97D7C4A5E96F17F3E888F6A2FAEA2352C64E5"


@pytest.mark.parametrize("platform", ["ubuntu2204", "rocky9"])
def test_the_toolkit_repository_pins_nvidias_key_unless_told(platform):
    assert render("nvidia_container_toolkit", "{{ __nvidia_container_toolkit_repository.fingerprint }}",
                  platform) == TOOLKIT
    assert render("nvidia_container_toolkit", "{{ __nvidia_container_toolkit_repository.fingerprint }}", platform,
                  nvidia_container_toolkit_repo_key_fingerprint="0123" * 10) == "0123" * 10
