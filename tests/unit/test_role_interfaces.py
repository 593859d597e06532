"""Roles talk through documented interfaces only.

- every public variable is documented once: defaults/main.yml and meta/argument_specs.yml agree;
- every entry point another role or a playbook uses (include_role tasks_from) has its own argument spec;
- nothing outside a role reads or sets its internal (``__<role>_``) variables;
- the internal role fleet_common refuses to be run directly.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").exists())
SOURCES = [p for d in ("roles", "playbooks", "inventories", "molecule", "demo") for p in (ROOT / d).rglob("*")
           if p.suffix in (".yml", ".yaml", ".j2", ".py") and p.is_file()]


def load(role: str, *parts: str):
    return yaml.safe_load((ROOT / "roles" / role / Path(*parts)).read_text()) or {}


def entry_points(role: str) -> dict:
    return load(role, "meta", "argument_specs.yml")["argument_specs"]


@pytest.mark.parametrize("role", ROLES)
def test_defaults_and_argument_specs_list_the_same_variables(role):
    defaults = load(role, "defaults", "main.yml")
    optional: dict = {}
    documented: set = set()
    for entry, spec in entry_points(role).items():
        for name, option in (spec.get("options") or {}).items():
            assert name.startswith(role + "_"), f"{entry}: {name} lacks the {role}_ prefix"
            assert option.get("description"), f"{entry}: {name} has no description"
            documented.add(name)
            if not option.get("required"):
                assert option.get("default") == defaults.get(name), f"{entry}: {name}'s default differs from defaults"
                optional[name] = option
    assert set(optional) <= set(defaults), "an optional variable without its default in defaults/main.yml"
    assert set(defaults) <= documented, "a default that no argument spec describes"
    main = entry_points(role)["main"].get("options") or {}
    assert set(defaults) <= set(main) or role == "fleet_common", "a default that the main entry point does not take"


@pytest.mark.parametrize("role", ROLES)
def test_internal_variables_are_prefixed(role):
    for f in (ROOT / "roles" / role / "vars").glob("*.yml"):
        for name in load(role, "vars", f.name):
            assert name.startswith(f"__{role}_"), f"{f.name}: {name}"


def included_entry_points():
    """(file, role, tasks_from) for every include_role/import_role with tasks_from in the project."""
    for path in SOURCES:
        if path.suffix not in (".yml", ".yaml"):
            continue
        for match in re.finditer(r"name: ([\w.]+)\n\s+tasks_from: ([\w{} '\"]+)", path.read_text()):
            yield path.relative_to(ROOT), match.group(1).split(".")[-1], match.group(2).strip()


def test_every_entry_point_used_elsewhere_has_its_argument_spec():
    seen = 0
    for path, role, entry in included_entry_points():
        entries = [entry] if "{{" not in entry else ["preflight", "verify"]  # verify.yml loops over these two
        for e in entries:
            assert e in entry_points(role), f"{path}: {role} tasks_from {e} has no argument spec"
            seen += 1
    assert seen >= 8


@pytest.mark.parametrize("role", ROLES)
def test_nothing_outside_a_role_touches_its_internal_variables(role):
    own = ROOT / "roles" / role
    internal = re.compile(rf"\b__{role}_\w+")
    leaks = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in SOURCES if own not in p.parents
             for m in internal.finditer(p.read_text())]
    assert leaks == []


def test_common_refuses_direct_use(tmp_path):
    playbook = tmp_path / "direct.yml"
    playbook.write_text("- hosts: localhost\n  gather_facts: false\n  roles: [fleet_common]\n")
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_ROLES_PATH=str(ROOT / "roles"))
    out = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
                          str(playbook)], capture_output=True, text=True, env=env, cwd=ROOT)
    assert out.returncode != 0
    assert "fleet_common is internal to the roles of this project" in " ".join(out.stdout.split())


def test_the_seed_names_are_kept():
    options = entry_points("vllm_server")["main"]["options"]
    for name in ("model_root", "model_dir", "model_name", "gpus", "port", "device", "api_key", "extra_args"):
        assert f"vllm_server_{name}" in options
    assert options["vllm_server_port"]["default"] == 9999


def test_the_tag_checks_cover_every_advertised_tag():
    """tests/tag_runner.py is what molecule runs for each advertised tag: it must know them all."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tag_runner import EXPECT, SCENARIOS, advertised

    table = advertised()
    covered = {pb for _, playbooks in SCENARIOS.values() for pb in playbooks}
    assert covered == {pb for pb, tags in table.items() if tags}
    assert {t for tags in table.values() for t in tags} == set(EXPECT)
    for role in ("docker_engine", "nvidia_driver", "nvidia_container_toolkit", "vllm_server"):
        for tag in re.findall(rf"\b{role}_(?:preflight|install|configure|services|image|service|verify)\b",
                              (ROOT / "roles" / role / "tasks" / "main.yml").read_text()):
            assert tag in EXPECT, f"{role}'s tasks use {tag}, which the README does not advertise"
