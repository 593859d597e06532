"""Images built here carry local names: scripts/build-images.sh, its archive and inventories/local agree."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest
from ansible.inventory.manager import InventoryManager
from ansible.parsing.dataloader import DataLoader
from ansible.plugins.loader import init_plugin_loader
from ansible.template import Templar
from ansible.vars.manager import VariableManager
from role_vars import ROOT, role_variables

init_plugin_loader()

BASE = "local/debian:bookworm-slim"
ARCHIVE = "images/local-debian-bookworm-slim.tar"  # under the cache: $CACHE in the script, vllm_fleet_cache
SCRIPT = ROOT / "scripts" / "build-images.sh"


def local_host_settings(cache: str, monkeypatch) -> dict:
    """What the role reads on the demo host, templated as Ansible does, with the cache `make` exports."""
    monkeypatch.setenv("VLLM_FLEET_CACHE", cache)
    loader = DataLoader()
    inv = InventoryManager(loader=loader, sources=[str(ROOT / "inventories" / "local")])
    (host,) = inv.get_hosts("vllm_servers")
    variables = role_variables(**{**VariableManager(loader=loader, inventory=inv).get_vars(host=host),
                                  "playbook_dir": str(ROOT / "playbooks")})
    templar = Templar(loader=loader, variables=variables)
    return {k: templar.template(variables[k]) for k in ("__vllm_server_build_args", "vllm_server_image_preload")}


def test_the_local_inventory_builds_on_the_local_base_image_it_preloads(monkeypatch):
    s = local_host_settings("/cache", monkeypatch)
    assert s["__vllm_server_build_args"]["CPU_BASE_IMAGE"] == BASE
    assert s["vllm_server_image_preload"] == [{"name": BASE, "archive": f"/cache/{ARCHIVE}"}]


def test_the_makefile_hands_the_same_cache_to_the_script_and_the_playbooks():
    makefile = (ROOT / "Makefile").read_text()
    assert "export VLLM_FLEET_CACHE := $(CACHE)" in makefile
    assert "CACHE=$(CACHE) scripts/build-images.sh bookworm" in makefile


@pytest.fixture
def build(tmp_path):
    """Run build-images.sh with stand-ins for docker and debootstrap; returns (run, docker calls, cache)."""
    bin_dir, cache, log, present = tmp_path / "bin", tmp_path / "cache", tmp_path / "docker.log", tmp_path / "images"
    bin_dir.mkdir()
    present.write_text("")
    (bin_dir / "debootstrap").write_text('#!/bin/bash\nroot="${@: -2:1}"; mkdir -p "$root/etc"\n')
    (bin_dir / "docker").write_text(f"""#!/bin/bash
echo "$*" >> {log}
case "$1" in
  image) grep -qxF "$3" {present} ;;
  import) cat >/dev/null; echo "${{@: -1}}" >> {present} ;;
  save) d=$(mktemp -d); printf '[{{"RepoTags":["%s"]}}]' "$2" > "$d/manifest.json"
        tar -C "$d" -cf "$4" manifest.json; rm -r "$d" ;;
  *) exit 1 ;;
esac
""")
    for f in bin_dir.iterdir():
        f.chmod(0o755)

    def run(*suites: str) -> list[str]:
        log.write_text("")
        env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "CACHE": str(cache), "DOCKER": str(bin_dir / "docker")}
        r = subprocess.run(["bash", str(SCRIPT), *suites], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        return log.read_text().splitlines()

    return run, cache


def names_in(archive: Path) -> str:
    with tarfile.open(archive) as t:
        return t.extractfile("manifest.json").read().decode()


def test_build_images_makes_and_saves_the_base_image_under_its_local_name(build):
    run, cache = build
    calls = run("bookworm")
    imported = [c.split()[-1] for c in calls if c.startswith("import ")]
    assert imported == ["local/vllm-testhost-debian:bookworm", BASE]
    assert [c for c in calls if c.startswith("save ")] == [f"save {BASE} -o {cache / ARCHIVE}.tmp"]
    assert f'"{BASE}"' in names_in(cache / ARCHIVE)
    # no image of this project under a public name
    assert all(c.split()[-1].startswith("local/") for c in calls if c.startswith(("import ", "image ")))


def test_build_images_keeps_what_exists(build):
    run, _ = build
    run("bookworm")
    calls = run("bookworm")
    assert not [c for c in calls if c.startswith(("import ", "save "))]


def test_build_images_saves_again_an_archive_without_the_local_name(build, tmp_path):
    run, cache = build
    run("bookworm")
    stale = tmp_path / "manifest.json"
    stale.write_text('[{"RepoTags":["debian:bookworm-slim"]}]')
    with tarfile.open(cache / ARCHIVE, "w") as t:
        t.add(stale, arcname="manifest.json")
    calls = run("bookworm")
    assert [c for c in calls if c.startswith("save ")] == [f"save {BASE} -o {cache / ARCHIVE}.tmp"]
    assert f'"{BASE}"' in names_in(cache / ARCHIVE)
