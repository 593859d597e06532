"""Every role documents every public variable once: defaults/main.yml and meta/argument_specs.yml agree."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())


def load(role: str, *parts: str):
    return yaml.safe_load((ROOT / "roles" / role / Path(*parts)).read_text()) or {}


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_list_the_same_variables(role):
    defaults = load(role, "defaults", "main.yml")
    options = load(role, "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    required = {k for k, v in options.items() if v.get("required")}
    assert set(defaults) == set(options), "defaults and argument_specs differ"
    for name, spec in options.items():
        assert name.startswith(role + "_"), f"{name} lacks the {role}_ prefix"
        assert spec.get("description"), f"{name} has no description"
        if name not in required:
            assert spec.get("default") == defaults[name], f"{name}: argument_specs default differs from defaults"


@pytest.mark.parametrize("role", ROLES)
def test_internal_variables_are_prefixed(role):
    for f in (ROOT / "roles" / role / "vars").glob("*.yml"):
        for name in load(role, "vars", f.name):
            assert name.startswith(f"__{role}_"), f"{f.name}: {name}"


def test_the_seed_names_are_kept():
    options = load("vllm_server", "meta", "argument_specs.yml")["argument_specs"]["main"]["options"]
    for name in ("model_root", "model_dir", "model_name", "gpus", "port", "device", "api_key", "extra_args"):
        assert f"vllm_server_{name}" in options
    assert options["vllm_server_port"]["default"] == 9999
