#!/usr/bin/env python3
"""The address of this machine's Docker engine on its default bridge: where a port published by a
test host is reached from (molecule/default/host_vars/vllm-keyed.yml allows only it).

The bridge's Gateway, as `docker network inspect bridge` lists it; some engines (a nested one
started with --bip, for one) list only the Subnet: then the bridge interface's own IPv4 address."""

from __future__ import annotations

import fcntl
import json
import socket
import struct
import subprocess

SIOCGIFADDR = 0x8915


def interface_address(name: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
    return socket.inet_ntoa(packed[20:24])


def main() -> None:
    bridge = json.loads(subprocess.run(["docker", "network", "inspect", "bridge"], check=True,
                                       capture_output=True, text=True).stdout)[0]
    gateways = [c.get("Gateway") for c in bridge["IPAM"]["Config"] if ":" not in c.get("Subnet", "")]
    name = (bridge.get("Options") or {}).get("com.docker.network.bridge.name", "docker0")
    print(next((g for g in gateways if g), None) or interface_address(name))


if __name__ == "__main__":
    main()
