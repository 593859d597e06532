"""Filters that turn the vllm_server role's variables into the unit's lines and the container's
command line, and refuse bad values first.

The role converts its variables to their declared types (plugins/action/role_arguments.py) and hands
them here as one dict without the ``vllm_server_`` prefix (``__vllm_server_params``). Preflight
asserts that ``vllm_server_param_errors`` is empty before anything on the host changes; the unit
template renders ``vllm_server_unit_lines``, whose every word goes through ``systemd_quote``, which
refuses what a unit file cannot carry. All plain functions, unit-tested without Ansible running.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import re
from typing import Any
from urllib.parse import unquote

CONTAINER_MODEL_ROOT = "/workspace/models"
CONTAINER_CACHE = "/workspace/cache"
# The secret environment (the API key, HF_TOKEN) reaches the container as this read-only file, read
# by the image's entrypoint at start: never as -e or --env-file, which `docker inspect` shows.
CONTAINER_SECRETS = "/run/secrets/vllm-server.env"
# Restricts who reaches the published port (files/vllm-server-firewall, installed by the role).
FIREWALL = "/usr/local/libexec/vllm-server-firewall"
# The image's unprivileged user (roles/vllm_server/files/Dockerfile): it owns the cache directory.
CONTAINER_UID = 2000

# Options the role sets itself: given again in extra_args they would fight the role's values, or
# (the API key) put a secret in the unit and the process list. vLLM reads `_` as `-` and takes any
# unambiguous prefix of a long option, so a flag is compared in that form; --config would read all
# of them from a file.
OWNED_ARGS = {
    "--host": "vllm_server_bind_address",
    "--port": "vllm_server_port",
    "--model": "vllm_server_model_root / vllm_server_model_dir",
    "--served-model-name": "vllm_server_model_name",
    "--api-key": "vllm_server_api_key (kept out of the unit and the process list)",
    "--tensor-parallel-size": "vllm_server_tensor_parallel_size",
    "--dtype": "vllm_server_dtype",
    "--quantization": "vllm_server_quantization",
    "--gpu-memory-utilization": "vllm_server_gpu_memory_utilization",
    "--max-model-len": "vllm_server_max_model_len",
    "--device": "vllm_server_device",
    "--shutdown-timeout": "vllm_server_shutdown_timeout",
    "--allowed-origins": "vllm_server_cors_origins",
    "--middleware": "the image's entrypoint (it adds the key check on every path)",
    "--config": "the role's variables (a config file could set any of the options above)",
    "--trust-remote-code": "vllm_server_trust_remote_code",
    "--enforce-eager": "vllm_server_enforce_eager",
}
OWNED_SHORT = {"-tp": "vllm_server_tensor_parallel_size", "-q": "vllm_server_quantization"}
# Environment the role or the image sets: in vllm_server_env they would change what the role decided
# (the port, the model, the GPUs) or put the key in the unit.
RESERVED_ENV = {
    "VLLM_API_KEY": "vllm_server_api_key", "MODEL_DIR": "vllm_server_model_dir",
    "MODEL_NAME": "vllm_server_model_name", "VLLM_PORT": "vllm_server_port", "VLLM_HOST_IP": "the role",
    "VLLM_MODELS_ROOT": "the role", "VLLM_SECRETS_FILE": "the role",
    "VLLM_CPU_KVCACHE_SPACE": "vllm_server_cpu_kvcache_space_gib", "CUDA_VISIBLE_DEVICES": "vllm_server_gpus",
    "NVIDIA_VISIBLE_DEVICES": "vllm_server_gpus", "HF_HOME": "vllm_server_cache_dir",
    "VLLM_CACHE_ROOT": "vllm_server_cache_dir", "HOME": "the image",
    # the paths the image's key check leaves open: more would open the API without the key
    "VLLM_AUTH_OPEN_PATHS": "the image's key check (only /health and /ping are open)",
}
SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIALS?)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# the Dockerfile's FROM images: pulled, so pinned by digest
BASE_IMAGE_ARGS = ("CUDA_BASE_IMAGE", "CUDA_DEVEL_IMAGE", "CPU_BASE_IMAGE")
DIGEST_PINNED = re.compile(r"@sha256:[0-9a-f]{64}$")


def url_userinfo(value: str, schemeless: bool = True) -> str:
    """The user[:password] part of a URL, as a URL parser finds it (up to the authority's last '@',
    so a password may hold '@'); also without a scheme (a proxy written user:pw@proxy:3128) unless
    schemeless is false (an image reference, name:tag@sha256:..., is no URL); '' when there is none."""
    if "://" not in value and not schemeless:
        return ""
    rest = value.split("://", 1)[1] if "://" in value else value
    authority = re.split(r"[/?#\s]", rest, maxsplit=1)[0]
    return authority.rpartition("@")[0]


def without_credentials(value: str) -> str:
    userinfo = url_userinfo(value)
    return value.replace(userinfo + "@", "<credentials>@", 1) if userinfo else value


# The build arguments that may carry credentials (user:password@ in a URL), from the variables
# vllm_server_build_pip_index_url, _build_pip_extra_index_url, _build_http(s)_proxy and _vllm_git_url.
# One that does reaches the build only through the BuildKit secret build-env (install-vllm.sh reads
# it in the step that needs it, these names only): Docker writes build arguments into the image's
# history, which anyone who gets the image reads.
BUILD_SECRET_ARGS = ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                     "https_proxy", "VLLM_GIT_URL")
SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
INSTANCE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Units of the system and of the roles below this one: an instance of that name would replace them.
NOT_OURS = re.compile(r"^(docker|dockerd|containerd|ssh|sshd|cron|crond|dbus|getty|network|networking|"
                      r"systemd-.*|nvidia-.*|multi-user|default|basic|rescue|emergency|reboot|poweroff)$")
# A Docker image reference: [registry[:port]/]path[:tag][@digest], lower case path components.
IMAGE = re.compile(r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                   r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$")
VERSION = re.compile(r"^[0-9]+(\.[0-9]+)*([a-z0-9.+-]*)$")
GIT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
ORIGIN = re.compile(r"^(\*|https?://[A-Za-z0-9.-]+(:[0-9]+)?)$")
QUANTIZATION = re.compile(r"^[a-z0-9_-]*$")
# Host directories the role creates and owns (the cache, the build context): never a system one.
SYSTEM_DIRS = {"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root", "/run",
               "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/cache", "/var/log", "/var/lib/docker"}
# Variables whose values are never printed, even in an error.
SECRETS = {"api_key", "secret_env"}
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


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def bind_address(p: dict[str, Any]) -> str:
    """The address the port is published on: the one given; else every address when clients must
    send a key (or the inventory allows unauthenticated remote access), else 127.0.0.1 only."""
    given = str(p.get("bind_address") or "")
    if given:
        return given
    return "0.0.0.0" if (p.get("api_key") or p.get("unauthenticated_remote_access")) else "127.0.0.1"


def local_url(p: dict[str, Any]) -> str:
    """Where the host itself reaches the endpoint (verification)."""
    address = bind_address(p)
    if address in ("0.0.0.0", "::"):
        address = "127.0.0.1"
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{int(p['port'])}"


def control_errors(p: dict[str, Any]) -> list[str]:
    """Control characters in any string that reaches the unit, the env file, a path or a command
    (systemd ends a line at \\r as well as \\n). Secret values are never printed."""
    errors: list[str] = []

    def walk(var: str, where: str, value: Any) -> None:
        if isinstance(value, str):
            m = CONTROL.search(value)
            if m:
                errors.append(f"vllm_server_{var}: {where}holds a control character ({m.group()!r} at position "
                              f"{m.start()}); expected printable text")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(var, f"the key {k!r} " if CONTROL.search(str(k)) is None else "a key ", str(k))
                walk(var, f"the value of {str(k)!r} ", v)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(var, f"item {i} ", v)

    for var, value in p.items():
        if var not in ("verify_prompt",):  # sent as JSON only
            walk(var, "", value)
    # a key name with control characters was reported under "a key": drop the duplicate wording
    return sorted(set(errors), key=errors.index)


def host_path_error(var: str, path: str, what: str, owned: bool = False) -> str | None:
    """A host path that reaches a mount (-v a:b), a unit or a command: absolute, normal, no ':' or ','."""
    if not path.startswith("/") or posixpath.normpath(path) != path or "//" in path:
        return f"vllm_server_{var}: expected {what} as an absolute, normalised host path (no '..', no trailing " \
               f"slash), got {path!r}"
    if ":" in path or "," in path:
        return f"vllm_server_{var}: {path!r} holds ':' or ',', which Docker's -v reads as separators"
    if owned and path in SYSTEM_DIRS:
        return f"vllm_server_{var}: {path!r} is a system directory; the role creates and owns this directory, " \
               "so give one of its own (such as /var/cache/vllm-server/<instance>)"
    return None


def extra_arg_errors(extra: list[str], api_key: str) -> list[str]:
    errors = []
    for a in extra:
        word = str(a)
        if api_key and api_key in word:
            errors.append("vllm_server_extra_args: an item holds the API key; it belongs in vllm_server_api_key only")
            continue
        flag = word.split("=", 1)[0]
        if flag in OWNED_SHORT:
            errors.append(f"vllm_server_extra_args: {flag} is set by the role: use {OWNED_SHORT[flag]} instead")
            continue
        if not flag.startswith("--") or flag == "--":
            continue
        norm = "--" + flag[2:].replace("_", "-")
        owned = [o for o in OWNED_ARGS if o == norm or (len(norm) > 3 and o.startswith(norm))]
        if owned:
            what = owned[0] if owned[0] == norm else f"{norm} (a prefix vLLM reads as {owned[0]})"
            errors.append(f"vllm_server_extra_args: {what} is set by the role: use {OWNED_ARGS[owned[0]]} instead")
    return errors


def param_errors(p: dict[str, Any]) -> list[str]:
    """Every problem with the variables, each naming the variable and what was expected: the rules
    on their values, then the files they name on the controller."""
    return value_errors(p) + controller_file_errors(p)


def value_errors(p: dict[str, Any]) -> list[str]:  # noqa: C901, PLR0912, PLR0915  # one rule per variable
    """The rules on the variables' values and between them (no file system access). Types are the
    argument spec's, already converted; only values are checked here."""
    errors = control_errors(p)
    if errors:  # the rules below would quote the same values again
        return errors

    def bad(var: str, msg: str) -> None:
        errors.append(f"vllm_server_{var}: {msg}")

    instance = str(p.get("instance") or "")
    if not INSTANCE.match(instance):
        bad("instance", f"expected a name such as vllm-server or llama-70b (a lower case letter, then up to 62 lower "
                        f"case letters, digits, '-' or '_'): it names the systemd unit, the container and files; "
                        f"got {instance!r}")
    elif NOT_OURS.match(instance):
        bad("instance", f"{instance!r} is the name of a system unit; give the instance a name of its own")
    root = str(p.get("model_root") or "")
    if not root.startswith("/"):
        bad("model_root", f"expected the absolute host path that holds the model directory "
                          f"(the seed's MODEL_ABSOLUTE_ROOT), got {root!r}")
    elif root != "/" and root.endswith("/"):
        bad("model_root", f"drop the trailing slash: {root!r}")
    else:
        error = host_path_error("model_root", root, "the directory that holds the model directory")
        if error:
            errors.append(error)
    mdir = str(p.get("model_dir") or "")
    if not mdir or "/" in mdir or mdir in (".", "..") or ":" in mdir:
        bad("model_dir", f"expected the model's directory name under vllm_server_model_root "
                         f"(the seed's MODEL_DIR, no slashes), got {mdir!r}")
    name = str(p.get("model_name") or "")
    if not name or any(c.isspace() for c in name):
        bad("model_name", f"expected the name clients send as \"model\" (no spaces), got {name!r}")
    port = p.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        bad("port", f"expected a TCP port 1-65535, got {port!r}")
    address = str(p.get("bind_address") or "")
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            bad("bind_address", f"expected an IP address of the host such as 127.0.0.1, 0.0.0.0 or 10.0.0.5 (or '' to "
                                f"let the role choose), got {address!r}")
    if not p.get("api_key") and not p.get("unauthenticated_remote_access") and address and not is_loopback(address):
        bad("bind_address", f"{address} would let other machines use the endpoint without a key. Set "
                            "vllm_server_api_key, or bind to 127.0.0.1 (behind a proxy or the gateway), or say "
                            "vllm_server_unauthenticated_remote_access: true")
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
        if tp < 0:
            bad("tensor_parallel_size", f"expected 0 (the number of GPUs listed) or more, got {tp}")
        elif gpus and tp and (tp > len(gpus) or len(gpus) % tp):
            bad("tensor_parallel_size", f"{tp} does not divide the {len(gpus)} listed GPUs {gpus!r}")
    util = p.get("gpu_memory_utilization")
    if not isinstance(util, (int, float)) or not 0 < float(util) <= 1:
        bad("gpu_memory_utilization", f"expected a fraction in (0, 1], got {util!r}")
    quant = str(p.get("quantization") or "")
    if not QUANTIZATION.match(quant):
        bad("quantization", f"expected a method name such as awq, gptq or fp8 (or ''), got {quant!r}")
    for var, low, what in (("max_model_len", 0, "0 (the model's own) or more"),
                           ("cpu_kvcache_space_gib", 1, "1 GiB or more"),
                           ("restart_sec", 0, "0 seconds or more"),
                           ("shutdown_timeout", 0, "0 seconds or more"),
                           ("health_timeout", 1, "1 second or more"),
                           ("verify_max_tokens", 1, "1 or more"),
                           ("verify_log_lines", 0, "0 or more"),
                           ("build_timeout", 60, "60 seconds or more"),
                           ("build_max_jobs", 1, "1 or more"),
                           ("pids_limit", 256, "256 or more (vLLM runs a thread per core in each worker)")):
        value = p.get(var)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
            bad(var, f"expected {what}, got {value!r}")
    shm = str(p.get("shm_size") or "")
    if shm and not SIZE.match(shm):
        bad("shm_size", f"expected a size such as '16g' (or '' for --ipc=host), got {shm!r}")
    elif shm and size_mib(shm) < MIN_SHM_MIB:
        bad("shm_size", f"{shm!r} is too small: vLLM's queues need at least {MIN_SHM_MIB} MiB ('1g' or more)")
    for var in ("log_max_size",):
        size = str(p.get(var) or "")
        if var in p and not re.match(r"^[0-9]+[kmg]$", size):
            bad(var, f"expected a size such as '50m', got {size!r}")
    files = p.get("log_max_files")
    if files is not None and (not isinstance(files, int) or isinstance(files, bool) or files < 1):
        bad("log_max_files", f"expected 1 or more, got {files!r}")
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
        errors += extra_arg_errors(extra, key)
    sources = p.get("allowed_sources")
    if sources is not None:
        if not isinstance(sources, list):
            bad("allowed_sources", f"expected a list of addresses or networks such as ['10.0.0.5', '10.0.1.0/24'], "
                                   f"got {sources!r}")
        else:
            for s in sources:
                try:
                    ipaddress.ip_network(str(s), strict=False)
                    if ":" in str(s):
                        raise ValueError
                except ValueError:
                    bad("allowed_sources", f"expected IPv4 addresses or networks such as 10.0.1.0/24, got {s!r}")
            # the rules are iptables (IPv4) rules: on an IPv6 address the port would be open to all
            if sources and ":" in address:
                bad("allowed_sources", f"is enforced for IPv4 only, and vllm_server_bind_address {address} "
                                       "publishes the port on IPv6: bind to an IPv4 address (0.0.0.0 or the "
                                       "host's own), or leave vllm_server_allowed_sources empty")
    origins = p.get("cors_origins")
    if origins is not None and (not isinstance(origins, list) or not all(ORIGIN.match(str(o)) for o in origins)):
        bad("cors_origins", f"expected a list of origins such as ['https://chat.example.com'] ([] for none), "
                            f"got {origins!r}")
    for var, what in (("cache_dir", "the cache directory"), ("build_dir", "the build context directory")):
        if var in p:
            error = host_path_error(var, str(p.get(var) or ""), what, owned=True)
            if error:
                errors.append(error)
    if "docker_bin" in p:
        error = host_path_error("docker_bin", str(p.get("docker_bin") or ""), "the docker client")
        if error:
            errors.append(error)
    if not p.get("image_build", True) and not str(p.get("image_given") or ""):
        bad("image", "set the image to run when vllm_server_image_build is false")
    for var in ("image_given", "image_name"):
        ref = str(p.get(var) or "")
        if ref and not IMAGE.match(ref):
            bad("image" if var == "image_given" else var,
                f"expected a Docker image reference such as registry.example.com/vllm-server:0.33.0, got {ref!r}")
    for var in ("vllm_version", "vllm_cpu_version"):
        version = str(p.get(var) or "")
        if var in p and not VERSION.match(version):
            bad(var, f"expected a release number such as 0.33.0, got {version!r}")
    cuda = str(p.get("image_cuda_version") or "")
    if cuda and not re.match(r"^[0-9]+\.[0-9]+$", cuda):
        bad("image_cuda_version", f"expected a CUDA release such as 12.8 (or ''), got {cuda!r}")
    ref = str(p.get("vllm_git_ref") or "")
    if "vllm_git_ref" in p and not GIT_REF.match(ref):
        bad("vllm_git_ref", f"expected a tag, branch or commit such as v0.33.0, got {ref!r}")
    # a build argument is written into the image's history (`docker history`), readable by anyone who
    # gets the image: credentials come only through the variables that hand them to the build as a
    # BuildKit secret (BUILD_SECRET_ARGS; named, never printed)
    for arg, value in (p.get("build_args") or {}).items():
        if url_userinfo(str(value), schemeless=False):
            bad("build_args", f"{arg}: expected a value without credentials (user:password@...): build "
                              "arguments are kept in the image's history; a pip index, a proxy or a git URL "
                              "with credentials goes in vllm_server_build_pip_index_url, "
                              "vllm_server_build_pip_extra_index_url, vllm_server_build_http(s)_proxy or "
                              "vllm_server_vllm_git_url, which hand it to the build as a BuildKit secret")
    if "BUILD_SECRETS" in (p.get("build_args") or {}):
        bad("build_args", "BUILD_SECRETS is the role's own (what the secret build-env holds, credentials hidden)")
    preloaded = {str(i.get("name")) for i in (p.get("image_preload") or []) if isinstance(i, dict)}
    for arg, value in (p.get("build_args") or {}).items():
        if not ENV_NAME.match(str(arg)):
            bad("build_args", f"{arg!r} is not a valid build argument name")
        elif arg in BASE_IMAGE_ARGS and not (DIGEST_PINNED.search(str(value)) or str(value) in preloaded):
            bad("build_args", f"{arg} must name its image by digest (name:tag@sha256:<64 hex digits>), so that "
                              f"a moved tag cannot change what is built; got {str(value)!r} (an image loaded "
                              "from vllm_server_image_preload is exempt: it is not pulled)")
    if device == "cuda" and p.get("image_build", True) and not str(p.get("image_cuda") or ""):
        bad("image_cuda_version", f"the CUDA release vLLM {p.get('vllm_version')} is built for is not in this "
                                  f"role's table ({', '.join(p.get('cuda_known_releases') or [])}); set it (for "
                                  "example \"12.8\"), so that preflight can check the host's driver against it.")
    preload = p.get("image_preload") or []
    if not isinstance(preload, list) or not all(isinstance(i, dict) and i.get("name") and i.get("archive")
                                                for i in preload):
        bad("image_preload", f"expected a list of {{name, archive}} such as [{{'name': 'debian:bookworm-slim', "
                             f"'archive': '/srv/images/debian.tar'}}], got {preload!r}")
    else:
        for item in preload:
            if not IMAGE.match(str(item["name"])):
                bad("image_preload", f"{item['name']!r} is not a Docker image reference")
    errors += env_errors(p)
    return errors


def build_secrets(args: dict[str, Any]) -> dict[str, dict[str, str]]:
    """The build arguments split in two: ``args``, those Docker may keep in the image's history, and
    ``secret_env``, the values with credentials (BUILD_SECRET_ARGS only), which the role writes to a
    root-only file and hands to the build as the BuildKit secret build-env. ``redacted`` stands for
    them in the image's tag: the URL without its credentials, so that a new password rebuilds nothing
    and no hash of a password is written anywhere."""
    out: dict[str, dict[str, str]] = {"args": {}, "secret_env": {}, "redacted": {}}
    for name, value in args.items():
        text = str(value)
        if name in BUILD_SECRET_ARGS and url_userinfo(text):
            out["secret_env"][name] = text
            out["redacted"][name] = without_credentials(text)
        else:
            out["args"][name] = text
    if out["redacted"]:
        # the *-secrets stages declare it before the install step: BuildKit's cache does not follow a
        # secret, so without it another index (or proxy, or repository) would reuse the old install
        out["args"]["BUILD_SECRETS"] = " ".join(f"{k}={v}" for k, v in sorted(out["redacted"].items()))
    return out


def buildkit_argv(b: dict[str, Any]) -> list[str]:
    """`docker build` with BuildKit (DOCKER_BUILDKIT=1) of a *-secrets stage: the secret build-env from
    a file, the build arguments without credentials (build_secrets took those out)."""
    argv = [str(b["docker_bin"]), "build", "--progress", "plain", "--file", f"{b['context']}/Dockerfile",
            "--target", str(b["stage"]), "--secret", f"id=build-env,src={b['secret_file']}", "--tag", str(b["image"])]
    for name, value in sorted((b.get("args") or {}).items()):
        argv += ["--build-arg", f"{name}={value}"]
    return [*argv, str(b["context"])]


def redact(lines: list[str], secret_env: dict[str, str]) -> list[str]:
    """A build's log lines with the credentials of the secret build-env replaced: each whole value, its
    user:password part and the password alone, as written and percent-decoded (a tool may print any
    of them). A password shorter than 4 characters is replaced only within those longer forms."""
    needles: set[str] = set()
    for value in secret_env.values():
        userinfo = url_userinfo(str(value))
        password = userinfo.partition(":")[2]
        for form in (str(value), userinfo, password):
            for text in (form, unquote(form)):
                if len(text) >= 4:  # noqa: PLR2004  # shorter ones would blank ordinary words
                    needles.add(text)
    out = []
    for line in lines:
        for needle in sorted(needles, key=len, reverse=True):
            line = line.replace(needle, "<credentials>")
        out.append(line)
    return out


def buildkit_error(client_version: str, buildx_rc: int) -> str:
    """Why this host's docker client cannot build with BuildKit secrets, or '' when it can. Docker
    20.10 to 22.x build with BuildKit themselves (DOCKER_BUILDKIT=1); from 23.0 the client hands the
    build to the buildx plugin, and says "BuildKit is enabled but the buildx component is missing"
    without it."""
    m = re.match(r"^(\d+)\.(\d+)", client_version.strip())
    if not m:
        return f"could not read the docker client's version (got {client_version.strip()!r})"
    version = (int(m.group(1)), int(m.group(2)))
    if version < (20, 10):
        return f"the docker client is {client_version.strip()}; BuildKit secrets need Docker 20.10 or newer"
    if version >= (23, 0) and buildx_rc != 0:
        return (f"the docker client is {client_version.strip()} and its buildx plugin is missing (`docker buildx "
                "version` failed); install it: docker-buildx-plugin from Docker's repository (the docker_engine "
                "role installs it with docker_engine_source: docker, but not on CentOS 7, where it is not "
                "assumed), docker-buildx from the distribution's where it has one")
    return ""


def env_errors(p: dict[str, Any]) -> list[str]:
    errors = []
    for var in ("env", "secret_env"):
        env = p.get(var) or {}
        if not isinstance(env, dict):
            # a secret is never printed, not even mistyped
            shown = "a value that is not one" if var in SECRETS else repr(env)
            errors.append(f"vllm_server_{var}: expected a mapping of environment variables, got {shown}")
            continue
        for k in env:
            k = str(k)
            if not ENV_NAME.match(k):
                errors.append(f"vllm_server_{var}: {k!r} is not a valid environment variable name")
            elif k in RESERVED_ENV:
                errors.append(f"vllm_server_{var}: {k} is set by the role from {RESERVED_ENV[k]}")
            elif var == "env" and SECRET_NAME.search(k.upper()):
                errors.append(f"vllm_server_env: {k} looks like a secret: put it in vllm_server_secret_env, which "
                              "goes to a root-only file instead of the unit")
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
    if p.get("enforce_eager") is True:
        args.append("--enforce-eager")
    if p.get("trust_remote_code") is True:
        args.append("--trust-remote-code")
    if not p.get("fastapi_docs"):
        args.append("--disable-fastapi-docs")
    # vLLM allows every origin by default; the role allows those listed (none by default)
    args.append("--allowed-origins=[" + ", ".join(f'"{o}"' for o in p.get("cors_origins") or []) + "]")
    return args + [str(a) for a in p.get("extra_args") or []]


def docker_run_args(p: dict[str, Any]) -> list[str]:
    """The whole `docker run` argument vector of the service: no secret in it, a locked-down container."""
    name = p["instance"]
    port = int(p["port"])
    address = bind_address(p)
    published = f"[{address}]" if ":" in address else address
    args = [
        p.get("docker_bin", "/usr/bin/docker"), "run", "--rm", "--name", name, "--pull", "never",
        "--label", f"vllm-server.instance={name}",
        # the secrets as a read-only file the entrypoint reads (not in `docker inspect`'s Env)
        "-v", f"{p['env_file']}:{CONTAINER_SECRETS}:ro",
        "-e", f"MODEL_DIR={p['model_dir']}", "-e", f"MODEL_NAME={p['model_name']}",
        "-e", f"VLLM_PORT={port}",
        # vLLM's engine talks to itself over this address; without it, it advertises the host's
        "-e", "VLLM_HOST_IP=127.0.0.1",
    ]
    for k, v in sorted((p.get("env") or {}).items()):
        args += ["-e", f"{k}={v}"]
    args += ["-p", f"{published}:{port}:{port}"]
    args += ["-v", f"{p['model_root']}:{CONTAINER_MODEL_ROOT}:ro", "-v", f"{p['cache_dir']}:{CONTAINER_CACHE}"]
    args += [f"--shm-size={p['shm_size']}"] if p.get("shm_size") else ["--ipc=host"]
    # locked down: the entrypoint starts as root only to read the secrets file, then drops to the
    # image's user with setpriv (which needs SETUID/SETGID); nothing gains privileges after that
    args += ["--security-opt", "no-new-privileges", "--cap-drop", "ALL", "--cap-add", "SETUID", "--cap-add", "SETGID",
             "--pids-limit", str(int(p.get("pids_limit") or 8192)),
             "--log-driver", "json-file", "--log-opt", f"max-size={p.get('log_max_size') or '50m'}",
             "--log-opt", f"max-file={int(p.get('log_max_files') or 3)}"]
    if p.get("device") == "cpu":
        args += ["-e", f"VLLM_CPU_KVCACHE_SPACE={int(p.get('cpu_kvcache_space_gib') or 1)}"]
    else:
        # docker's --gpus takes a CSV list: the inner double quotes keep "device=2,3" one field
        devices = ",".join(str(g) for g in p["gpus"])
        args += ["--gpus", f'"device={devices}"', "--ulimit", "memlock=-1", "--ulimit", "stack=67108864"]
    return args + [p["image"]] + vllm_args(p)


def systemd_quote(arg: Any) -> str:
    """One word of a unit file line, quoted for systemd (which expands % specifiers and $VARS).
    Refuses what a unit line cannot carry: systemd ends a line at \\n and \\r, and NUL and other
    control characters have no quoted form. Preflight refuses such values first, by name."""
    s = str(arg)
    m = CONTROL.search(s)
    if m:
        raise ValueError(f"a unit file cannot carry the control character {m.group()!r} (position {m.start()})")
    s = s.replace("%", "%%").replace("$", "$$")
    if s and not re.search(r'[\s"\'\\;]', s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(text: str) -> str:
    """Free text in a unit (Description=): one line, % specifiers escaped."""
    m = CONTROL.search(text)
    if m:
        raise ValueError(f"a unit file cannot carry the control character {m.group()!r} (position {m.start()})")
    return text.replace("%", "%%")


def quoted(words: list[Any]) -> str:
    return " ".join(systemd_quote(w) for w in words)


def command_line(p: dict[str, Any]) -> str:
    """`docker run ...` as one systemd ExecStart value."""
    return quoted(docker_run_args(p))


def unit_lines(p: dict[str, Any]) -> dict[str, str]:
    """Every value of the unit that carries a variable, each word quoted by systemd_quote."""
    docker, name = p.get("docker_bin", "/usr/bin/docker"), p["instance"]
    timeout = int(p.get("shutdown_timeout") or 0)
    port = int(p["port"])
    sources = [str(s) for s in p.get("allowed_sources") or []]
    # only the listed sources reach the published port (Docker's DOCKER-USER chain); none listed:
    # whatever an earlier setting restricted is opened again
    firewall = (quoted([FIREWALL, "allow", port, *sources]) if sources
                else "-" + quoted([FIREWALL, "remove", port]))
    return {
        "firewall_start": firewall,
        "firewall_stop": "-" + quoted([FIREWALL, "remove", port]),
        "description": unit_text(f"vLLM OpenAI-compatible server {name} ({p['model_name']} on {p['device']})"),
        "exec_start_pre": "-" + quoted([docker, "rm", "--force", name]),
        "exec_start": command_line(p),
        # vLLM drains for up to shutdown_timeout s; docker waits 30 s more before SIGKILL
        "exec_stop": quoted([docker, "stop", "--time", timeout + 30, name]),
        "timeout_stop_sec": str(timeout + 60),
        "restart": quoted([p.get("restart") or "always"]),
        "restart_sec": str(int(p.get("restart_sec") or 0)),
    }


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vllm_server_param_errors": param_errors,
            "vllm_server_docker_run_args": docker_run_args,
            "vllm_server_command_line": command_line,
            "vllm_server_unit_lines": unit_lines,
            "vllm_server_tensor_parallel_size": tensor_parallel_size,
            "vllm_server_bind_address": bind_address,
            "vllm_server_local_url": local_url,
            "vllm_server_build_secrets": build_secrets,
            "vllm_server_buildkit_error": buildkit_error,
            "vllm_server_buildkit_argv": buildkit_argv,
            "vllm_server_redact": redact,
        }
