"""Decisions on GPU hosts, taken on the controller from the facts nvidia_gpu_info gathers.

nvidia_driver_param_errors     the nvidia_driver role's variables: every problem, each naming its variable
nvidia_driver_platform_errors  what the host's platform offers against what the variables ask for
nvidia_driver_plan     what the nvidia_driver role does on a host (skip, nothing, install) and why
cuda_min_driver        the oldest Linux driver a CUDA release runs on
gpu_preflight_errors   why vllm_server cannot run on a host's GPUs, one message per problem
"""

from __future__ import annotations

import os
import re
from typing import Any

# CUDA toolkit -> minimum Linux x86_64 driver (NVIDIA's CUDA release notes, "CUDA Toolkit and
# Corresponding Driver Versions", the GA release of each). Minor-version compatibility would let a
# 12.x program start on any 525+ driver, but vLLM's Triton and FlashInfer kernels compile PTX at
# run time, which needs the driver the toolkit shipped with: the strict table is the one that holds.
CUDA_MIN_DRIVER: dict[str, str] = {
    "11.8": "520.61.05",
    "12.0": "525.60.13",
    "12.1": "530.30.02",
    "12.2": "535.54.03",
    "12.3": "545.23.06",
    "12.4": "550.54.14",
    "12.5": "555.42.02",
    "12.6": "560.28.03",
    "12.8": "570.26",
    "12.9": "575.51.03",
    "13.0": "580.65.06",
}

GIB = 1024**3


def _version(v: Any) -> tuple[int, ...]:
    parts = []
    for piece in str(v).split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def cuda_min_driver(cuda: str) -> str:
    """'580.65.06' for '13.0'; an unknown release raises with the list of known ones."""
    key = ".".join(str(cuda).split(".")[:2])
    if key not in CUDA_MIN_DRIVER:
        raise ValueError(f"CUDA {cuda} is not in the driver table (known: {', '.join(CUDA_MIN_DRIVER)})")
    return CUDA_MIN_DRIVER[key]


BOOLISH = ("auto", "true", "false", "yes", "no")
# package names of earlier releases wrote the branch as B ("nvidia-utils-B"); Jinja says it now
B_PLACEHOLDER = re.compile(r"(-B(-|$)|:B-)")


def nvidia_driver_param_errors(p: dict[str, Any]) -> list[str]:
    """The variables alone: branch, signing key pair (files on the controller), manage_kernel,
    fabricmanager, package names. p holds them without the nvidia_driver_ prefix."""
    errors = []
    branch = str(p.get("branch", ""))
    if not re.match(r"^[0-9]{3}$", branch):
        errors.append(f"nvidia_driver_branch: '{branch}' is not a driver branch; expected three digits such as \"580\"")
    key, cert = str(p.get("signing_key") or ""), str(p.get("signing_cert") or "")
    if bool(key) != bool(cert):
        errors.append("nvidia_driver_signing_key and nvidia_driver_signing_cert: give both (the key and its "
                      "certificate) or neither")
    elif key and not (os.path.isfile(key) and os.path.isfile(cert)):
        errors.append(f"nvidia_driver_signing_key / nvidia_driver_signing_cert: {key} or {cert} is not a file "
                      "on the controller")
    for var in ("manage_kernel", "fabricmanager"):
        value = str(p.get(var, "auto")).lower()
        if value not in BOOLISH:
            errors.append(f"nvidia_driver_{var}: '{p.get(var)}' is not auto, true or false")
    names = [str(n) for v in (p.get("packages") or {}).values() for n in (v if isinstance(v, list) else [v])]
    if any(B_PLACEHOLDER.search(n) for n in names):
        errors.append("nvidia_driver_packages: names with B for the branch are no longer expanded; write the "
                      "branch as \"{{ nvidia_driver_branch }}\", such as \"my-nvidia-{{ nvidia_driver_branch }}-libs\"")
    return errors


def nvidia_driver_platform_errors(p: dict[str, Any]) -> list[str]:
    """What the platform offers (from the role's vars/<platform>.yml) against the variables: the
    source, the branch, a package list. p: source, sources (offered), newest_branch (for this source,
    0 for no limit), branch, userspace_packages, platform (name and major version, for messages)."""
    errors = []
    source, offered, platform = p.get("source"), list(p.get("sources") or []), p.get("platform", "this platform")
    if source not in offered:
        errors.append(f"nvidia_driver_source: '{source}' is not offered on {platform} (offered: "
                      f"{', '.join(offered) or 'none'}); 'distro' is offered on Debian and Ubuntu, use 'cuda_repo' "
                      "(NVIDIA's CUDA repository) elsewhere")
        return errors
    newest = int(p.get("newest_branch") or 0)
    branch = int(p["branch"]) if str(p.get("branch", "")).isdigit() else 0
    if newest and branch > newest:
        errors.append(f"nvidia_driver_branch: {branch} is not offered by {source} on {platform}, whose newest is "
                      f"{newest}. Set nvidia_driver_branch: \"{newest}\" (and run a vLLM built for the CUDA that "
                      "driver supports)" + ("" if source == "cuda_repo" else ", or nvidia_driver_source: cuda_repo")
                      + ".")
    if not p.get("userspace_packages"):
        errors.append(f"nvidia_driver_packages: no package list for {source} on {platform}")
    return errors


def nvidia_driver_plan(facts: dict[str, Any], want: dict[str, Any]) -> dict[str, Any]:
    """What the nvidia_driver role does on one host.

    want: branch, kernel_modules (open|proprietary), force, kernel_steps (bool), kernel_steps_reason,
    signing_key (bool: module signing keys were given), host (name, for messages).
    Returns action (skip | none | install), reason, kernel_steps, kernel_reason, errors.
    """
    host = want.get("host", "the host")
    branch = int(want["branch"])
    module = facts.get("kernel_module") or {}
    plan: dict[str, Any] = {
        "action": "install",
        "reason": "",
        "kernel_steps": bool(want.get("kernel_steps", True)),
        "kernel_reason": want.get("kernel_steps_reason") or "",
        "errors": [],
    }
    if not facts.get("pci_gpu_count") and not want.get("force"):
        plan.update(action="skip", kernel_steps=False,
                    reason=f"no NVIDIA GPU on the PCI bus of {host}: nothing installed "
                           "(set nvidia_driver_force: true to install the driver anyway)")
        return plan
    loaded = module.get("version")
    loaded_branch = int(loaded.split(".")[0]) if loaded else None
    if module.get("loaded") and loaded_branch == branch and facts.get("smi_ok"):
        if module.get("flavor") in (None, want.get("kernel_modules")):
            plan.update(action="none", kernel_steps=False,
                        reason=f"driver {loaded} ({module.get('flavor')} kernel module) is loaded and "
                               f"nvidia-smi answers: branch {branch} is already there, nothing to install")
            return plan
        plan["reason"] = (f"driver {loaded} is loaded with the {module.get('flavor')} kernel module; "
                          f"nvidia_driver_kernel_modules asks for {want.get('kernel_modules')}")
    elif module.get("loaded") and loaded:
        plan["reason"] = f"driver {loaded} is loaded; nvidia_driver_branch asks for {branch}"
    else:
        plan["reason"] = f"no NVIDIA kernel module is loaded; installing branch {branch}"
    if plan["kernel_steps"] and facts.get("secure_boot") and not want.get("signing_key"):
        plan["errors"].append(
            f"Secure Boot is on on {host}: the firmware will refuse an unsigned NVIDIA kernel module. "
            "Either give nvidia_driver_signing_key and nvidia_driver_signing_cert (a key pair whose "
            "certificate is enrolled with `mokutil --import` and confirmed at the next boot), or turn "
            "Secure Boot off in the firmware. Nothing was installed.")
    return plan


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def gpu_preflight_errors(facts: dict[str, Any], p: dict[str, Any]) -> list[str]:
    """Why vllm_server cannot run on this host's GPUs; empty when it can.

    p: host, gpus (indices), tensor_parallel_size (as vllm_server resolves it: its filter
    vllm_server_tensor_parallel_size holds the rule), gpu_memory_utilization, cuda (the image's CUDA,
    "" to skip the driver check), model_bytes (weights' size, 0 when unknown), model_path.
    """
    host = p.get("host", "the host")
    if not facts.get("smi_ok"):
        why = facts.get("smi_error") or "nvidia-smi did not answer"
        return [f"vllm_server_device: cuda needs a working NVIDIA driver on {host}, but {why}. "
                "Run the nvidia_driver role first (playbooks/site.yml does), or set vllm_server_device: cpu."]
    errors = []
    by_index = {g["index"]: g for g in facts.get("gpus", [])}
    listed = ", ".join(f"{i} ({g['name']}, {g['memory_total_mib']} MiB)" for i, g in sorted(by_index.items()))
    wanted = [int(i) for i in p.get("gpus", [])]
    missing = [i for i in wanted if i not in by_index]
    if missing:
        errors.append(f"vllm_server_gpus: GPU {', '.join(map(str, missing))} does not exist on {host}; "
                      f"nvidia-smi lists {len(by_index)}: {listed or 'none'}. List indices from those.")
    cuda = str(p.get("cuda") or "")
    have, supports = facts.get("driver_version"), facts.get("cuda_version")
    if cuda and have:
        key = ".".join(cuda.split(".")[:2])
        need = CUDA_MIN_DRIVER.get(key)
        if (need and _version(have) < _version(need)) or (supports and _version(key) > _version(supports)):
            needs = f"it needs {need} or newer" if need else f"the driver runs CUDA {supports} at most"
            errors.append(
                f"driver {have} on {host} (CUDA {supports or '?'}) is too old for the image's CUDA {cuda} ({needs}): "
                + (f"upgrade the driver (nvidia_driver_branch: {need.split('.')[0]} or newer, then reboot)" if need
                   else f"upgrade the driver to a branch that runs CUDA {key} (nvidia_driver_branch, then reboot)")
                + ", or run an image built for an older CUDA (vllm_server_vllm_version, "
                "vllm_server_image_cuda_version).")
    present = [by_index[i] for i in wanted if i in by_index]
    model_bytes = int(p.get("model_bytes") or 0)
    if present and model_bytes:
        tp = int(p["tensor_parallel_size"])
        util = float(p.get("gpu_memory_utilization", 0.9))
        smallest = min(g["memory_total_mib"] for g in present) * 1024**2
        budget = smallest * util * tp
        if model_bytes >= budget:
            errors.append(
                f"the model's weights in {p.get('model_path')} take {_gib(model_bytes)}, more than vLLM may use "
                f"on {host}: {tp} GPU(s) x {_gib(smallest)} x vllm_server_gpu_memory_utilization {util} = "
                f"{_gib(budget)}, before any KV cache. Add GPUs to vllm_server_gpus (tensor parallel), "
                "use a quantized model (vllm_server_quantization), or a smaller one.")
    return errors


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "nvidia_driver_param_errors": nvidia_driver_param_errors,
            "nvidia_driver_platform_errors": nvidia_driver_platform_errors,
            "nvidia_driver_plan": nvidia_driver_plan,
            "cuda_min_driver": cuda_min_driver,
            "gpu_preflight_errors": gpu_preflight_errors,
        }
