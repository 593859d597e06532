"""A role's variables as Ansible sees them inside the role (defaults, then vars), for templating in tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "vllm_server"
sys.path.insert(0, str(ROOT / "plugins" / "action"))
from role_arguments import convert, role_options, split  # noqa: E402


def with_typed(role: str, variables: dict[str, Any]) -> dict[str, Any]:
    """The variables with the fact __<role> as the action vllm_fleet.fleet.role_arguments sets it
    (and __<role>_read, its registered result): the role's options templated, then converted to
    their declared types."""
    from ansible.parsing.dataloader import DataLoader
    from ansible.plugins.loader import filter_loader, init_plugin_loader
    from ansible.template import Templar

    init_plugin_loader()
    filter_loader.add_directory(str(ROOT / "plugins" / "filter"))
    options = role_options(str(ROOT / "roles" / role))
    templar = Templar(loader=DataLoader(), variables=variables)
    values = {}
    for name in options:
        if name in variables:
            try:
                values[name] = templar.template(variables[name])
            except Exception:  # noqa: BLE001  # a value that needs facts the test does not give
                values[name] = variables[name]
    converted, errors = convert(options, values)
    assert not errors, errors
    public, secrets = split(options, role + "_", converted)
    # the no_log variables come back in the registered result (the role registers __<role>_read)
    return {**variables, f"__{role}": public, f"__{role}_read": {"secrets": secrets}}


def defaults_and_vars(role: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
    """roles/<role>/defaults/main.yml, then roles/<role>/vars/main.yml over it; with a platform's facts,
    then the vars files the role's tasks/set_vars.yml loads for it, in the same order."""
    variables: dict[str, Any] = {}
    for f in ("defaults", "vars"):
        variables.update(yaml.safe_load((ROOT / "roles" / role / f / "main.yml").read_text()) or {})
    for name in platform_vars_files(facts or {}):
        path = ROOT / "roles" / role / "vars" / name
        if path.is_file():
            variables.update(yaml.safe_load(path.read_text()) or {})
    return with_typed(role, {**(({"ansible_facts": facts}) if facts else {}), **variables})


def platform_vars_files(facts: dict[str, Any]) -> list[str]:
    """The vars files every role's tasks/set_vars.yml tries, least specific first."""
    if not facts:
        return []
    family, dist, major = facts["os_family"], facts["distribution"], facts["distribution_major_version"]
    return [f"{family}.yml", f"{family}_{major}.yml", f"{dist}.yml", f"{dist}_{major}.yml"]


def role_variables(**overrides: Any) -> dict[str, Any]:
    """vllm_server's defaults, vars, then the overrides; with the image fixed as preflight's set_fact does."""
    variables = defaults_and_vars("vllm_server")
    variables.update(role_path=str(ROLE), **overrides)
    variables = with_typed("vllm_server", variables)
    variables["__vllm_server_run_image"] = variables["__vllm_server_run_image_expr"]
    return variables
