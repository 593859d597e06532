"""Several instances on one host (vllm_server_instances): each entry over the host's variables, and
the set checked together before anything changes."""

from __future__ import annotations

import json

import pytest
import vllm_instances as f
import vllm_server
from ansible.errors import AnsibleFilterError
from test_vllm_server_filters import BASE

EIGHT_GPUS = {**BASE, "gpus": [0]}
TWO = [
    {"name": "llama", "model_dir": "Llama-3.1-70B-Instruct", "gpus": [0, 1, 2, 3], "port": 8001},
    {"name": "qwen", "model_dir": "Qwen2.5-32B-Instruct", "gpus": "4,5,6,7", "port": "8002",
     "extra_args": ["--max-num-seqs", "64"]},
]


def test_without_a_list_the_single_instance_variables_are_the_one_element_case():
    assert f.instances(BASE) == [BASE]
    assert f.instances(BASE, []) == [BASE] and f.instances(BASE, "") == [BASE]


def test_each_entry_lies_over_the_hosts_variables():
    llama, qwen = f.instances(EIGHT_GPUS, TWO)
    assert (llama["instance"], llama["model_dir"], llama["model_name"], llama["gpus"], llama["port"]) == (
        "llama", "Llama-3.1-70B-Instruct", "Llama-3.1-70B-Instruct", [0, 1, 2, 3], 8001)
    assert qwen["gpus"] == [4, 5, 6, 7] and qwen["extra_args"] == ["--max-num-seqs", "64"]
    assert llama["extra_args"] == [] and llama["gpu_memory_utilization"] == BASE["gpu_memory_utilization"]
    # one cache directory per instance, beside the host's
    assert (llama["cache_dir"], qwen["cache_dir"]) == ("/var/cache/vllm-server/llama", "/var/cache/vllm-server/qwen")
    assert f.instance_set_errors([llama, qwen]) == []
    # each instance passes the role's own checks (the port still as text: the role converts it)
    assert vllm_server.param_errors({**llama}) == []


def test_the_list_may_come_as_json_text():
    assert [p["instance"] for p in f.instances(EIGHT_GPUS, json.dumps(TWO))] == ["llama", "qwen"]


@pytest.mark.parametrize(("listed", "message"), [
    ({"name": "x"}, r"vllm_server_instances: expected a list of mappings"),
    ("[{name: x}", r"vllm_server_instances: expected a list of mappings .* not JSON"),
    (["llama"], r"vllm_server_instances\[0\]: expected a mapping"),
    ([{"model_dir": "m", "port": 1}], r"vllm_server_instances\[0\]\.name: every instance needs a name"),
    ([{"name": "a", "port": 1}, {"name": "b", "gpu": [1]}], r"vllm_server_instances\[1\]\.gpu: not a setting"),
    ([{"name": "a", "image_build": False}], r"vllm_server_instances\[0\]\.image_build: a setting of the host"),
    ([{"name": "a", "docker_bin": "/tmp/x"}], r"vllm_server_instances\[0\]\.docker_bin: a setting of the host"),
])
def test_a_malformed_list_is_refused_by_entry_and_key(listed, message):
    with pytest.raises(AnsibleFilterError, match=message):
        f.instances(EIGHT_GPUS, listed)


@pytest.mark.parametrize(("change", "message"), [
    ({"gpus": [3, 4]}, "vllm_server_instances: GPU 3 is in both 'llama' and 'qwen'"),
    ({"port": 8001}, "vllm_server_instances: port 8001 is in both 'llama' and 'qwen'"),
    ({"name": "llama"}, "vllm_server_instances: the name 'llama' is given to two instances"),
    ({"cache_dir": "/var/cache/vllm-server/llama"},
     "vllm_server_instances: the cache directory /var/cache/vllm-server/llama is in both 'llama' and 'qwen'"),
])
def test_what_two_instances_cannot_share_is_refused(change, message):
    errors = f.instance_set_errors(f.instances(EIGHT_GPUS, [TWO[0], {**TWO[1], **change}]))
    assert message in errors, errors


def test_cpu_instances_share_no_gpus_to_conflict_over():
    cpu = {**BASE, "device": "cpu", "gpus": []}
    two = f.instances(cpu, [{"name": "a", "port": 8001}, {"name": "b", "port": 8002}])
    assert f.instance_set_errors(two) == []
