"""`-e name=value` gives every typed variable as a string: the roles must read the same values as
from typed YAML. Runs ansible-playbook twice (tests/playbooks/role_arguments.yml): once with every
typed variable of the four roles as a `key=value` string, once with the same values as typed JSON,
and compares what each role reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from test_role_arguments import options

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK_BIN = str(Path(sys.executable).parent / "ansible-playbook")
ROLES = ["docker_engine", "nvidia_driver", "nvidia_container_toolkit", "vllm_server"]


def sample(name: str, opt: dict) -> tuple[str, object] | None:
    """A value other than the default, as a string and as its typed form."""
    kind = opt.get("type", "str")
    if kind == "bool":
        typed = not bool(opt.get("default"))
        return ("true" if typed else "false"), typed
    if kind == "int":
        return "7", 7
    if kind == "float":
        return "0.5", 0.5
    if kind == "list":
        elements = opt.get("elements", "str")
        if elements == "int":
            return "0,1", [0, 1]
        if elements == "str":
            return "alpha,beta", ["alpha", "beta"]
        return None  # a list of mappings: JSON only, as on any command line
    if kind == "dict":
        return '{"NCCL_DEBUG":"INFO"}', {"NCCL_DEBUG": "INFO"}  # -e splits words at spaces
    return None


def run(extra: list[str], out: Path) -> dict:
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([PLAYBOOK_BIN, "-i", "localhost,", "-c", "local",
                             str(ROOT / "tests" / "playbooks" / "role_arguments.yml"), *extra,
                             "-e", f"role_arguments_out={out}", "-e", f"ansible_python_interpreter={sys.executable}"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(out.read_text())


def test_strings_from_the_command_line_are_read_as_their_types(tmp_path):
    as_strings, as_json, expected = [], {}, {}
    for role in ROLES:
        for name, opt in options(role).items():
            s = sample(name, opt)
            if s is None:
                continue
            as_strings += ["-e", f"{name}={s[0]}"]
            as_json[name] = s[1]
            expected[(role, name[len(role) + 1:])] = s[1]
    assert len(expected) >= 30
    from_strings = run(as_strings, tmp_path / "strings.json")
    from_json = run(["-e", json.dumps(as_json)], tmp_path / "json.json")
    for (role, short), value in expected.items():
        got = from_strings[role][short]
        assert got == value and type(got) is type(value), (role, short, got, value)
    assert from_strings == from_json


def test_the_fact_is_not_printed():
    """The converted variables may hold the API key: the conversion's own result is censored."""
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1"}
    result = subprocess.run([PLAYBOOK_BIN, "-v", "-i", "localhost,", "-c", "local",
                             str(ROOT / "tests" / "playbooks" / "role_arguments.yml"),
                             "-e", "vllm_server_api_key=sk-do-not-print-0123"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "sk-do-not-print-0123" not in result.stdout + result.stderr
    assert "censored" in result.stdout


def test_secrets_stay_out_of_the_fact_cache(tmp_path):
    """Facts are written to the fact cache (ansible.cfg: jsonfile, files anyone on the controller
    may read): the API key, the secret environment and the Docker proxies (which may hold a password)
    come back in the registered result only."""
    cache = tmp_path / "facts"
    env = {**os.environ, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(cache)}
    out = tmp_path / "out.json"
    result = subprocess.run([PLAYBOOK_BIN, "-i", "localhost,", "-c", "local",
                             str(ROOT / "tests" / "playbooks" / "role_arguments.yml"),
                             "-e", "vllm_server_api_key=sk-not-in-the-cache-0123",
                             "-e", '{"vllm_server_secret_env": {"HF_TOKEN": "hf_not_in_the_cache_0123"}}',
                             "-e", "docker_engine_https_proxy=http://u:pw-not-in-the-cache@proxy:3128",
                             "-e", f"role_arguments_out={out}", "-e", f"ansible_python_interpreter={sys.executable}"],
                            capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    read = json.loads(out.read_text())["vllm_server"]
    assert read["api_key"] == "sk-not-in-the-cache-0123"
    assert read["secret_env"] == {"HF_TOKEN": "hf_not_in_the_cache_0123"}
    assert json.loads(out.read_text())["docker_engine"]["https_proxy"] == "http://u:pw-not-in-the-cache@proxy:3128"
    cached = json.loads((cache / "localhost").read_text())
    assert "https_proxy" not in cached["__docker_engine"] and cached["__docker_engine"]["no_proxy"] == ""
    assert cached["__vllm_server"]["port"] == 9999  # the cache was written, with the role's fact
    assert "api_key" not in cached["__vllm_server"] and "secret_env" not in cached["__vllm_server"]
    text = "".join(p.read_text() for p in cache.iterdir())
    assert "not-in-the-cache" not in text and "not_in_the_cache" not in text


def test_yaml_loads_the_playbook():
    assert yaml.safe_load((ROOT / "tests" / "playbooks" / "role_arguments.yml").read_text())
