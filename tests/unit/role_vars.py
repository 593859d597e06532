"""A role's variables as Ansible sees them inside the role (defaults, then vars), for templating in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "vllm_server"


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
    return variables


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
    variables["__vllm_server_run_image"] = variables["__vllm_server_run_image_expr"]
    return variables
