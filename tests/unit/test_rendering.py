"""The role's templates rendered by Ansible's own templating, across variable combinations."""

from __future__ import annotations

import json
import shlex

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import filter_loader, init_plugin_loader
from ansible.template import Templar
from role_vars import ROLE, ROOT, role_variables

init_plugin_loader()
filter_loader.add_directory(str(ROOT / "plugins" / "filter"))


def render(template: str, **overrides) -> str:
    variables = role_variables(ansible_managed="Managed by Ansible", **overrides)
    templar = Templar(loader=DataLoader(), variables=variables)
    return templar.template((ROLE / "templates" / template).read_text(), escape_backslashes=False)


def unit_lines(text: str) -> dict[str, str]:
    return {line.split("=", 1)[0]: line.split("=", 1)[1] for line in text.splitlines()
            if "=" in line and not line.startswith("#")}


def exec_start(text: str) -> list[str]:
    """ExecStart as systemd splits it (for what the role emits: quotes, backslashes, %% and $$)."""
    return shlex.split(unit_lines(text)["ExecStart"].replace("%%", "%").replace("$$", "$"))


SEED = dict(vllm_server_model_root="/home/ops/Downloads", vllm_server_model_dir="Orion-14B-Chat",
            vllm_server_model_name="orion14b-chat", vllm_server_gpus=[0, 1])


def test_seed_equivalent_unit():
    text = render("vllm-server.service.j2", **SEED)
    assert text.startswith("#")
    lines = unit_lines(text)
    assert lines["Requires"] == "docker.service"
    assert lines["Restart"] == "always"
    assert lines["ExecStartPre"] == "-/usr/bin/docker rm --force vllm-server"
    assert lines["ExecStop"] == "/usr/bin/docker stop --time 90 vllm-server"
    assert lines["TimeoutStopSec"] == "120"
    argv = exec_start(text)
    assert argv[:4] == ["/usr/bin/docker", "run", "--rm", "--name"]
    assert "/home/ops/Downloads:/workspace/models:ro" in argv
    assert "MODEL_DIR=Orion-14B-Chat" in argv and "MODEL_NAME=orion14b-chat" in argv
    assert argv[argv.index("--gpus") + 1] == '"device=0,1"'
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    # no key: published on this host only (the role refuses other machines without a key unless told)
    assert "127.0.0.1:9999:9999" in argv
    image = next(a for a in argv if a.startswith("vllm-server:"))
    assert image.startswith("vllm-server:0.33.0-cuda-")


@pytest.mark.parametrize(("overrides", "present", "absent"), [
    ({"vllm_server_quantization": "awq", "vllm_server_dtype": "float16"}, ["awq", "float16"], []),
    ({"vllm_server_device": "cpu", "vllm_server_gpus": []}, ["VLLM_CPU_KVCACHE_SPACE=4"], ["--gpus"]),
    ({"vllm_server_shm_size": "16g"}, ["--shm-size=16g"], ["--ipc=host"]),
    ({"vllm_server_port": 8000, "vllm_server_bind_address": "127.0.0.1"}, ["127.0.0.1:8000:8000", "VLLM_PORT=8000"],
     []),
    ({"vllm_server_extra_args": ["--served-model-name-suffix", "100%"]}, ["100%"], []),
    ({"vllm_server_env": {"NCCL_DEBUG": "INFO"}}, ["NCCL_DEBUG=INFO"], []),
])
def test_unit_variants(overrides, present, absent):
    argv = exec_start(render("vllm-server.service.j2", **{**SEED, **overrides}))
    for word in present:
        assert word in argv
    for word in absent:
        assert word not in argv


def test_percent_in_an_argument_is_escaped_for_systemd():
    text = render("vllm-server.service.j2", **SEED, vllm_server_extra_args=["--x", "100%"])
    assert "100%%" in unit_lines(text)["ExecStart"]


def test_instance_name_flows_everywhere():
    text = render("vllm-server.service.j2", **SEED, vllm_server_instance="llama-70b")
    lines = unit_lines(text)
    argv = exec_start(text)
    assert argv[argv.index("--name") + 1] == "llama-70b"
    assert "/etc/vllm-server/llama-70b.env:/run/secrets/vllm-server.env:ro" in argv
    assert "/var/cache/vllm-server/llama-70b:/workspace/cache" in argv
    assert lines["ExecStop"].endswith(" llama-70b")


def test_secrets_go_to_the_env_file_only():
    secrets = dict(vllm_server_api_key="sk-0123456789", vllm_server_secret_env={"HF_TOKEN": "hf_abc"})
    env = render("vllm-server.env.j2", **SEED, **secrets)
    unit = render("vllm-server.service.j2", **SEED, **secrets)
    assert "VLLM_API_KEY=sk-0123456789" in env.splitlines()
    assert "HF_TOKEN=hf_abc" in env.splitlines()
    assert "sk-0123456789" not in unit and "hf_abc" not in unit


def test_env_file_without_secrets_holds_none():
    env = render("vllm-server.env.j2", **SEED)
    assert [line for line in env.splitlines() if line and not line.startswith("#")] == []


def test_image_tag_follows_the_build_inputs():
    def tag(**kw):
        argv = exec_start(render("vllm-server.service.j2", **{**SEED, **kw}))
        return next(a for a in argv if a.startswith("vllm-server:"))

    assert tag() == tag()
    assert tag() != tag(vllm_server_vllm_version="0.32.0")
    assert tag() != tag(vllm_server_build_pip_index_url="https://pypi.mirror.example/simple")
    assert tag(vllm_server_device="cpu", vllm_server_gpus=[]).startswith("vllm-server:0.32.0-cpu-")
    assert tag(vllm_server_build_target="cuda-source").startswith("vllm-server:v0.33.0-cuda-source-")


def test_build_credentials_go_as_a_secret_and_leave_the_tag_alone():
    """A pip index with credentials: out of the build arguments and the public fact, into the secret
    build-env of the *-secrets stage; the tag follows the index, not its password."""
    def build(**kw):
        variables = role_variables(**{**SEED, **kw})
        templar = Templar(loader=DataLoader(), variables=variables)
        names = ("__vllm_server_build_args", "__vllm_server_build_secret_env", "__vllm_server_build_stage",
                 "__vllm_server_run_image")
        return {n: templar.template(variables[n]) for n in names} | {"fact": variables["__vllm_server"]}

    index = "https://ci:{}@pypi.example.com/simple"
    plain, first, second = build(), build(vllm_server_build_pip_index_url=index.format("pw-1")), \
        build(vllm_server_build_pip_index_url=index.format("pw-2"))
    assert plain["__vllm_server_build_secret_env"] == {} and plain["__vllm_server_build_stage"] == "cuda"
    assert first["__vllm_server_build_secret_env"] == {"PIP_INDEX_URL": index.format("pw-1")}
    assert "PIP_INDEX_URL" not in first["__vllm_server_build_args"]
    assert first["__vllm_server_build_stage"] == "cuda-secrets"
    assert first["__vllm_server_run_image"] == second["__vllm_server_run_image"] != plain["__vllm_server_run_image"]
    assert "pw-1" not in json.dumps(first["fact"]) and "build_pip_index_url" not in first["fact"]
    proxied = build(vllm_server_build_https_proxy="http://u:pw-3@proxy:3128", vllm_server_device="cpu",
                    vllm_server_gpus=[])
    assert set(proxied["__vllm_server_build_secret_env"]) == {"HTTPS_PROXY", "https_proxy"}
    assert proxied["__vllm_server_build_stage"] == "cpu-secrets"
    assert "pw-3" not in json.dumps(proxied["__vllm_server_build_args"])


def test_prebuilt_image_is_used_as_given():
    argv = exec_start(render("vllm-server.service.j2", **SEED, vllm_server_image_build=False,
                             vllm_server_image="registry.example.com/vllm-server:0.33.0"))
    assert "registry.example.com/vllm-server:0.33.0" in argv
