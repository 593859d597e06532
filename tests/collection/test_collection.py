"""The project as the collection vllm_fleet.fleet: built, installed, and used by full names only.

The collection is built from this checkout (galaxy.yml) into a temporary directory, installed
there with ansible-galaxy (offline, without dependencies: community.docker, ansible.posix and
community.general come with the `ansible` package of the venv), and used from playbooks that run
against localhost (connection local, nothing changed, no become) with an empty ansible.cfg, an
ANSIBLE_HOME of their own and no ANSIBLE_* variables from the caller: nothing of the checkout's
roles_path, library, module_utils or filter_plugins can help, so what passes here passes for a
project that only installed the collection.

Run with `make collection` (about twenty seconds). VLLM_FLEET_COLLECTION_SRC builds another tree.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(os.environ.get("VLLM_FLEET_COLLECTION_SRC", ROOT)).resolve()
GALAXY = yaml.safe_load((SRC / "galaxy.yml").read_text())
FQCN = f"{GALAXY['namespace']}.{GALAXY['name']}"
BIN = Path(sys.executable).parent
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# what a user of the collection gets: anything else at the top of the artifact is a build_ignore gap
SHIPPED_TOP = {"MANIFEST.json", "FILES.json", "README.md", "CHANGELOG.md", "LICENSE", "docs", "meta", "roles",
               "plugins", "playbooks", "inventories"}
NEVER_SHIPPED = re.compile(r"(^|/)(\.venv|\.cache|\.git|\.ansible|\.ci|\.devcap|molecule|tests|demo|scripts|"
                           r"__pycache__|\.pytest_cache|\.ruff_cache)(/|$)|^inventories/(local|demo-fleet)(/|$)|\.pyc$|"
                           r"^(ansible\.cfg|Makefile|pyproject\.toml|requirements\.yml|galaxy\.yml|files)$")
GPU_KEYS = {"pci_gpus", "pci_gpu_count", "nvswitches", "nvswitch_count", "kernel_module", "nouveau_loaded",
            "secure_boot", "nvidia_smi", "smi_ok", "smi_error", "count", "gpus", "driver_version", "driver_branch",
            "cuda_version", "fabricmanager_installed", "dev_char_missing"}
VALID_ROLE_VARS = {"vllm_server_device": "cpu", "vllm_server_model_root": "/srv/models",
                   "vllm_server_model_dir": "tiny-chat"}


def tool(name: str) -> str:
    found = BIN / name
    return str(found) if found.exists() else shutil.which(name) or name


def words(text: str) -> str:
    return " ".join(ANSI.sub("", text).split())


class Env:
    """A place with the collection installed and nothing else of this project."""

    def __init__(self, base: Path):
        self.base = base
        # not "collections": ansible-playbook also searches <playbook dir>/collections, and the playbooks
        # here are written next to it; only ANSIBLE_COLLECTIONS_PATH should find it
        self.collections = base / "installed"
        self.dist = base / "dist"
        (base / "ansible.cfg").write_text("[defaults]\n")
        (base / "home").mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        self.env.update(ANSIBLE_CONFIG=str(base / "ansible.cfg"), ANSIBLE_HOME=str(base / "home"),
                        ANSIBLE_COLLECTIONS_PATH=str(self.collections), ANSIBLE_NOCOLOR="1",
                        ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="0",
                        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        (base / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"localhost": {
            "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}))

    def run(self, *argv: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
        r = subprocess.run([tool(argv[0]), *argv[1:]], cwd=self.base, env={**self.env, **(env or {})},
                           capture_output=True, text=True, timeout=300)
        if check:
            assert r.returncode == 0, f"{' '.join(argv)}: rc {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r

    def playbook(self, name: str, plays: list, check: bool = True) -> subprocess.CompletedProcess:
        """Write the plays to NAME here and run them against localhost."""
        (self.base / name).write_text(yaml.safe_dump(plays, sort_keys=False))
        return self.run("ansible-playbook", "-i", "hosts.yml", name, check=check)


@pytest.fixture(scope="module")
def coll(tmp_path_factory) -> Env:
    e = Env(tmp_path_factory.mktemp("collection"))
    e.run("ansible-galaxy", "collection", "build", str(SRC), "--output-path", str(e.dist))
    (e.tarball,) = e.dist.glob("*.tar.gz")
    # --force: this build, even where a copy of the same version is installed elsewhere
    e.run("ansible-galaxy", "collection", "install", "--offline", "--no-deps", "--force", "-p", str(e.collections),
          str(e.tarball))
    e.installed = e.collections / "ansible_collections" / GALAXY["namespace"] / GALAXY["name"]
    return e


def local_play(tasks: list) -> list:
    return [{"name": "Use the collection by full names", "hosts": "localhost", "gather_facts": False,
             "tasks": tasks}]


# --- the artifact -----------------------------------------------------------------------------------

def test_version_is_pyproject_version():
    # (the project supports Python 3.10, which has no tomllib)
    project = (SRC / "pyproject.toml").read_text().split("[project]", 1)[1].split("\n[", 1)[0]
    assert f'version = "{GALAXY["version"]}"' in project.splitlines()


def test_artifact_holds_what_users_need_and_nothing_else(coll):
    with tarfile.open(coll.tarball) as tar:
        names = [m.name for m in tar.getmembers()]
    assert {n.split("/")[0] for n in names} <= SHIPPED_TOP
    assert [n for n in names if NEVER_SHIPPED.search(n)] == []
    for needed in ("meta/runtime.yml", "README.md", "CHANGELOG.md", "playbooks/site.yml",
                   "roles/vllm_server/tasks/validate.yml", "roles/vllm_server/meta/argument_specs.yml",
                   "roles/vllm_server/files/Dockerfile", "plugins/modules/nvidia_gpu_info.py",
                   "plugins/modules/vllm_server_probe.py", "plugins/module_utils/nvidia_gpu.py",
                   "plugins/module_utils/vllm_openai_probe.py", "plugins/filter/vllm_server.py",
                   "plugins/modules/signing_key.py", "plugins/module_utils/openpgp_key.py",
                   "plugins/filter/nvidia.py"):
        assert needed in names
    roles = {p.name for p in (SRC / "roles").iterdir() if (p / "tasks").is_dir()}
    assert roles <= {n.split("/")[1] for n in names if n.startswith("roles/") and n.count("/") >= 2}
    assert coll.tarball.stat().st_size < 1024 * 1024


def test_manifest_names_the_pinned_dependencies(coll):
    with tarfile.open(coll.tarball) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    assert (info["namespace"], info["name"], info["version"]) == ("vllm_fleet", "fleet", GALAXY["version"])
    assert info["license"] == ["Apache-2.0"]
    pins = {c["name"]: c["version"] for c in yaml.safe_load((SRC / "requirements.yml").read_text())["collections"]}
    assert set(info["dependencies"]) == set(pins)
    for name, spec in info["dependencies"].items():
        assert spec.startswith(f">={pins[name]},"), (name, spec, "must admit the pinned version")


def test_installed_and_listed(coll):
    out = coll.run("ansible-galaxy", "collection", "list", FQCN, "-p", str(coll.collections)).stdout
    assert re.search(rf"^{re.escape(FQCN)}\s+{re.escape(str(GALAXY['version']))}\s*$", out, re.M), out
    assert (coll.installed / "meta" / "runtime.yml").is_file()


# --- modules and roles by full name -------------------------------------------------------------------

def test_the_checkout_does_not_leak_in(coll):
    """Short names of the project's plugins must not resolve here, or the tests below prove nothing."""
    r = coll.playbook("short.yml", local_play([{"name": "Short name", "nvidia_gpu_info": None}]), check=False)
    assert r.returncode != 0
    assert "couldn't resolve module/action 'nvidia_gpu_info'" in words(r.stdout + r.stderr)


def test_gpu_discovery_module(coll):
    out = coll.base / "gpu.json"
    coll.playbook("gpu.yml", local_play([
        {"name": "Discover the GPUs", f"{FQCN}.nvidia_gpu_info": None, "register": "gpu"},
        {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ gpu | to_json }}", "dest": str(out),
                                                            "mode": "0600"}},
    ]))
    result = json.loads(out.read_text())
    assert result["changed"] is False and not result.get("failed")
    gpu = result["nvidia_gpu"]
    assert GPU_KEYS <= set(gpu)
    assert gpu["pci_gpu_count"] == len(gpu["pci_gpus"])
    assert gpu["count"] == len(gpu["gpus"])
    if not Path("/proc/driver/nvidia/version").exists():
        assert gpu["kernel_module"]["loaded"] is False


def test_the_checkout_keeps_its_own_helpers_with_the_collection_installed(coll):
    """From the checkout (its ansible.cfg), the module runs the checkout's module_utils even where an
    installed copy of the collection is on the collections path too (molecule's prerun installs one
    into ~/.ansible/collections): here a copy whose helper marks its answers."""
    stale = coll.base / "stale"
    shutil.copytree(coll.collections, stale)
    helper = stale / "ansible_collections" / "vllm_fleet" / "fleet" / "plugins" / "module_utils" / "nvidia_gpu.py"
    helper.write_text(helper.read_text() + "\n\n_gather = gather\n\n\ndef gather(run):\n"
                      "    found = _gather(run)\n    found['from_installed_copy'] = True\n    return found\n")
    out = coll.base / "checkout-gpu.json"
    (coll.base / "checkout.yml").write_text(yaml.safe_dump(local_play([
        {"name": "Short name, from the checkout", "nvidia_gpu_info": None, "register": "gpu"},
        {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ gpu | to_json }}", "dest": str(out),
                                                            "mode": "0600"}},
    ]), sort_keys=False))
    # the checkout's own ansible.cfg (roles_path, library, module_utils, filter_plugins)
    coll.run("ansible-playbook", "-i", "hosts.yml", "checkout.yml",
             env={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "ANSIBLE_COLLECTIONS_PATH": str(stale)})
    gpu = json.loads(out.read_text())["nvidia_gpu"]
    assert GPU_KEYS <= set(gpu)
    assert "from_installed_copy" not in gpu


def test_probe_module_fails_with_its_own_message(coll):
    """The probe's helpers (module_utils) travel with it: an endpoint that does not answer is its own error."""
    r = coll.playbook("probe.yml", local_play([
        {"name": "Probe nothing", f"{FQCN}.vllm_server_probe": {"url": "http://127.0.0.1:9", "model": "none",
                                                               "health_timeout": 1, "request_timeout": 1}},
    ]), check=False)
    text = words(r.stdout + r.stderr)
    assert r.returncode != 0
    assert "Could not find imported module support code" not in text and "MODULE FAILURE" not in text, text
    assert "http://127.0.0.1:9/health did not answer 200" in text, text


def runnable(python: str) -> str | None:
    """PYTHON on the PATH, or one that pyenv installed (whose shims answer only where it is selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    for found in (shutil.which(python), *sorted(pyenv.glob(f"versions/*/bin/{python}"))):
        if found and subprocess.run([found, "-c", "import json"], capture_output=True).returncode == 0:
            return str(found)
    return None


@pytest.mark.parametrize("python", ["python2.7", "python3.6"])
def test_modules_on_the_pythons_of_centos7(coll, python):
    """CentOS 7 hosts run modules with Python 2.7 or 3.6: both modules, from the collection, on them."""
    interpreter = runnable(python)
    if not interpreter:
        pytest.skip(f"no {python} here")
    out = coll.base / f"gpu-{python}.json"
    r = coll.playbook(f"{python}.yml", local_play([
        {"name": "Discover the GPUs", f"{FQCN}.nvidia_gpu_info": None, "register": "gpu",
         "vars": {"ansible_python_interpreter": interpreter}},
        {"name": "Keep the result", "ansible.builtin.copy": {"content": "{{ gpu | to_json }}", "dest": str(out),
                                                            "mode": "0600"}},
        {"name": "Probe nothing", f"{FQCN}.vllm_server_probe": {"url": "http://127.0.0.1:9", "model": "none",
                                                               "health_timeout": 1},
         "vars": {"ansible_python_interpreter": interpreter}},
    ]), check=False)
    text = words(r.stdout + r.stderr)
    assert GPU_KEYS <= set(json.loads(out.read_text())["nvidia_gpu"])
    assert "http://127.0.0.1:9/health did not answer 200" in text, text


# RFC 9580's sample version 4 key (appendix A.1), and its fingerprint as the RFC gives it
RFC9580_V4 = base64.b64decode("xjMEU/NfCxYJKwYBBAHaRw8BAQdAPwmJlL3ZFu1AUxl5NOSofIBzOhKA1i+AEJkuQ+47JAY=")
RFC9580_V4_FPR = "C959BDBAFA32A2F89A153B678CFDE12197965A9A"


@pytest.mark.parametrize("python", ["controller", "python2.7", "python3.6"])
def test_signing_key_by_full_name(coll, python):
    """The pinning module and its reader (module_utils) from the collection, on the controller's Python
    and on those of CentOS 7: the pinned key written, another fingerprint refused with nothing written."""
    interpreter = sys.executable if python == "controller" else runnable(python)
    if not interpreter:
        pytest.skip(f"no {python} here")
    key, dest, never = coll.base / "key.gpg", coll.base / f"pinned-{python}.asc", coll.base / f"never-{python}.asc"
    key.write_bytes(RFC9580_V4)
    out = coll.base / f"signing-key-{python}.json"
    on_python = {"ansible_python_interpreter": interpreter}
    coll.playbook(f"signing-key-{python}.yml", local_play([
        {"name": "Keep the pinned key", f"{FQCN}.signing_key": {
            "src": str(key), "fingerprint": "c959 bdba fa32 a2f8 9a15 3b67 8cfd e121 9796 5a9a", "dest": str(dest)},
         "register": "pinned", "vars": on_python},
        {"name": "Refuse another", f"{FQCN}.signing_key": {
            "src": str(key), "fingerprint": "0" * 40, "dest": str(never)},
         "register": "refused", "ignore_errors": True, "vars": on_python},
        {"name": "Keep the results", "ansible.builtin.copy": {
            "content": "{{ {'pinned': pinned, 'refused': refused} | to_json }}", "dest": str(out), "mode": "0600"}},
    ]))
    result = json.loads(out.read_text())
    assert result["pinned"]["changed"] is True and result["pinned"]["fingerprint"] == [RFC9580_V4_FPR]
    assert dest.read_text().startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert result["refused"]["failed"] is True and not never.exists()
    assert "expected 0000 0000" in result["refused"]["msg"] and "found C959 BDBA" in result["refused"]["msg"]


def validate_play(role_vars: dict) -> list:
    return local_play([{"name": "Check the vllm_server variables",
                        "ansible.builtin.include_role": {"name": f"{FQCN}.vllm_server", "tasks_from": "validate"},
                        "vars": role_vars}])


def test_role_validate_accepts_valid_variables(coll):
    r = coll.playbook("valid.yml", validate_play(VALID_ROLE_VARS), check=False)
    assert r.returncode == 0, words(r.stdout + r.stderr)
    assert re.search(r"ok=\d+ .*failed=0", words(r.stdout))


def test_role_validate_refuses_a_relative_model_root(coll):
    r = coll.playbook("invalid.yml", validate_play({**VALID_ROLE_VARS, "vllm_server_model_root": "relative/path"}),
                      check=False)
    text = words(r.stdout + r.stderr)
    assert r.returncode != 0
    assert "Could not load" not in text, text  # a filter that did not resolve is not a refusal
    assert "vllm_server_model_root" in text and "relative/path" in text, text


# --- the shipped playbooks ----------------------------------------------------------------------------

PLAYBOOKS = sorted(p.stem for p in (SRC / "playbooks").glob("*.yml"))


def test_every_shipped_playbook_has_a_full_name(coll):
    """ansible-playbook ns.coll.NAME takes NAME as a Python identifier (letters, digits, "_"): gpu-check is not one."""
    shipped = [p.stem for p in (coll.installed / "playbooks").glob("*.yml")]
    assert shipped
    assert [p for p in shipped if not p.isidentifier()] == []


@pytest.mark.parametrize("name", [p for p in PLAYBOOKS if p.isidentifier()])
def test_playbook_by_full_name_passes_syntax_check(coll, name):
    if not (coll.installed / "playbooks" / f"{name}.yml").is_file():
        pytest.skip(f"playbooks/{name}.yml is not shipped")
    r = coll.run("ansible-playbook", "-i", "hosts.yml", "--syntax-check", f"{FQCN}.{name}", check=False)
    text = words(r.stdout + r.stderr)
    assert r.returncode == 0, text
    assert f"playbook: {coll.installed / 'playbooks' / name}.yml" in text


def test_site_from_the_collection_checks_the_inventory_first(coll):
    """site's first play reaches the role by its short name, from the collection's own playbook.

    A bad variable stops the run there (any_errors_fatal). --check and a tag nothing carries
    keep every later play from changing anything, whatever happens.
    """
    inventory = coll.base / "site-hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"vllm_servers": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable,
        **VALID_ROLE_VARS, "vllm_server_model_root": "relative/path"}}}}}}))
    r = coll.run("ansible-playbook", "-i", str(inventory), f"{FQCN}.site", "--check", "--tags", "no_such_tag",
                 check=False)
    text = words(r.stdout + r.stderr)
    assert r.returncode != 0
    assert "Could not load" not in text, text
    assert "vllm_server_model_root" in text and "relative/path" in text, text
    assert "PLAY [Check the inventory before changing anything]" in text, text
    assert text.count("PLAY [") == 1, text  # the imported playbooks never started
