"""A role's variables as Ansible sees them inside the role (defaults, then vars), for templating in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "vllm_server"


def defaults_and_vars(role: str) -> dict[str, Any]:
    """roles/<role>/defaults/main.yml, then roles/<role>/vars/main.yml over it."""
    variables: dict[str, Any] = {}
    for f in ("defaults", "vars"):
        variables.update(yaml.safe_load((ROOT / "roles" / role / f / "main.yml").read_text()) or {})
    return variables


def role_variables(**overrides: Any) -> dict[str, Any]:
    """vllm_server's defaults, vars, then the overrides; with the image fixed as preflight's set_fact does."""
    variables = defaults_and_vars("vllm_server")
    variables.update(role_path=str(ROLE), **overrides)
    variables["__vllm_server_run_image"] = variables["__vllm_server_run_image_expr"]
    return variables
