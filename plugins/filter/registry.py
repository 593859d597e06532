"""Filters of the docker_registry role and of vllm_server's registry distribution.

A registry's name reaches a certificate, a directory under /etc/docker/certs.d and image
references: every name is checked here (an IP address or a DNS name, a port 1-65535), and anything
else stops the run before the host changes, naming the variable it came from.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ansible.errors import AnsibleFilterError

LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")
# the repository part of an image reference (lower case, as Docker requires)
REPOSITORY = re.compile(r"^[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*$")


def _name(value: Any, where: str) -> tuple[str, bool]:
    """A host name or an IP address, and whether it is an address."""
    text = "" if value is None else str(value).strip()
    try:
        return str(ipaddress.ip_address(text.strip("[]"))), True
    except ValueError:
        pass
    if not HOSTNAME.match(text):
        raise AnsibleFilterError(f"{where}: expected a host name or an IP address, got {value!r}")
    return text, False


def registry_names(names: Any, where: str = "docker_registry_address") -> list[str]:
    """subjectAltName entries (DNS:name, IP:address) for the registry's certificate, each name checked."""
    if isinstance(names, str) or not isinstance(names, (list, tuple)):
        names = [names]
    out: list[str] = []
    for i, value in enumerate(names):
        name, is_ip = _name(value, where if i == 0 else f"docker_registry_extra_names[{i - 1}]")
        entry = f"IP:{name}" if is_ip else f"DNS:{name}"
        if entry not in out:
            out.append(entry)
    return out


def registry_reference(value: Any, where: str | None = None, port: Any = None) -> str:
    """A registry as Docker names it, host[:port] (an IPv6 address in brackets), checked.

    With port, value is the host alone (an IPv6 address with or without brackets): the docker_registry
    role's address, which errors name unless told otherwise; without, vllm_server_image_registry."""
    where = where or ("docker_registry_address" if port is not None else "vllm_server_image_registry")
    text = "" if value is None else str(value).strip()
    host = text
    if port is not None:
        port = str(port).strip()
    else:
        port = ""
        m = re.match(r"^\[([^\]]+)\](?::(.*))?$", text)
        if m:
            host, port = m.group(1), m.group(2) or ""
        elif text.count(":") == 1:
            host, port = text.split(":")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise AnsibleFilterError(f"{where}: expected host:port with a port 1-65535, got {value!r}")
    try:
        name, is_ip = _name(host, where)
    except AnsibleFilterError:
        raise AnsibleFilterError(f"{where}: expected host:port (a host name or an IP address), got {value!r}") from None
    if is_ip and ":" in name:
        name = f"[{name}]"
    return f"{name}:{port}" if port else name


def registry_repository(image: Any, registry: Any, prefix: str = "vllm-fleet") -> str:
    """The registry's repository for a local image name (its tag left off): <registry>/<prefix>/<name>."""
    text = str(image).strip()
    name = text.rsplit("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        name = name.rsplit(":", 1)[0]
    name = name.rsplit("/", 1)[-1].lower()
    repo = f"{prefix}/{name}"
    if not REPOSITORY.match(repo):
        raise AnsibleFilterError(f"vllm_server_image: {image!r} gives no valid repository name ({repo!r})")
    return f"{registry_reference(registry)}/{repo}"


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "docker_registry_names": registry_names,
            "docker_registry_reference": registry_reference,
            "docker_registry_repository": registry_repository,
        }
