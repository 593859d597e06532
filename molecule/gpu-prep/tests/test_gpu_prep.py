"""GPU host preparation on hosts without a GPU: what ran for real, what was left out and said so."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))
from playbook_runner import run_playbook  # noqa: E402

FORCED, NOGPU = "gpuprep-forced", "gpuprep-nogpu"
REPO = "/srv/test-double-nvidia-repo"
TOOLKIT_SOURCES = "/etc/apt/sources.list.d/nvidia-container-toolkit.sources"
TOOLKIT_KEY = "/etc/apt/keyrings/nvidia-container-toolkit.asc"
# Debian's archive keys as nvidia_driver pins them (roles/nvidia_driver/vars/Debian.yml)
DEBIAN_ARCHIVE_KEYS = {"11": "1F89983E0081FDE018F3CC9673A4F27B8DD47936",
                       "12": "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"}
USERSPACE = ["nvidia-smi", "libcuda1", "libnvidia-ml1", "nvidia-persistenced", "libnvidia-cfg1"]
TOOLKIT = ["nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
           "libnvidia-container1"]


def on(host, name):
    if host.backend.get_hostname() != name:
        pytest.skip(f"checked on {name}")


def primary_keys(host, path: str) -> list[str]:
    """The primary keys' fingerprints of a key file on the host, as gpg (not the roles' reader) gives them."""
    found, primary = [], False
    for line in host.check_output(f"gpg --batch --with-colons --show-keys {path}").splitlines():
        kind = line.split(":")[0]
        if kind in ("pub", "sub"):
            primary = kind == "pub"
        elif kind == "fpr" and primary:  # the first fpr after pub (rvk lines may come between)
            found.append(line.split(":")[9])
            primary = False
    return found


def spaced(fingerprint: str) -> str:
    return " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4))


def prepared_fingerprint() -> str:
    """What prepare.yml handed to the converge: the fingerprint of the key it made."""
    return (Path(os.environ["MOLECULE_EPHEMERAL_DIRECTORY"]) / "test-double-key.fingerprint").read_text().strip()


# ---- the forced host: Debian's NVIDIA user space, nouveau, the toolkit, Docker's nvidia runtime -----
def test_debians_driver_user_space_is_installed_at_the_branch(host):
    on(host, FORCED)
    for name in USERSPACE:
        pkg = host.package(name)
        assert pkg.is_installed, name
        assert pkg.version.startswith("535."), (name, pkg.version)


def test_the_kernel_module_steps_were_left_out(host):
    on(host, FORCED)
    for name in ("nvidia-kernel-dkms", "nvidia-open-kernel-dkms", "dkms", "firmware-misc-nonfree"):
        assert not host.package(name).is_installed, name
    assert not host.exists("update-initramfs")
    assert not host.file("/sys/module/nvidia").exists


def test_the_real_nvidia_smi_is_there_and_finds_no_driver(host):
    on(host, FORCED)
    out = host.run("nvidia-smi")
    assert out.rc != 0
    text = out.stdout + out.stderr  # Debian's nvidia-smi 535 without a kernel module
    assert "Failed to initialize NVML" in text or "couldn't communicate with the NVIDIA driver" in text, text


def test_nouveau_is_blacklisted(host):
    on(host, FORCED)
    conf = host.file("/etc/modprobe.d/blacklist-nouveau.conf")
    assert conf.contains("^blacklist nouveau$") and conf.contains("^options nouveau modeset=0$")
    assert conf.mode == 0o644


def test_debians_non_free_archive_is_wired_with_its_release_key_only(host):
    on(host, FORCED)
    src = host.file("/etc/apt/sources.list.d/debian-non-free.sources")
    assert src.contains("^Components: contrib non-free")
    assert src.contains("^Signed-By: /etc/apt/keyrings/debian-non-free.asc$")
    # out of debian-archive-keyring's nine or so keys, the release's archive key alone is trusted for it
    major = host.check_output(". /etc/os-release && echo $VERSION_ID")
    assert primary_keys(host, "/etc/apt/keyrings/debian-non-free.asc") == [DEBIAN_ARCHIVE_KEYS[major]]
    assert len(primary_keys(host, "/usr/share/keyrings/debian-archive-keyring.gpg")) > 1
    assert host.file("/etc/apt/keyrings/debian-non-free.asc").mode == 0o644


def test_the_toolkit_repository_is_signed_and_the_version_held(host):
    on(host, FORCED)
    src = host.file(TOOLKIT_SOURCES)
    assert src.contains("^URIs: http://127.0.0.1:8089/stable/deb/amd64$")
    assert src.contains(f"^Signed-By: {TOOLKIT_KEY}$")
    # the key the converge pinned (prepare's, as gpg made it) is the one apt trusts, and the only one
    assert primary_keys(host, TOOLKIT_KEY) == [prepared_fingerprint()] == primary_keys(host, f"{REPO}/gpgkey")
    policy = host.check_output("apt-cache policy nvidia-container-toolkit")
    assert "Candidate: 1.19.0-1" in policy  # the repository offers a newer one ...
    for name in TOOLKIT:  # ... and every package stays at the pinned version
        assert host.package(name).version == "1.18.2-1", name
    # the packages really came from the (test double) repository, verified with its key
    assert "TEST DOUBLE" in host.file("/usr/share/doc/nvidia-container-toolkit/TEST-DOUBLE").content_string


def test_an_unsigned_repository_would_be_refused(host):
    """The key is really used: apt refuses the repository once its signature no longer verifies."""
    on(host, FORCED)
    release = f"{REPO}/stable/deb/amd64/InRelease"
    only_toolkit = ("-o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts=/tmp/toolkit-sources "
                    "-o Dir::State::Lists=/tmp/toolkit-lists")
    host.run_expect([0], f"cp {release} /tmp/InRelease.good && mkdir -p /tmp/toolkit-sources /tmp/toolkit-lists/partial"
                         " && cp /etc/apt/sources.list.d/nvidia-container-toolkit.sources /tmp/toolkit-sources/")
    try:
        assert host.run(f"apt-get update {only_toolkit}").rc == 0  # the genuine one verifies
        host.run_expect([0], f"sed -i 's/^Origin: .*/Origin: tampered/' {release}")
        out = host.run(f"apt-get update {only_toolkit}")
        text = out.stdout + out.stderr
        assert out.rc != 0 or "BADSIG" in text or "not signed" in text, text
        assert "BADSIG" in text or "NO_PUBKEY" in text or "not signed" in text or "invalid" in text, text
    finally:
        host.run(f"cp /tmp/InRelease.good {release}; rm -rf /tmp/toolkit-sources /tmp/toolkit-lists")


def toolkit_state(host) -> str:
    return host.check_output(f"sha256sum {TOOLKIT_SOURCES} {TOOLKIT_KEY} 2>&1; ls /etc/apt/sources.list.d")


def test_a_wrong_fingerprint_is_refused_before_the_repository_is_added(host):
    """The pinned fingerprint is what is checked: with another one pinned, the key the repository serves
    (the genuine one) is refused, naming both, and neither the key nor the source is written."""
    on(host, FORCED)
    wrong = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
    host.run_expect([0], f"mkdir -p /tmp/toolkit-aside && mv {TOOLKIT_SOURCES} {TOOLKIT_KEY} /tmp/toolkit-aside/")
    try:
        rc, out = run_playbook(host, "nvidia_container_toolkit.yml",
                               {"nvidia_container_toolkit_repo_key_fingerprint": spaced(wrong).lower()})
        assert rc != 0
        assert (f"The key from http://127.0.0.1:8089/gpgkey is not the pinned one: expected {spaced(wrong)}; "
                f"found {spaced(prepared_fingerprint())} (vllm-fleet test double repository <tests@invalid>). "
                f"{TOOLKIT_KEY} was left as it was.") in out, out[-3000:]
        assert "changed=0" in out
        assert not host.file(TOOLKIT_KEY).exists and not host.file(TOOLKIT_SOURCES).exists  # never added
    finally:
        host.run(f"mv /tmp/toolkit-aside/{Path(TOOLKIT_SOURCES).name} {TOOLKIT_SOURCES}; "
                 f"mv /tmp/toolkit-aside/{Path(TOOLKIT_KEY).name} {TOOLKIT_KEY}; rm -rf /tmp/toolkit-aside")
    assert host.file(TOOLKIT_KEY).exists and host.file(TOOLKIT_SOURCES).exists


def test_a_fingerprint_that_is_not_one_is_refused_before_any_change(host):
    on(host, FORCED)
    before = toolkit_state(host)
    rc, out = run_playbook(host, "nvidia_container_toolkit.yml",
                           {"nvidia_container_toolkit_repo_key_fingerprint": "F796ECB0"})  # a short key ID
    assert rc != 0
    # (the YAML output doubles the ' around the value)
    assert "nvidia_container_toolkit_repo_key_fingerprint: ''F796ECB0'' is not a full key fingerprint" in out or \
        "nvidia_container_toolkit_repo_key_fingerprint: 'F796ECB0' is not a full key fingerprint" in out, out[-3000:]
    assert "changed=0" in out and toolkit_state(host) == before


def swap_served_key(host, script: str):
    """The repository's key URL made to serve something else (a key made here, alone or after the genuine
    one); restored by the caller."""
    host.run_expect([0], f"cp {REPO}/gpgkey /tmp/gpgkey.good && export GNUPGHOME=$(mktemp -d) && "
                         "gpg --batch --quiet --pinentry-mode loopback --passphrase '' --quick-gen-key "
                         "'Impostor <impostor@invalid>' ed25519 sign never && "
                         f"gpg --batch --armor --export > /tmp/impostor.asc && {script}")
    return primary_keys(host, "/tmp/impostor.asc")[0]


def test_another_key_at_the_keys_url_is_refused(host):
    """Whoever controls the key's URL cannot swap the key: the pinned fingerprint is not in what it serves."""
    on(host, FORCED)
    before = toolkit_state(host)
    try:
        impostor = swap_served_key(host, f"cp /tmp/impostor.asc {REPO}/gpgkey")
        rc, out = run_playbook(host, "nvidia_container_toolkit.yml")
        assert rc != 0
        assert (f"is not the pinned one: expected {spaced(prepared_fingerprint())}; "
                f"found {spaced(impostor)} (Impostor <impostor@invalid>)") in out, out[-3000:]
        assert "changed=0" in out and toolkit_state(host) == before
    finally:
        host.run(f"cp /tmp/gpgkey.good {REPO}/gpgkey; rm -f /tmp/gpgkey.good /tmp/impostor.asc")


def test_a_key_served_with_another_one_does_not_get_the_other_one_trusted(host):
    on(host, FORCED)
    before = toolkit_state(host)
    try:
        swap_served_key(host, f"cat /tmp/impostor.asc >> {REPO}/gpgkey")
        assert len(primary_keys(host, f"{REPO}/gpgkey")) == 2
        rc, out = run_playbook(host, "nvidia_container_toolkit.yml")
        assert rc == 0, out[-3000:]
        assert "changed=0" in out  # the key file written is the same: the pinned key alone
        assert toolkit_state(host) == before
        assert primary_keys(host, TOOLKIT_KEY) == [prepared_fingerprint()]
    finally:
        host.run(f"cp /tmp/gpgkey.good {REPO}/gpgkey; rm -f /tmp/gpgkey.good /tmp/impostor.asc")


def test_docker_has_the_nvidia_runtime_through_docker_engine(host):
    on(host, FORCED)
    daemon = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert daemon["runtimes"] == {"nvidia": {"path": "nvidia-container-runtime", "args": []}}
    assert daemon["live-restore"] is True and daemon["log-opts"]["max-size"] == "100m"  # docker_engine's keys kept
    assert "default-runtime" not in daemon
    fragment = json.loads(host.file("/etc/docker/daemon.json.d/nvidia-container-toolkit.json").content_string)
    assert fragment == {"runtimes": daemon["runtimes"]}
    runtimes = json.loads(host.check_output("docker info --format '{{json .Runtimes}}'"))
    assert "nvidia" in runtimes and "runc" in runtimes


def test_docker_engine_alone_keeps_the_runtime(host):
    """The fight other roles have over daemon.json: re-running docker_engine alone changes nothing."""
    on(host, FORCED)
    before = host.file("/etc/docker/daemon.json").sha256sum
    rc, out = run_playbook(host, "docker_engine.yml")
    assert rc == 0, out[-3000:]
    assert "changed=0" in out
    assert host.file("/etc/docker/daemon.json").sha256sum == before


def test_dev_char_links_are_made_at_every_driver_load(host):
    on(host, FORCED)
    rule = host.file("/etc/udev/rules.d/71-nvidia-dev-char.rules")
    assert rule.contains("create-dev-char-symlinks --create-all")


def test_the_driver_run_reports_the_steps_it_left_out(host):
    on(host, FORCED)
    rc, out = run_playbook(host, "nvidia_driver.yml")
    assert rc == 0, out[-3000:]
    assert "changed=0" in out
    assert ("Skipped: kernel headers, DKMS module build, initramfs, module load and reboot on gpuprep-forced: "
            "the host is a docker container, which shares its host") in out  # (the YAML output doubles the ')
    assert "Skipped: nvidia-persistenced and fabric manager on gpuprep-forced: no NVIDIA driver answers" in out


def test_a_branch_debian_does_not_carry_is_refused_before_any_change(host):
    on(host, FORCED)
    before = host.check_output("dpkg-query -W -f '${Package}=${Version} ' 'nvidia*' 'libnvidia*' libcuda1")
    rc, out = run_playbook(host, "nvidia_driver.yml", {"nvidia_driver_branch": "580"})
    assert rc != 0
    assert ("nvidia_driver_branch: 580 is not offered by distro on Debian 12, whose newest is 535. "
            "Set nvidia_driver_branch: \"535\"") in out, out[-3000:]
    assert "changed=0" in out
    assert host.check_output("dpkg-query -W -f '${Package}=${Version} ' 'nvidia*' 'libnvidia*' libcuda1") == before


# ---- the host without a GPU, not forced: detected, skipped, untouched ----------------------------------
def test_without_a_gpu_nothing_is_installed(host):
    on(host, NOGPU)
    for name in USERSPACE + TOOLKIT:
        assert not host.package(name).is_installed, name
    for path in ("/etc/modprobe.d/blacklist-nouveau.conf", "/etc/apt/sources.list.d/debian-non-free.sources",
                 "/etc/apt/sources.list.d/nvidia-container-toolkit.sources", "/etc/docker",
                 "/etc/udev/rules.d/71-nvidia-dev-char.rules"):
        assert not host.file(path).exists, path


def test_without_a_gpu_the_run_says_so(host):
    on(host, NOGPU)
    rc, out = run_playbook(host, "nvidia_driver.yml")
    assert rc == 0 and "changed=0" in out, out[-3000:]
    assert "SKIP on gpuprep-nogpu: no NVIDIA GPU on the PCI bus of gpuprep-nogpu: nothing installed" in out
    assert "set nvidia_driver_force: true" in out
    rc, out = run_playbook(host, "nvidia_container_toolkit.yml")
    assert rc == 0 and "changed=0" in out, out[-3000:]
    assert "SKIP on gpuprep-nogpu: no NVIDIA GPU on the PCI bus, so no container toolkit" in out
