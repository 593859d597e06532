"""The registry's names, checked before they reach a certificate, certs.d or an image reference."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from registry import registry_names, registry_reference, registry_repository  # noqa: E402


@pytest.mark.parametrize(("value", "port", "expected"), [
    ("fleet-gw:5000", None, "fleet-gw:5000"),
    ("registry.fleet.internal", None, "registry.fleet.internal"),
    ("10.0.0.5:443", None, "10.0.0.5:443"),
    ("[fd00::5]:5000", None, "[fd00::5]:5000"),
    ("fd00::5", 5000, "[fd00::5]:5000"),
    ("fd00::5", "5000", "[fd00::5]:5000"),
    (" fleet-gw ", "5000", "fleet-gw:5000"),
])
def test_registry_references(value, port, expected):
    assert registry_reference(value, "v", port) == expected


@pytest.mark.parametrize("value", [
    "", "a b:5000", "host:0", "host:65536", "host:x", "-host:5000", "host;rm -rf /:5000", "host/../x:5000",
    "host:5000\n[Service]", "$(id):5000",
])
def test_bad_references_are_refused_naming_the_variable(value):
    with pytest.raises(AnsibleFilterError, match="^vllm_server_image_registry: expected host:port"):
        registry_reference(value)


def test_a_bad_port_given_apart_is_refused():
    with pytest.raises(AnsibleFilterError, match="docker_registry_address: .*port 1-65535"):
        registry_reference("fleet-gw", "docker_registry_address", "70000")


def test_certificate_names():
    assert registry_names(["fleet-gw", "10.0.0.2", "fd00::2", "fleet-gw"]) == [
        "DNS:fleet-gw", "IP:10.0.0.2", "IP:fd00::2"]
    assert registry_names("fleet-gw") == ["DNS:fleet-gw"]


@pytest.mark.parametrize(("names", "where"), [
    (["bad name"], "docker_registry_address"),
    (["fleet-gw", "ok", "x,DNS:evil"], r"docker_registry_extra_names\[1\]"),
])
def test_bad_certificate_names_are_refused(names, where):
    with pytest.raises(AnsibleFilterError, match=f"^{where}: expected a host name or an IP address"):
        registry_names(names)


@pytest.mark.parametrize(("image", "expected"), [
    ("vllm-fleet/vllm:cpu-0123abcd", "fleet-gw:5000/vllm-fleet/vllm"),
    ("localhost:5000/team/Vllm-Server:cpu", "fleet-gw:5000/vllm-fleet/vllm-server"),
    ("vllm@sha256:" + "a" * 64, "fleet-gw:5000/vllm-fleet/vllm"),
])
def test_registry_repository(image, expected):
    assert registry_repository(image, "fleet-gw:5000") == expected


def test_an_image_name_without_a_repository_is_refused():
    with pytest.raises(AnsibleFilterError, match="^vllm_server_image: "):
        registry_repository("___:tag", "fleet-gw:5000")
