"""What the NVIDIA roles would configure for users, rendered for every supported platform.

NVIDIA's repositories are not reachable from this project's CI, so the definitions users get (the
repository URL and key, the packages per source and distribution, the branch limits) are rendered
here from the roles' own variables, with the facts each platform reports.
"""

from __future__ import annotations

from typing import Any

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from role_vars import defaults_and_vars

init_plugin_loader()

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
    variables.update(ansible_facts=facts, fleet_common_deb_architecture="amd64", **overrides)
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
