"""Filters of the vllm_gateway role: the gateway's backends from the inventory, checked.

Every value that reaches HAProxy's configuration, its map and its ACL files passes through here:
server names, addresses, ports, model ids, keys and source networks are matched against what
HAProxy reads as one word, and anything else stops the run before the gateway changes, naming the
host and the variable it came from.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from ansible.errors import AnsibleFilterError

# HAProxy server and backend names; inventory host names beyond this are refused
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){LABEL}(\.{LABEL})*$")
# what vLLM serves under --served-model-name, without what would end a word or a quoted string in
# HAProxy's files (spaces, quotes, #, backslashes)
MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+=-]{0,199}$")
# a bearer token as RFC 6750 writes one (b64token): nothing HAProxy would read otherwise in a header
# value split on commas (the client's key) or in a formatted string, where % and ${} are expressions
# (the replicas' key, which the gateway sends)
KEY = re.compile(r"^(?=.{8,512}$)[A-Za-z0-9._~+/-]+=*$")


def _err(msg: str) -> AnsibleFilterError:
    return AnsibleFilterError(msg)


def _port(value: Any, where: str) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _err(f"{where}: expected a port number (1-65535), got {value!r}")
    return int(text)


def _address(value: Any, where: str) -> str:
    text = str(value).strip()
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
        return f"[{ip}]" if ip.version == 6 else str(ip)
    except ValueError:
        pass
    if not HOSTNAME.match(text):
        raise _err(f"{where}: expected an IP address or a host name, got {value!r}")
    return text


def _key(value: Any, where: str) -> str:
    text = "" if value is None else str(value)
    if text and not KEY.match(text):
        # never the value: it is a secret
        raise _err(f"{where}: expected a bearer token of 8-512 characters: letters, digits and - . _ ~ + /, "
                   f"then = only at the end (RFC 6750; the value is not shown)")
    return text


def gateway_backends(hosts: list[str], hostvars: Any, explicit: list[Any] | None = None) -> list[dict[str, Any]]:
    """The models the gateway serves and, for each, its replicas.

    ``hosts``: the replicas' inventory names (vllm_gateway_backend_group's hosts); each one's
    vllm_server_port, vllm_server_model_name (or vllm_server_model_dir), vllm_server_api_key and
    vllm_gateway_backend_address (default ansible_host, then its name) are read from ``hostvars``.
    ``explicit`` (vllm_gateway_backends): replicas outside the inventory, as mappings with name,
    address, port, model and, optionally, api_key. Returns ``[{id, backend, api_key, servers: [{name,
    address, port}]}]`` sorted by model id; backend names are m1, m2, ... (model ids may hold a /).
    """
    replicas: list[dict[str, Any]] = []
    for host in hosts or []:
        hv = hostvars[host]
        model = hv.get("vllm_server_model_name") or hv.get("vllm_server_model_dir") or ""
        replicas.append({
            "name": host,
            "address": hv.get("vllm_gateway_backend_address") or hv.get("ansible_host") or host,
            "port": hv.get("vllm_server_port", 9999),
            "model": model,
            "api_key": hv.get("vllm_server_api_key", ""),
            "where": f"host {host}",
        })
    for i, item in enumerate(explicit or []):
        if not isinstance(item, dict) or not {"name", "address", "port", "model"} <= set(item):
            raise _err(f"vllm_gateway_backends[{i}]: expected a mapping with name, address, port and model "
                       f"(api_key optional), got {item!r}")
        replicas.append(dict(item, where=f"vllm_gateway_backends[{i}]"))

    if not replicas:
        raise _err("vllm_gateway_backend_group / vllm_gateway_backends: the gateway has no replica to send "
                   "requests to (the group is empty or missing, and no backend is listed)")

    models: dict[str, dict[str, Any]] = {}
    seen_names: set[str] = set()
    seen_targets: dict[tuple[str, int], str] = {}
    for r in replicas:
        where = r["where"]
        name = str(r["name"])
        if not NAME.match(name):
            raise _err(f"{where}: the replica's name {name!r} is used as HAProxy's server name: expected letters, "
                       f"digits, '.', '_' and '-' (at most 63)")
        if name in seen_names:
            raise _err(f"{where}: the replica name {name!r} appears twice")
        seen_names.add(name)
        address = _address(r["address"], f"{where}: vllm_gateway_backend_address (or ansible_host)")
        port = _port(r["port"], f"{where}: vllm_server_port")
        target = (address, port)
        if target in seen_targets:
            raise _err(f"{where}: {address}:{port} is already the address of {seen_targets[target]}")
        seen_targets[target] = name
        model = str(r["model"] or "")
        if not MODEL.match(model):
            raise _err(f"{where}: vllm_server_model_name (or vllm_server_model_dir): expected a model id of letters, "
                       f"digits and . _ / : @ + = - (no spaces or quotes), got {model!r}")
        key = _key(r.get("api_key"), f"{where}: vllm_server_api_key")
        entry = models.setdefault(model, {"id": model, "api_key": key, "servers": [], "hosts": []})
        if entry["api_key"] != key:
            raise _err(f"{where}: vllm_server_api_key differs from that of {', '.join(entry['hosts'])}, which serve "
                       f"the same model {model!r}: the gateway sends one key to a model's replicas (the values are "
                       f"not shown)")
        entry["servers"].append({"name": name, "address": address, "port": port})
        entry["hosts"].append(name)

    out = []
    for i, model in enumerate(sorted(models)):
        entry = models[model]
        out.append({"id": model, "backend": f"m{i + 1}", "api_key": entry["api_key"], "servers": entry["servers"]})
    return out


def gateway_keys(keys: Any) -> list[str]:
    """vllm_gateway_api_keys as a checked list (a single string is one key)."""
    if keys in (None, ""):
        return []
    items = [keys] if isinstance(keys, str) else list(keys)
    return [_key(k, f"vllm_gateway_api_keys[{i}]") or _empty_key(i) for i, k in enumerate(items)]


def _empty_key(i: int) -> str:
    raise _err(f"vllm_gateway_api_keys[{i}]: an empty key would let every request in; leave the list empty for a "
               f"gateway without keys")


def gateway_sources(sources: Any) -> list[str]:
    """vllm_gateway_allowed_sources as networks HAProxy reads (IPv4/IPv6 addresses and CIDRs)."""
    items = [] if sources in (None, "") else ([sources] if isinstance(sources, str) else list(sources))
    out = []
    for i, item in enumerate(items):
        try:
            out.append(str(ipaddress.ip_network(str(item).strip(), strict=False)))
        except ValueError:
            raise _err(f"vllm_gateway_allowed_sources[{i}]: expected an IP address or a network in CIDR notation "
                       f"(10.0.0.0/8, 2001:db8::/32), got {item!r}") from None
    return out


def gateway_paths(paths: Any) -> list[str]:
    """vllm_gateway_paths: the API paths the gateway passes on, each a plain absolute path."""
    items = [paths] if isinstance(paths, str) else list(paths or [])
    for i, item in enumerate(items):
        if not re.match(r"^/[A-Za-z0-9/_.-]{1,200}$", str(item)) or ".." in str(item):
            raise _err(f"vllm_gateway_paths[{i}]: expected an absolute URL path of letters, digits and / _ . - "
                       f"such as /v1/chat/completions, got {item!r}")
    if not items:
        raise _err("vllm_gateway_paths: the gateway would refuse every request: list at least one path")
    return [str(p) for p in items]


def gateway_model_entry(model_id: str) -> dict[str, Any]:
    """One entry of GET /v1/models, as vLLM writes it."""
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "vllm-fleet", "root": model_id,
            "parent": None}


def gateway_stat_rows(stat: str, server: str) -> list[dict[str, str]]:
    """The rows of HAProxy's ``show stat`` (CSV) for one server: pxname, status, scur and the rest."""
    import csv

    lines = (stat or "").splitlines()
    if not lines:
        return []
    lines[0] = lines[0].lstrip("# ")
    return [dict(row) for row in csv.DictReader(lines) if row.get("svname") == server]


def gateway_routes(models: list[dict[str, Any]]) -> dict[str, Any]:
    """What the gateway routes to, as the role records it on the gateway: each model's replicas
    (name: address:port) and the key it sends them, as its SHA-256 (the record holds no secret)."""
    return {m["id"]: {"key_sha256": hashlib.sha256(m["api_key"].encode()).hexdigest() if m["api_key"] else "",
                      "servers": {s["name"]: f"{s['address']}:{s['port']}" for s in m["servers"]}}
            for m in models}


def gateway_route_changes(recorded: Any, current: dict[str, Any]) -> list[str]:
    """The differences between the routes the gateway has (recorded) and those the inventory gives
    (current), in words; empty when they agree."""
    recorded = recorded if isinstance(recorded, dict) else {}
    changes = []
    for model in sorted(set(recorded) | set(current)):
        if model not in current:
            changes.append(f"model {model} is no longer served")
            continue
        if model not in recorded:
            changes.append(f"model {model} is new")
            continue
        was, now = recorded[model], current[model]
        if was.get("key_sha256", "") != now["key_sha256"]:
            changes.append(f"the key the gateway sends to the replicas of {model} (vllm_server_api_key) differs")
        was_servers = was.get("servers", {})
        for name in sorted(set(was_servers) | set(now["servers"])):
            if name not in now["servers"]:
                changes.append(f"{name} no longer serves {model}")
            elif name not in was_servers:
                changes.append(f"{name} is new for {model}")
            elif was_servers[name] != now["servers"][name]:
                changes.append(f"{name} moves from {was_servers[name]} to {now['servers'][name]} (address or port)")
    return changes


def gateway_is_address(value: Any) -> bool:
    """True for an IPv4 or IPv6 address (a listen address)."""
    try:
        ipaddress.ip_address(str(value).strip())
        return True
    except ValueError:
        return False


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "vllm_gateway_backends": gateway_backends,
            "vllm_gateway_keys": gateway_keys,
            "vllm_gateway_sources": gateway_sources,
            "vllm_gateway_paths": gateway_paths,
            "vllm_gateway_is_address": gateway_is_address,
            "vllm_gateway_model_entry": gateway_model_entry,
            "vllm_gateway_stat_rows": gateway_stat_rows,
            "vllm_gateway_routes": gateway_routes,
            "vllm_gateway_route_changes": gateway_route_changes,
        }
