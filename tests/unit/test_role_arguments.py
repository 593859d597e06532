"""Every role reads its variables as the types its argument spec declares.

A variable given as `-e name=value`, in an INI inventory or by a survey is a string: "false" is
true, "8000" is not a number. Each role converts its variables once per entry point with the
action vllm_fleet.fleet.role_arguments (Ansible's own ArgumentSpecValidator) and reads them from
the fact __<role> only. These tests check the conversion, for every typed option of every role,
and that no task, template or vars file of a role reads one of its public variables directly.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "plugins" / "action"))
from role_arguments import convert, role_options  # noqa: E402

ROLES = ["docker_engine", "nvidia_driver", "nvidia_container_toolkit", "vllm_server", "vllm_gateway", "docker_registry",
         "fleet_common"]
CONDITION_KEYS = {"when", "that", "changed_when", "failed_when", "until"}
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)

# For each type: a value as a string (as -e, INI and surveys give it) and what the role must see.
AS_STRING = {
    "bool": [("false", False), ("no", False), ("0", False), ("true", True), ("yes", True)],
    "int": [("8000", 8000), ("0", 0)],
    "float": [("0.85", 0.85), ("1", 1.0)],
    "list": [("0,1", None), ('["a", "b"]', ["a", "b"])],
    "dict": [('{"A": "x"}', {"A": "x"}), ("A=x", {"A": "x"})],
}


def options(role: str) -> dict:
    return role_options(str(ROOT / "roles" / role))


def typed_options() -> list[tuple[str, str, dict]]:
    return [(role, name, opt) for role in ROLES for name, opt in options(role).items()
            if opt.get("type", "str") in AS_STRING]


@pytest.mark.parametrize(("role", "name", "opt"), typed_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_string_becomes_the_declared_type(role, name, opt):
    kind = opt["type"]
    for given, expected in AS_STRING[kind]:
        if kind == "list":
            elements = opt.get("elements", "str")
            if given == "0,1":
                expected = [0, 1] if elements == "int" else (["0", "1"] if elements in ("str", "raw") else None)
            if elements == "dict" or expected is None or (elements == "int" and given != "0,1"):
                continue
        converted, errors = convert({name: opt}, {name: given})
        assert not errors, (name, given, errors)
        assert converted[name] == expected and type(converted[name]) is type(expected), (name, given, converted[name])


@pytest.mark.parametrize(("role", "name", "opt"),
                         [t for t in typed_options() if t[2]["type"] in ("int", "float", "bool")],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_a_wrong_string_is_refused_by_name(role, name, opt):
    converted, errors = convert({name: opt}, {name: "not-a-value"})
    assert errors and name in errors[0], (name, errors)


def secret_options() -> list[tuple[str, str, dict]]:
    return [(role, name, opt) for role in ROLES for name, opt in options(role).items() if opt.get("no_log")]


def test_secrets_are_marked():
    assert {name for _, name, _ in secret_options()} >= {"vllm_server_api_key", "vllm_server_secret_env",
                                                         "docker_engine_http_proxy", "docker_engine_https_proxy"}


@pytest.mark.parametrize(("role", "name", "opt"), secret_options(), ids=lambda v: v if isinstance(v, str) else "")
def test_a_mistyped_secret_is_not_printed(role, name, opt):
    for wrong in ("hf_notatoken0123456789", ["hf_notatoken0123456789"], 12345678901):
        converted, errors = convert({name: opt}, {name: wrong})
        if opt.get("type") == "dict":
            assert errors, (name, wrong)
        elif opt.get("type") == "list":  # a list of keys: one text becomes a list of one
            assert errors or converted[name] == (wrong if isinstance(wrong, list) else [str(wrong)]), (name, converted)
        else:  # a str option takes any scalar as text (Ansible's converter); a list is refused or made text
            assert errors or converted[name] == str(wrong), (name, converted)
        assert "notatoken" not in " ".join(errors) and "12345678901" not in " ".join(errors)


def test_every_role_declares_its_variables():
    for role in ROLES:
        opts = options(role)
        assert opts, role
        defaults = ROOT / "roles" / role / "defaults" / "main.yml"
        for name in yaml.safe_load(defaults.read_text()) or {}:
            assert name in opts, f"{role}: {name} is in defaults/main.yml but not in meta/argument_specs.yml"


def expressions(node, key=None):
    """The Jinja expressions in a task, vars or handler file: condition values whole, other strings'
    {{ }} and {% %} parts (messages name variables in plain text, which is fine)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from expressions(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from expressions(v, key)
    elif isinstance(node, str):
        if key in CONDITION_KEYS:
            yield node
        else:
            yield from JINJA.findall(node)


def direct_reads(role: str) -> list[str]:
    names = options(role)
    pattern = re.compile(r"(?<![\w.])(" + "|".join(map(re.escape, names)) + r")\b")
    found = []
    for sub in ("tasks", "handlers", "vars", "templates"):
        for path in sorted((ROOT / "roles" / role / sub).rglob("*")):
            if not path.is_file():
                continue
            text = path.read_text()
            exprs = JINJA.findall(text) if path.suffix == ".j2" else list(expressions(yaml.safe_load(text)))
            found += [f"{path.relative_to(ROOT)}: {m}" for e in exprs for m in pattern.findall(e)]
    return found


@pytest.mark.parametrize("role", ROLES)
def test_roles_read_their_variables_only_converted(role):
    assert direct_reads(role) == []


@pytest.mark.parametrize("role", ROLES)
def test_every_entry_point_converts_first(role):
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry in specs:
        tasks = yaml.safe_load((ROOT / "roles" / role / "tasks" / f"{entry}.yml").read_text())
        first = tasks[0]
        if role == "fleet_common" and entry == "main":
            continue  # refuses direct use, reads nothing
        while "ansible.builtin.import_tasks" in first:  # importing a file that converts first
            imported = ROOT / "roles" / role / "tasks" / first["ansible.builtin.import_tasks"]
            first = yaml.safe_load(imported.read_text())[0]
        assert "vllm_fleet.fleet.role_arguments" in first, f"{role}/tasks/{entry}.yml does not convert first"
        assert "always" in first.get("tags", []), f"{role}/tasks/{entry}.yml: the conversion must run with every tag"


@pytest.mark.parametrize(("value", "where"), [
    ("http://proxy:3128\nExecStart=/bin/sh", "holds a control character ('\\n' at position 17)"),
    ({"A": "x\rExecStart=id"}, "the value of 'A' holds a control character ('\\r'"),
    ({"A\n": "x"}, "a key holds a control character"),
    (["ok", "bad\x00"], "item 1 holds a control character ('\\x00'"),
])
def test_control_characters_are_refused_by_name(value, where):
    from role_arguments import control_errors
    (error,) = control_errors({"some_role_option": value})
    assert error.startswith("some_role_option: ") and where in error, error


def test_free_text_options_may_hold_newlines():
    from role_arguments import control_errors
    assert control_errors({"vllm_server_verify_prompt": "line one\nline two"}, {"vllm_server_verify_prompt"}) == []
