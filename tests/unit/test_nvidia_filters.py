"""Decisions on GPU hosts (plugins/filter/nvidia.py), fed with the facts of the real H100 capture."""

from __future__ import annotations

import copy

import pytest
from ansible.module_utils import nvidia_gpu as ng
from nvidia import CUDA_MIN_DRIVER, cuda_min_driver, gpu_preflight_errors, nvidia_driver_plan
from test_nvidia_gpu import h100_host, h100_run

GIB = 1024**3


@pytest.fixture
def h100(tmp_path):
    h100_host(tmp_path)
    return ng.gather(h100_run, root=str(tmp_path), smi_paths=("/usr/bin/nvidia-smi",))


def want(**kw):
    base = {"host": "gpu-01", "branch": "580", "kernel_modules": "open", "force": False,
            "kernel_steps": True, "kernel_steps_reason": "", "signing_key": False}
    base.update(kw)
    return base


def bare(**kw):
    """A host before any driver: GPUs on the PCI bus, nothing loaded (written by hand)."""
    facts = {"pci_gpu_count": 8, "nvswitch_count": 4, "kernel_module": {"loaded": False, "version": None,
             "flavor": None}, "smi_ok": False, "secure_boot": False}
    facts.update(kw)
    return facts


# ---- nvidia_driver_plan --------------------------------------------------------------------------
def test_the_h100_with_its_driver_loaded_needs_nothing(h100):
    plan = nvidia_driver_plan(h100, want())
    assert plan["action"] == "none" and not plan["kernel_steps"] and not plan["errors"]
    assert "580.159.04 (open kernel module) is loaded" in plan["reason"]


def test_another_branch_loaded_means_install(h100):
    plan = nvidia_driver_plan(h100, want(branch="590"))
    assert plan["action"] == "install" and "asks for 590" in plan["reason"]


def test_the_other_module_flavour_means_install(h100):
    plan = nvidia_driver_plan(h100, want(kernel_modules="proprietary"))
    assert plan["action"] == "install"
    assert "open kernel module; nvidia_driver_kernel_modules asks for proprietary" in plan["reason"]


def test_a_loaded_module_whose_nvidia_smi_fails_is_reinstalled(h100):
    h100["smi_ok"] = False
    assert nvidia_driver_plan(h100, want())["action"] == "install"


def test_no_gpu_is_skipped_with_the_way_to_force_it():
    plan = nvidia_driver_plan(bare(pci_gpu_count=0), want())
    assert plan["action"] == "skip" and "nvidia_driver_force: true" in plan["reason"]
    assert nvidia_driver_plan(bare(pci_gpu_count=0), want(force=True))["action"] == "install"


def test_secure_boot_without_keys_is_refused_before_anything():
    plan = nvidia_driver_plan(bare(secure_boot=True), want())
    assert plan["action"] == "install"
    (error,) = plan["errors"]
    assert "Secure Boot is on on gpu-01" in error and "nvidia_driver_signing_key" in error
    assert "mokutil --import" in error


def test_secure_boot_with_keys_or_without_kernel_steps_goes_on():
    assert nvidia_driver_plan(bare(secure_boot=True), want(signing_key=True))["errors"] == []
    assert nvidia_driver_plan(bare(secure_boot=True), want(kernel_steps=False))["errors"] == []


def test_kernel_steps_carry_their_reason():
    plan = nvidia_driver_plan(bare(), want(kernel_steps=False, kernel_steps_reason="a docker container"))
    assert plan == {"action": "install", "reason": "no NVIDIA kernel module is loaded; installing branch 580",
                    "kernel_steps": False, "kernel_reason": "a docker container", "errors": []}


# ---- the CUDA -> driver table --------------------------------------------------------------------
def test_cuda_13_needs_the_580_branch():
    assert cuda_min_driver("13.0") == "580.65.06" and cuda_min_driver("13.0.2") == "580.65.06"
    assert cuda_min_driver("12.8") == "570.26"


def test_an_unknown_cuda_is_an_error_naming_the_known_ones():
    with pytest.raises(ValueError, match="known: 11.8"):
        cuda_min_driver("10.2")


def test_the_table_rises_with_cuda():
    drivers = [tuple(int(x) for x in v.split(".")) for v in CUDA_MIN_DRIVER.values()]
    assert drivers == sorted(drivers)


# ---- gpu_preflight_errors ------------------------------------------------------------------------
def params(**kw):
    base = {"host": "gpu-01", "gpus": [0], "tensor_parallel_size": 1, "gpu_memory_utilization": 0.9,
            "cuda": "13.0", "model_bytes": 14 * GIB, "model_path": "/srv/models/m"}
    base.update(kw)
    return base


def test_the_h100_runs_the_cuda_13_image_with_a_14_gib_model(h100):
    assert gpu_preflight_errors(h100, params()) == []


def test_a_gpu_that_does_not_exist_is_named_with_those_that_do(h100):
    (error,) = gpu_preflight_errors(h100, params(gpus=[0, 3]))
    assert error.startswith("vllm_server_gpus: GPU 3 does not exist on gpu-01")
    assert "0 (NVIDIA H100 80GB HBM3, 81559 MiB)" in error


def test_a_model_too_large_gets_the_estimate(h100):
    (error,) = gpu_preflight_errors(h100, params(model_bytes=300 * GIB))
    assert "take 300.0 GiB" in error
    assert "1 GPU(s) x 79.6 GiB x vllm_server_gpu_memory_utilization 0.9 = 71.7 GiB" in error
    assert "vllm_server_quantization" in error


def test_tensor_parallel_shares_the_weights(h100):
    two = copy.deepcopy(h100)
    two["gpus"].append(dict(two["gpus"][0], index=1))
    assert gpu_preflight_errors(two, params(gpus=[0, 1], tensor_parallel_size=2, model_bytes=130 * GIB)) == []
    assert gpu_preflight_errors(two, params(gpus=[0, 1], tensor_parallel_size=1, model_bytes=130 * GIB))


def test_a_driver_older_than_the_image_cuda_is_refused(h100):
    old = dict(h100, driver_version="535.261.03", cuda_version="12.2")
    (error,) = gpu_preflight_errors(old, params())
    assert "driver 535.261.03 on gpu-01 (CUDA 12.2) is too old for the image's CUDA 13.0" in error
    assert "580.65.06 or newer" in error and "nvidia_driver_branch: 580" in error


def test_a_cuda_newer_than_the_driver_reports_is_refused_without_the_table(h100):
    (error,) = gpu_preflight_errors(h100, params(cuda="13.9"))
    assert "the driver runs CUDA 13.0 at most" in error


def test_no_cuda_means_no_driver_check(h100):
    assert gpu_preflight_errors(dict(h100, driver_version="470.1.1"), params(cuda="")) == []


def test_no_driver_says_what_to_run():
    (error,) = gpu_preflight_errors({"smi_ok": False, "smi_error": "nvidia-smi is not installed"}, params())
    assert "vllm_server_device: cuda" in error and "nvidia-smi is not installed" in error
    assert "nvidia_driver role" in error


def test_every_problem_is_reported_at_once(h100):
    old = dict(h100, driver_version="535.261.03", cuda_version="12.2")
    assert len(gpu_preflight_errors(old, params(gpus=[0, 7], model_bytes=300 * GIB))) == 3


# ---- nvidia_driver's variables and what the platform offers ----------------------------------------
from nvidia import nvidia_driver_param_errors, nvidia_driver_platform_errors  # noqa: E402

DRIVER = {"branch": "580", "signing_key": "", "signing_cert": "", "manage_kernel": "auto", "fabricmanager": "auto",
          "packages": {}}


def test_the_defaults_pass():
    assert nvidia_driver_param_errors(DRIVER) == []


@pytest.mark.parametrize(("change", "words"), [
    ({"branch": "58"}, "nvidia_driver_branch: '58' is not a driver branch"),
    ({"signing_key": "/k"}, "give both (the key and its certificate) or neither"),
    ({"signing_key": "/no/key", "signing_cert": "/no/cert"}, "/no/key or /no/cert is not a file on the controller"),
    ({"manage_kernel": "sometimes"}, "nvidia_driver_manage_kernel: 'sometimes' is not auto, true or false"),
    ({"fabricmanager": "maybe"}, "nvidia_driver_fabricmanager: 'maybe' is not auto, true or false"),
    ({"packages": {"userspace": ["my-nvidia-B-libs"]}}, "names with B for the branch are no longer expanded"),
    ({"packages": {"kernel": ["@nvidia-driver:B-open"]}}, "names with B for the branch are no longer expanded"),
])
def test_each_bad_variable_is_named(change, words):
    (error,) = nvidia_driver_param_errors({**DRIVER, **change})
    assert words in error


def test_a_key_pair_on_the_controller_passes(tmp_path):
    (tmp_path / "k").write_text("k")
    (tmp_path / "c").write_text("c")
    assert nvidia_driver_param_errors({**DRIVER, "signing_key": str(tmp_path / "k"),
                                       "signing_cert": str(tmp_path / "c")}) == []
    assert nvidia_driver_param_errors({**DRIVER, "manage_kernel": True, "fabricmanager": "false",
                                       "packages": {"userspace": ["nvidia-utils-580-server"]}}) == []


PLATFORM = {"source": "distro", "sources": ["cuda_repo", "distro"], "branch": "535", "newest_branch": 535,
            "userspace_packages": ["nvidia-smi"], "platform": "Debian 12"}


def test_what_debian_12_offers():
    assert nvidia_driver_platform_errors(PLATFORM) == []
    (error,) = nvidia_driver_platform_errors({**PLATFORM, "branch": "580"})
    assert error.startswith('nvidia_driver_branch: 580 is not offered by distro on Debian 12, whose newest is 535. '
                            'Set nvidia_driver_branch: "535"')
    assert error.endswith(", or nvidia_driver_source: cuda_repo.")


def test_a_source_the_platform_does_not_offer():
    (error,) = nvidia_driver_platform_errors({**PLATFORM, "source": "distro", "sources": ["cuda_repo"],
                                              "platform": "Rocky 9"})
    assert error.startswith("nvidia_driver_source: 'distro' is not offered on Rocky 9 (offered: cuda_repo)")


def test_no_limit_and_no_packages():
    assert nvidia_driver_platform_errors({**PLATFORM, "source": "cuda_repo", "branch": "580", "newest_branch": 0}) == []
    (error,) = nvidia_driver_platform_errors({**PLATFORM, "userspace_packages": []})
    assert error == "nvidia_driver_packages: no package list for distro on Debian 12"
