"""The gateway's backends, keys, sources and paths as the vllm_gateway role renders them into HAProxy's
files: read from the inventory's variables, and every value that HAProxy would read otherwise than as one
word refused by name, before the gateway changes. Also the builder choice of the one-build fleet."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from ansible.errors import AnsibleFilterError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "filter"))
from fleet import fleet_builder  # noqa: E402
from gateway import (  # noqa: E402
    gateway_backends,
    gateway_keys,
    gateway_paths,
    gateway_route_changes,
    gateway_routes,
    gateway_sources,
    gateway_stat_rows,
)

KEY = "replica-key-0123456789"


def fleet(**overrides):
    hv = {
        "gpu-1": {"ansible_host": "10.0.0.1", "vllm_server_model_name": "llama", "vllm_server_api_key": KEY},
        "gpu-2": {"ansible_host": "10.0.0.2", "vllm_server_model_dir": "llama", "vllm_server_api_key": KEY,
                  "vllm_server_port": "8001"},
        "gpu-3": {"vllm_server_model_name": "qwen/Qwen2-7B", "vllm_gateway_backend_address": "gpu-3.example.internal"},
    }
    for host, values in overrides.items():
        hv[host] = {**hv.get(host, {}), **values}
    return hv


def test_replicas_are_grouped_by_the_model_they_serve():
    models = gateway_backends(["gpu-1", "gpu-2", "gpu-3"], fleet())
    assert models == [
        {"id": "llama", "backend": "m1", "api_key": KEY, "servers": [
            {"name": "gpu-1", "address": "10.0.0.1", "port": 9999},
            {"name": "gpu-2", "address": "10.0.0.2", "port": 8001}]},
        {"id": "qwen/Qwen2-7B", "backend": "m2", "api_key": "", "servers": [
            {"name": "gpu-3", "address": "gpu-3.example.internal", "port": 9999}]},
    ]


def test_replicas_outside_the_inventory_are_added():
    models = gateway_backends([], {}, [{"name": "ext-1", "address": "2001:db8::1", "port": 9000, "model": "m"}])
    assert models[0]["servers"] == [{"name": "ext-1", "address": "[2001:db8::1]", "port": 9000}]


@pytest.mark.parametrize(("host", "values", "message"), [
    ("gpu-1", {"vllm_server_model_name": "llama 3"}, r"host gpu-1: vllm_server_model_name .*no spaces"),
    ("gpu-1", {"vllm_server_model_name": "x' || true"}, r"host gpu-1: vllm_server_model_name"),
    ("gpu-1", {"vllm_server_model_name": ""}, r"host gpu-1: vllm_server_model_name"),
    ("gpu-1", {"vllm_server_port": "99999"}, r"host gpu-1: vllm_server_port: expected a port number"),
    ("gpu-1", {"vllm_server_port": "9999\nserver evil 1.2.3.4"}, r"host gpu-1: vllm_server_port"),
    ("gpu-1", {"ansible_host": "10.0.0.1 backup"}, r"host gpu-1: vllm_gateway_backend_address \(or ansible_host\)"),
    ("gpu-2", {"ansible_host": "10.0.0.1", "vllm_server_port": 9999}, r"host gpu-2: 10.0.0.1:9999 is already"),
    ("gpu-2", {"vllm_server_api_key": "another-key-0123456789"}, r"host gpu-2: vllm_server_api_key differs"),
    ("gpu-2", {"vllm_server_api_key": "has space 0123456789"}, r"host gpu-2: vllm_server_api_key: expected"),
    ("gpu-2", {"vllm_server_api_key": "has%[src]0123456789"}, r"host gpu-2: vllm_server_api_key: expected a bearer"),
])
def test_a_bad_replica_value_is_refused_by_host_and_variable(host, values, message):
    with pytest.raises(AnsibleFilterError, match=message) as err:
        gateway_backends(["gpu-1", "gpu-2", "gpu-3"], fleet(**{host: values}))
    assert "another-key" not in str(err.value) and "has space" not in str(err.value)


def test_a_host_name_haproxy_cannot_take_is_refused():
    with pytest.raises(AnsibleFilterError, match=r"host gpu 1: the replica's name"):
        gateway_backends(["gpu 1"], {"gpu 1": {"vllm_server_model_name": "m"}})


def test_no_replica_is_refused():
    with pytest.raises(AnsibleFilterError, match=r"vllm_gateway_backend_group / vllm_gateway_backends"):
        gateway_backends([], {})


def test_keys():
    assert gateway_keys([]) == [] and gateway_keys("") == []
    assert gateway_keys("client-key-0001") == ["client-key-0001"]
    assert gateway_keys(["sk-A_b.c~d+e/f0123==", "Zm9vYmFyYmF6cXV4"]) == ["sk-A_b.c~d+e/f0123==", "Zm9vYmFyYmF6cXV4"]
    # HAProxy splits a header's value on commas; % and ${} are expressions in the strings it formats
    for bad in (["short"], ["with space 01234"], ['quote"0123456789'], [""], ["comma,0123456789"],
                ["percent%[src]0123456789"], ["env${HOME}0123456789"], ["pad=in-the-middle-0123456789"]):
        with pytest.raises(AnsibleFilterError, match=r"vllm_gateway_api_keys\[0\]") as err:
            gateway_keys(bad)
        assert "0123456789" not in str(err.value) and "01234" not in str(err.value)


def test_sources():
    assert gateway_sources(["10.1.2.3", "192.168.0.0/16", "2001:db8::/32"]) == [
        "10.1.2.3/32", "192.168.0.0/16", "2001:db8::/32"]
    with pytest.raises(AnsibleFilterError, match=r"vllm_gateway_allowed_sources\[1\]"):
        gateway_sources(["10.0.0.0/8", "10.0.0.0/8 always_true"])


def test_paths():
    assert gateway_paths(["/v1/chat/completions"]) == ["/v1/chat/completions"]
    for bad in (["/v1/x y"], ["v1/models"], ["/v1/../admin"], []):
        with pytest.raises(AnsibleFilterError, match=r"vllm_gateway_paths"):
            gateway_paths(bad)


def test_the_runtime_apis_rows_of_one_server():
    stat = ("# pxname,svname,qcur,qmax,scur,status\n"
            "m1,gpu-1,0,0,3,UP\nm1,gpu-2,0,0,0,MAINT\nm1,BACKEND,0,0,3,UP\nm2,gpu-1,0,0,1,DRAIN\n")
    assert [(r["pxname"], r["scur"], r["status"]) for r in gateway_stat_rows(stat, "gpu-1")] == [
        ("m1", "3", "UP"), ("m2", "1", "DRAIN")]
    assert gateway_stat_rows("", "gpu-1") == []


def test_one_build_per_distinct_image():
    hv = {"a": {"__vllm_server_run_image": "img:1"}, "b": {"__vllm_server_run_image": "img:2"},
          "c": {"__vllm_server_run_image": "img:1"}, "d": {}}
    order = ["a", "b", "c", "d"]
    assert fleet_builder(order, hv, "img:1", "c") == "a"   # the first host with the same image builds
    assert fleet_builder(order, hv, "img:2", "b") == "b"   # the only one with its image builds it
    assert fleet_builder(["b"] + order, hv, "img:1", "c") == "a"  # a named builder with another image is passed over
    assert fleet_builder(["zz"] + order, hv, "img:1", "a") == "a"  # a builder outside the play's facts too


def test_routes_record_no_key_and_name_every_change():
    routes = gateway_routes(gateway_backends(["gpu-1", "gpu-2", "gpu-3"], fleet()))
    assert KEY not in str(routes)
    assert routes["llama"]["servers"] == {"gpu-1": "10.0.0.1:9999", "gpu-2": "10.0.0.2:8001"}
    assert gateway_route_changes(routes, routes) == []
    assert gateway_route_changes(None, routes) == [f"model {m} is new" for m in sorted(routes)]
    renamed = gateway_routes(gateway_backends(["gpu-1", "gpu-2", "gpu-3"], fleet(
        **{h: {"vllm_server_model_name": "llama-2"} for h in ("gpu-1", "gpu-2")})))
    assert gateway_route_changes(routes, renamed) == ["model llama is no longer served", "model llama-2 is new"]
    rekeyed = gateway_routes(gateway_backends(["gpu-1", "gpu-2", "gpu-3"], fleet(
        **{h: {"vllm_server_api_key": "another-key-0123456789"} for h in ("gpu-1", "gpu-2")})))
    assert gateway_route_changes(routes, rekeyed) == [
        "the key the gateway sends to the replicas of llama (vllm_server_api_key) differs"]
    hosts = ["gpu-1", "gpu-2", "gpu-3"]
    moved = gateway_routes(gateway_backends(hosts, fleet(**{"gpu-2": {"vllm_server_port": 9000}})))
    assert gateway_route_changes(routes, moved) == [
        "gpu-2 moves from 10.0.0.2:8001 to 10.0.0.2:9000 (address or port)"]
    fewer = gateway_routes(gateway_backends(["gpu-1", "gpu-3"], fleet()))
    assert gateway_route_changes(routes, fewer) == ["gpu-2 no longer serves llama"]
    assert gateway_route_changes(fewer, routes) == ["gpu-2 is new for llama"]
