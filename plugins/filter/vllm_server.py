"""Filters that turn the vllm_server role's variables into the container's command line.

The role's unit template renders ``vllm_server_command_line``; preflight asserts that
``vllm_server_param_errors`` is empty before anything on the host changes. Both are plain
functions of a dict of the role's public variables (without the ``vllm_server_`` prefix), so
they are unit-tested without Ansible running.
"""

from __future__ import annotations

import os
import re
from typing import Any

CONTAINER_MODEL_ROOT = "/workspace/models"
CONTAINER_CACHE = "/workspace/cache"

# Arguments the role sets itself: given again in extra_args they would fight the role's own
# values, or (the API key) leak into the process list.
OWNED_ARGS = {
    "--host": "vllm_server_bind_address",
    "--port": "vllm_server_port",
    "--model": "vllm_server_model_root / vllm_server_model_dir",
    "--served-model-name": "vllm_server_model_name",
    "--api-key": "vllm_server_api_key (kept out of the process list)",
    "--tensor-parallel-size": "vllm_server_tensor_parallel_size",
    "-tp": "vllm_server_tensor_parallel_size",
    "--dtype": "vllm_server_dtype",
    "--quantization": "vllm_server_quantization",
    "-q": "vllm_server_quantization",
    "--gpu-memory-utilization": "vllm_server_gpu_memory_utilization",
    "--max-model-len": "vllm_server_max_model_len",
    "--device": "vllm_server_device",
    "--shutdown-timeout": "vllm_server_shutdown_timeout",
}
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")
# what vLLM 0.32/0.33 allocate in /dev/shm for their engine queues, with room to spare
MIN_SHM_MIB = 512


def size_mib(size: str) -> float:
    """Docker's size notation ('16g', '512m', '1073741824') in MiB."""
    unit = size[-1].lower() if size[-1].isalpha() else "b"
    return int(size.rstrip("bkmgBKMG")) * {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit] / 1024**2


def tensor_parallel_size(p: dict[str, Any]) -> int:
    """The tensor parallel size: the one given, else the number of listed GPUs (1 on CPU)."""
    if p.get("device") == "cpu":
        return 1
    return int(p.get("tensor_parallel_size") or 0) or max(len(p.get("gpus") or []), 1)


def param_errors(p: dict[str, Any]) -> list[str]:
    """Every problem with the variables, each naming the variable and what was expected: the rules
    on their values, then the files they name on the controller."""
    return value_errors(p) + controller_file_errors(p)


def value_errors(p: dict[str, Any]) -> list[str]:
    """The rules on the variables' values and between variables (no file system access)."""
    errors: list[str] = []

    def bad(var: str, msg: str) -> None:
        errors.append(f"vllm_server_{var}: {msg}")

    root = str(p.get("model_root") or "")
    if not root.startswith("/"):
        bad("model_root", f"expected the absolute host path that holds the model directory "
                          f"(the seed's MODEL_ABSOLUTE_ROOT), got {root!r}")
    elif root != "/" and root.endswith("/"):
        bad("model_root", f"drop the trailing slash: {root!r}")
    mdir = str(p.get("model_dir") or "")
    if not mdir or "/" in mdir or mdir in (".", ".."):
        bad("model_dir", f"expected the model's directory name under vllm_server_model_root "
                         f"(the seed's MODEL_DIR, no slashes), got {mdir!r}")
    name = str(p.get("model_name") or "")
    if not name or any(c.isspace() for c in name):
        bad("model_name", f"expected the name clients send as \"model\" (no spaces), got {name!r}")
    port = p.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        bad("port", f"expected a TCP port 1-65535, got {port!r}")
    device = p.get("device")
    if device not in ("cuda", "cpu"):
        bad("device", f"expected 'cuda' or 'cpu', got {device!r}")
    gpus = p.get("gpus")
    if not isinstance(gpus, list) or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 0
                                             for g in gpus):
        bad("gpus", f"expected a list of GPU indices such as [0, 1] (the seed's CUDA_VISIBLE_DEVICES), "
                    f"got {gpus!r}")
    elif device == "cuda":
        if not gpus:
            bad("gpus", "list at least one GPU index for vllm_server_device 'cuda'")
        elif len(set(gpus)) != len(gpus):
            bad("gpus", f"GPU indices listed twice: {gpus!r}")
        tp = int(p.get("tensor_parallel_size") or 0)
        if gpus and tp and (tp > len(gpus) or len(gpus) % tp):
            bad("tensor_parallel_size", f"{tp} does not divide the {len(gpus)} listed GPUs {gpus!r}")
    util = p.get("gpu_memory_utilization")
    if not isinstance(util, (int, float)) or not 0 < float(util) <= 1:
        bad("gpu_memory_utilization", f"expected a fraction in (0, 1], got {util!r}")
    shm = str(p.get("shm_size") or "")
    if shm and not SIZE.match(shm):
        bad("shm_size", f"expected a size such as '16g' (or '' for --ipc=host), got {shm!r}")
    elif shm and size_mib(shm) < MIN_SHM_MIB:
        bad("shm_size", f"{shm!r} is too small: vLLM's queues need at least {MIN_SHM_MIB} MiB ('1g' or more)")
    key = str(p.get("api_key") or "")
    if key and (any(c.isspace() for c in key) or len(key) < 8):
        bad("api_key", "expected at least 8 characters and no whitespace")
    keep = p.get("image_keep", 2)
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        bad("image_keep", f"expected 1 or more (the running image is always kept), got {keep!r}")
    extra = p.get("extra_args")
    if not isinstance(extra, list) or not all(isinstance(a, (str, int, float)) for a in extra):
        bad("extra_args", f"expected a list of strings such as ['--max-num-seqs', '64'], got {extra!r}")
    else:
        for a in extra:
            flag = str(a).split("=", 1)[0]
            if flag in OWNED_ARGS:
                bad("extra_args", f"{flag} is set by the role: use {OWNED_ARGS[flag]} instead")
    if not p.get("image_build", True) and not str(p.get("image_given") or ""):
        bad("image", "set the image to run when vllm_server_image_build is false")
    if device == "cuda" and p.get("image_build", True) and not str(p.get("image_cuda") or ""):
        bad("image_cuda_version", f"the CUDA release vLLM {p.get('vllm_version')} is built for is not in this "
                                  f"role's table ({', '.join(p.get('cuda_known_releases') or [])}); set it (for "
                                  "example \"12.8\"), so that preflight can check the host's driver against it.")
    preload = p.get("image_preload") or []
    if not isinstance(preload, list) or not all(isinstance(i, dict) and i.get("name") and i.get("archive")
                                                for i in preload):
        bad("image_preload", f"expected a list of {{name, archive}} such as [{{'name': 'debian:bookworm-slim', "
                             f"'archive': '/srv/images/debian.tar'}}], got {preload!r}")
    for var in ("env", "secret_env"):
        env = p.get(var) or {}
        if not isinstance(env, dict):
            bad(var, f"expected a mapping of environment variables, got {env!r}")
            continue
        for k, v in env.items():
            if not ENV_NAME.match(str(k)):
                bad(var, f"{k!r} is not a valid environment variable name")
            if "\n" in str(v):
                bad(var, f"the value of {k} holds a newline")
    return errors


def controller_file_errors(p: dict[str, Any]) -> list[str]:
    """The files the variables name on the controller: the build's CA bundle and wheelhouse, the
    image archives to preload."""
    errors: list[str] = []
    if p.get("image_build", True):
        ca = str(p.get("build_ca_bundle") or "")
        if ca and not os.path.isfile(ca):
            errors.append(f"vllm_server_build_ca_bundle: {ca} is not a file on the controller")
        wheels = str(p.get("build_wheelhouse") or "")
        if wheels and not os.path.isdir(wheels):
            errors.append(f"vllm_server_build_wheelhouse: {wheels} is not a directory on the controller")
    preload = p.get("image_preload") or []
    for i in preload if isinstance(preload, list) else []:
        if isinstance(i, dict) and i.get("archive") and not os.path.isfile(str(i["archive"])):
            errors.append(f"vllm_server_image_preload: archive {i['archive']} for {i.get('name')} is not a file "
                          "on the controller")
    return errors


def vllm_args(p: dict[str, Any]) -> list[str]:
    """Arguments after the image name: passed by the entrypoint to vLLM's OpenAI server."""
    args: list[str] = []
    if p.get("device") != "cpu":
        args += ["--tensor-parallel-size", str(tensor_parallel_size(p))]
        args += ["--gpu-memory-utilization", str(p.get("gpu_memory_utilization"))]
    if p.get("dtype") and p.get("dtype") != "auto":
        args += ["--dtype", str(p["dtype"])]
    if p.get("quantization"):
        args += ["--quantization", str(p["quantization"])]
    if int(p.get("max_model_len") or 0):
        args += ["--max-model-len", str(int(p["max_model_len"]))]
    if int(p.get("shutdown_timeout") or 0):
        args += ["--shutdown-timeout", str(int(p["shutdown_timeout"]))]
    if p.get("enforce_eager"):
        args.append("--enforce-eager")
    if p.get("trust_remote_code"):
        args.append("--trust-remote-code")
    return args + [str(a) for a in p.get("extra_args") or []]


def docker_run_args(p: dict[str, Any]) -> list[str]:
    """The whole `docker run` argument vector of the service (the API key is not in it)."""
    name = p["instance"]
    port = int(p["port"])
    args = [
        p.get("docker_bin", "/usr/bin/docker"), "run", "--rm", "--name", name, "--pull", "never",
        "--label", f"vllm-server.instance={name}",
        "--env-file", p["env_file"],
        "-e", f"MODEL_DIR={p['model_dir']}", "-e", f"MODEL_NAME={p['model_name']}",
        "-e", f"VLLM_PORT={port}",
        # vLLM's engine talks to itself over this address; without it, it advertises the host's
        "-e", "VLLM_HOST_IP=127.0.0.1",
    ]
    for k, v in sorted((p.get("env") or {}).items()):
        args += ["-e", f"{k}={v}"]
    args += ["-p", f"{p.get('bind_address') or '0.0.0.0'}:{port}:{port}"]
    args += ["-v", f"{p['model_root']}:{CONTAINER_MODEL_ROOT}:ro", "-v", f"{p['cache_dir']}:{CONTAINER_CACHE}"]
    args += [f"--shm-size={p['shm_size']}"] if p.get("shm_size") else ["--ipc=host"]
    if p.get("device") == "cpu":
        args += ["-e", f"VLLM_CPU_KVCACHE_SPACE={int(p.get('cpu_kvcache_space_gib') or 1)}"]
    else:
        # docker's --gpus takes a CSV list: the inner double quotes keep "device=2,3" one field
        devices = ",".join(str(g) for g in p["gpus"])
        args += ["--gpus", f'"device={devices}"', "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    return args + [p["image"]] + vllm_args(p)


def systemd_quote(arg: str) -> str:
    """Quote one argument for a systemd Exec line (systemd expands % specifiers and $VARS)."""
    s = str(arg).replace("%", "%%").replace("$", "$$")
    if s and not re.search(r'[\s"\'\\;]', s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def command_line(p: dict[str, Any]) -> str:
    """`docker run ...` as one systemd ExecStart value."""
    return " ".join(systemd_quote(a) for a in docker_run_args(p))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vllm_server_param_errors": param_errors,
            "vllm_server_docker_run_args": docker_run_args,
            "vllm_server_command_line": command_line,
            "vllm_server_tensor_parallel_size": tensor_parallel_size,
        }
