"""Several vLLM instances on one host, as data (issue 10): ``vllm_server_instances``.

A host runs the instances of ``vllm_server_instances``, a list of mappings that each name the role's
variables without their ``vllm_server_`` prefix (``name`` for ``vllm_server_instance``), for example
two models on GPUs 0-3 and 4-7 of one 8-GPU host::

    vllm_server_instances:
      - {name: llama, model_dir: Llama-3.1-70B-Instruct, gpus: [0, 1, 2, 3], port: 8001}
      - {name: qwen, model_dir: Qwen2.5-32B-Instruct, gpus: [4, 5, 6, 7], port: 8002,
         extra_args: ["--max-num-seqs", "64"]}

An entry's values lie over the host's single-instance variables (``__vllm_server_params``); without
the list, those variables are the one-element case. Each instance is then checked on its own by
``vllm_server_param_errors``, and the set together here: names, ports, GPUs and cache directories
used once, and only the settings an instance may have of its own (the image, its build and the
Docker engine are the host's). Plain functions, unit-tested without Ansible running.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from ansible.errors import AnsibleFilterError

# the settings an instance may have of its own; everything else is the host's (one image per host)
PER_INSTANCE = frozenset({
    "instance", "model_root", "model_dir", "model_name", "gpus", "tensor_parallel_size", "port",
    "bind_address", "unauthenticated_remote_access", "allowed_sources", "cors_origins", "fastapi_docs",
    "dtype", "quantization", "gpu_memory_utilization", "max_model_len", "enforce_eager", "trust_remote_code",
    "extra_args", "api_key", "shm_size", "cpu_kvcache_space_gib", "env", "secret_env", "cache_dir",
    "pids_limit", "restart", "restart_sec", "shutdown_timeout", "health_timeout", "verify",
    "verify_prompt", "verify_max_tokens",
})
WHERE = "vllm_server_instances"


def _entries(listed: Any) -> list[Any]:
    """The list as given: a list, or the JSON text of one (-e, INI, surveys give strings)."""
    if listed is None or listed == "":
        return []
    if isinstance(listed, str):
        try:
            listed = json.loads(listed)
        except json.JSONDecodeError as err:
            raise AnsibleFilterError(f"{WHERE}: expected a list of mappings (name, model_dir, gpus, port, ...), "
                             f"got text that is not JSON ({err.msg})") from None
    if not isinstance(listed, list):
        raise AnsibleFilterError(f"{WHERE}: expected a list of mappings (name, model_dir, gpus, port, ...), "
                         f"got {type(listed).__name__}")
    return listed


def _gpus(value: Any) -> Any:
    """"0,1" (as CUDA_VISIBLE_DEVICES writes it) as [0, 1]; anything else as given, for the checks."""
    if isinstance(value, str):
        words = [w.strip() for w in value.split(",") if w.strip()]
        return [int(w) if w.isdigit() else w for w in words]
    return value


def instances(single: dict[str, Any], listed: Any = None) -> list[dict[str, Any]]:
    """The parameters of every instance the host runs: each entry over the single-instance ones.
    Raises AnsibleFilterError, naming the entry and the key, for what is not a mapping, an unknown or a
    host-wide setting, or a missing name."""
    entries = _entries(listed)
    if not entries:
        return [dict(single)]
    result = []
    default_cache = single.get("cache_dir", "")
    cache_per_name = posixpath.basename(default_cache) == single.get("instance")
    for i, entry in enumerate(entries):
        where = f"{WHERE}[{i}]"
        if not isinstance(entry, dict):
            raise AnsibleFilterError(f"{where}: expected a mapping (name, model_dir, gpus, port, ...), "
                             f"got {type(entry).__name__}")
        keys = {("instance" if k == "name" else str(k).removeprefix("vllm_server_")): v for k, v in entry.items()}
        if "instance" not in keys or keys["instance"] in (None, ""):
            raise AnsibleFilterError(f"{where}.name: every instance needs a name (its unit, container and "
                                     f"cache directory are named after it)")
        unknown = sorted(k for k in keys if k not in single)
        if unknown:
            raise AnsibleFilterError(f"{where}.{unknown[0]}: not a setting of the vllm_server role")
        host_wide = sorted(k for k in keys if k not in PER_INSTANCE)
        if host_wide:
            raise AnsibleFilterError(f"{where}.{host_wide[0]}: a setting of the host, not of one instance "
                             f"(set vllm_server_{host_wide[0]} for the host)")
        params = {**single, **keys}
        if "gpus" in keys:
            params["gpus"] = _gpus(keys["gpus"])
        if "model_name" not in keys and "model_dir" in keys:
            params["model_name"] = keys["model_dir"]
        if "cache_dir" not in keys and cache_per_name:
            params["cache_dir"] = posixpath.join(posixpath.dirname(default_cache), str(params["instance"]))
        result.append(params)
    return result


def instance_set_errors(params: list[dict[str, Any]]) -> list[str]:
    """What the instances of one host cannot share: a name, a port, a GPU, a cache directory."""
    errors = []
    seen: dict[str, dict[Any, str]] = {"instance": {}, "port": {}, "cache_dir": {}, "gpu": {}}

    def once(kind: str, value: Any, name: str, what: str) -> None:
        other = seen[kind].get(value)
        if other is None:
            seen[kind][value] = name
        elif other == name:
            errors.append(f"{WHERE}: the name {name!r} is given to two instances")
        else:
            errors.append(f"{WHERE}: {what} is in both {other!r} and {name!r}")

    for p in params:
        name = str(p.get("instance"))
        once("instance", name, name, f"the name {name!r}")
        once("port", str(p.get("port")), name, f"port {p.get('port')}")
        once("cache_dir", p.get("cache_dir"), name, f"the cache directory {p.get('cache_dir')}")
        if p.get("device") == "cuda" and isinstance(p.get("gpus"), list):
            for gpu in dict.fromkeys(p["gpus"]):
                once("gpu", gpu, name, f"GPU {gpu}")
    return list(dict.fromkeys(errors))


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vllm_server_instances": instances,
            "vllm_server_instance_set_errors": instance_set_errors,
        }
