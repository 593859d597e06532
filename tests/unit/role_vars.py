"""The vllm_server role's variables as Ansible sees them inside the role, for templating in tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "vllm_server"


def role_variables(**overrides: Any) -> dict[str, Any]:
    """defaults, then vars, then the overrides; with the image fixed as preflight's set_fact does."""
    variables: dict[str, Any] = {}
    for f in (ROLE / "defaults" / "main.yml", ROLE / "vars" / "main.yml"):
        variables.update(yaml.safe_load(f.read_text()))
    variables.update(role_path=str(ROLE), **overrides)
    variables["__vllm_server_run_image"] = variables["__vllm_server_run_image_expr"]
    return variables
