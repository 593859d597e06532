"""One list of supported platforms per role (vars/main.yml, which the platform check reads), and
meta/main.yml and the README's platform table say the same."""

from __future__ import annotations

import re

import pytest
import yaml
from role_vars import ROOT, defaults_and_vars

ROLES = ["docker_engine", "nvidia_driver", "nvidia_container_toolkit", "vllm_server", "vllm_gateway", "docker_registry"]
CODENAMES = {"Debian": {"11": "bullseye", "12": "bookworm", "13": "trixie"},
             "Ubuntu": {"20": "focal", "22": "jammy", "24": "noble"}}
EL = ("CentOS", "Rocky", "AlmaLinux", "RedHat")
COLUMNS = ["Debian", "Ubuntu", "CentOS", "Rocky", "AlmaLinux", "RedHat"]


def supported(role: str) -> dict[str, list[str]]:
    return defaults_and_vars(role)[f"__{role}_platforms"]


def readme_rows() -> dict[str, dict[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Supported platforms"):]
    rows = {}
    for line in section.splitlines()[1:]:
        m = re.match(r"\| `(\w+)` \|(.*)\|\s*$", line)
        if m:
            cells = [c.strip() for c in m.group(2).split("|")]
            rows[m.group(1)] = {col: [v.split(".")[0] for v in re.findall(r"[\d.]+", cell)]
                                for col, cell in zip(COLUMNS, cells, strict=True)}
        elif line.startswith("## "):
            break
    return rows


@pytest.mark.parametrize("role", ROLES)
def test_meta_main_lists_the_roles_platforms(role):
    platforms = {p["name"]: [str(v) for v in p["versions"]]
                 for p in yaml.safe_load((ROOT / "roles" / role / "meta" / "main.yml").read_text())["galaxy_info"]
                 ["platforms"]}
    mine = supported(role)
    for dist in ("Debian", "Ubuntu"):
        assert platforms[dist] == [CODENAMES[dist][v] for v in mine[dist]], dist
    assert platforms.get("EL", []) == sorted({v for d in EL for v in mine.get(d, [])})


@pytest.mark.parametrize("role", ROLES)
def test_the_readme_lists_the_roles_platforms(role):
    row = readme_rows()[role]
    mine = supported(role)
    assert row == {col: mine.get(col, []) for col in COLUMNS}


def test_the_readme_table_has_a_row_per_role():
    assert sorted(readme_rows()) == sorted(ROLES)
