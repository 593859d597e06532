"""The module signing_key and its OpenPGP reader (plugins/module_utils/openpgp_key.py).

Keys come from three places, none from the network: the sample keys of RFC 9580 (a version 6
certificate and a version 4 Ed25519 key, with the fingerprints the RFC gives), keys generated here
with gpg (skipped where gpg is missing), and packets built by hand for the malformed cases.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import signing_key as mod
from ansible.module_utils import basic
from ansible.module_utils import openpgp_key as pgp
from ansible.module_utils.common.text.converters import to_bytes

ROOT = Path(__file__).resolve().parents[2]

# RFC 9580, appendix A.3: "Sample Version 6 Certificate (Transferable Public Key)" (no armor checksum,
# as version 6 armor goes), and its fingerprint as the RFC states it; A.1: the version 4 Ed25519 key.
RFC9580_V6 = b"""-----BEGIN PGP PUBLIC KEY BLOCK-----

xioGY4d/4xsAAAAg+U2nu0jWCmHlZ3BqZYfQMxmZu52JGggkLq2EVD34laPCsQYf
GwoAAABCBYJjh3/jAwsJBwUVCg4IDAIWAAKbAwIeCSIhBssYbE8GCaaX5NUt+mxy
KwwfHifBilZwj2Ul7Ce62azJBScJAgcCAAAAAK0oIBA+LX0ifsDm185Ecds2v8lw
gyU2kCcUmKfvBXbAf6rhRYWzuQOwEn7E/aLwIwRaLsdry0+VcallHhSu4RN6HWaE
QsiPlR4zxP/TP7mhfVEe7XWPxtnMUMtf15OyA51YBM4qBmOHf+MZAAAAIIaTJINn
+eUBXbki+PSAld2nhJh/LVmFsS+60WyvXkQ1wpsGGBsKAAAALAWCY4d/4wKbDCIh
BssYbE8GCaaX5NUt+mxyKwwfHifBilZwj2Ul7Ce62azJAAAAAAQBIKbpGG2dWTX8
j+VjFM21J0hqWlEg+bdiojWnKfA5AQpWUWtnNwDEM0g12vYxoWM8Y81W+bHBw805
I8kWVkXU6vFOi+HWvv/ira7ofJu16NnoUkhclkUrk0mXubZvyl4GBg==
-----END PGP PUBLIC KEY BLOCK-----
"""
RFC9580_V6_FPR = "CB186C4F0609A697E4D52DFA6C722B0C1F1E27C18A56708F6525EC27BAD9ACC9"
RFC9580_V6_SUBKEY = "12C83F1E706F6308FE151A417743A1F033790E93E9978488D1DB378DA9930885"
RFC9580_V4_ED25519 = base64.b64decode("xjMEU/NfCxYJKwYBBAHaRw8BAQdAPwmJlL3ZFu1AUxl5NOSofIBzOhKA1i+AEJkuQ+47JAY=")
RFC9580_V4_ED25519_FPR = "C959BDBAFA32A2F89A153B678CFDE12197965A9A"


def new_packet(tag: int, body: bytes) -> bytes:
    assert len(body) < 192
    return bytes([0xC0 | tag, len(body)]) + body


def old_packet(tag: int, body: bytes) -> bytes:
    """The old packet format (what gpg --export writes for keys), two-octet length."""
    return bytes([0x80 | (tag << 2) | 1, len(body) >> 8, len(body) & 0xFF]) + body


def primary_fingerprints(colons: str) -> list[str]:
    """The primary keys' fingerprints in gpg's --with-colons listing: the first fpr after each pub (a
    key with designated revokers has rvk lines between them)."""
    found, primary = [], False
    for line in colons.splitlines():
        kind = line.split(":")[0]
        if kind in ("pub", "sub"):
            primary = kind == "pub"
        elif kind == "fpr" and primary:
            found.append(line.split(":")[9])
            primary = False
    return found


def gpg_fingerprints(path: Path, env: dict) -> list[str]:
    return primary_fingerprints(subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys", str(path)],
                                               env=env, capture_output=True, text=True, check=True).stdout)


# ---- keys generated with gpg ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """Two keys made here: A (RSA 2048) and B (Ed25519), as armored and binary files and keyrings."""
    if not shutil.which("gpg"):
        pytest.skip("gpg is not installed here")
    base = tmp_path_factory.mktemp("gpg")
    home = base / "home"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> bytes:
        return subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                               *args], env=env, capture_output=True, check=True).stdout

    gpg("--quick-gen-key", "Test repository A <a@invalid>", "rsa2048", "sign", "never")
    gpg("--quick-gen-key", "Test repository B <b@invalid>", "ed25519", "sign", "never")
    listing = gpg("--with-colons", "--list-keys").decode()
    fprs = primary_fingerprints(listing)
    uids = [line.split(":")[9] for line in listing.splitlines() if line.startswith("uid:")]
    a, b = (fprs[0], fprs[1]) if "A" in uids[0] else (fprs[1], fprs[0])
    gpg("--quick-add-key", a, "ed25519", "sign", "never")  # a signing subkey, as repository keys have
    files = {
        "a.asc": gpg("--armor", "--export", a),
        "a.gpg": gpg("--export", a),
        "b.gpg": gpg("--export", b),
        "ab.gpg": gpg("--export", a, b),
        "ab.asc": gpg("--armor", "--export", a, b),
        "a-secret.asc": gpg("--armor", "--export-secret-keys", a),
    }
    files["a+b.asc"] = files["a.asc"] + gpg("--armor", "--export", b)  # two armored blocks, one file
    for name, data in files.items():
        (base / name).write_bytes(data)
    return SimpleNamespace(dir=base, a=a, b=b, env=env, subkey_a=subkey_of(gpg, a))


def subkey_of(gpg, fpr: str) -> str | None:
    listing = gpg("--with-colons", "--with-subkey-fingerprints", "--list-keys", fpr).decode().splitlines()
    subs = [listing[i + 1].split(":")[9] for i, line in enumerate(listing) if line.startswith("sub:")]
    return subs[0] if subs else None


# ---- the reader ---------------------------------------------------------------------------------------
def test_the_rfc9580_version_6_certificate_has_the_rfcs_fingerprint():
    (key,) = pgp.parse_keys(RFC9580_V6)
    assert (key.fingerprint, key.version, key.subkeys) == (RFC9580_V6_FPR, 6, [RFC9580_V6_SUBKEY])


def test_the_rfc9580_version_4_key_has_the_rfcs_fingerprint_in_either_packet_format():
    (tag, _raw, body), = pgp.packets(RFC9580_V4_ED25519)
    assert tag == pgp.PUBLIC_KEY
    assert [k.fingerprint for k in pgp.parse_keys(RFC9580_V4_ED25519)] == [RFC9580_V4_ED25519_FPR]
    assert [k.fingerprint for k in pgp.parse_keys(old_packet(6, bytes(body)))] == [RFC9580_V4_ED25519_FPR]


@pytest.mark.parametrize("given", [
    "c959bdbafa32a2f89a153b678cfde12197965a9a",
    "C959 BDBA FA32 A2F8 9A15  3B67 8CFD E121 9796 5A9A",
    "0xC959BDBAFA32A2F89A153B678CFDE12197965A9A",
    " c959 bdba fa32 a2f8 9a15 3b67 8cfd e121 9796 5a9a\n",
])
def test_a_fingerprint_is_read_with_or_without_spaces_in_any_case(given):
    assert pgp.normalize_fingerprint(given) == RFC9580_V4_ED25519_FPR


@pytest.mark.parametrize("given", ["", "97965A9A", "8CFDE12197965A9A", "C959BDBAFA32A2F89A153B678CFDE12197965A9",
                                   "Z" * 40])
def test_short_ids_and_non_hex_are_not_fingerprints(given):
    assert pgp.normalize_fingerprint(given) is None


def test_armor_written_is_read_back_with_its_checksum():
    text = pgp.armor(RFC9580_V4_ED25519)
    assert text.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n")
    assert b"\n=" in text  # rpm refuses armor without the CRC-24 line
    assert pgp.dearmor(text) == RFC9580_V4_ED25519


def test_a_damaged_armor_checksum_is_refused():
    text = pgp.armor(RFC9580_V4_ED25519).replace(b"xjME", b"xjMF")
    with pytest.raises(pgp.OpenPGPError, match="CRC-24"):
        pgp.dearmor(text)


@pytest.mark.parametrize(("data", "says"), [
    (b"", "it is empty"),
    (b"<!DOCTYPE html><html><body>404</body></html>", "an HTML page"),
    (b"hello", "text"),
    (b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n", "private key"),
    (b"-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n", "no armored public key block"),
    (new_packet(13, b"user id first"), "does not start with a public key"),
    (new_packet(5, b"\x04secret"), "secret key material"),
    (new_packet(6, b"\x03" + b"\x00" * 20), "version 3 key"),
    (new_packet(6, b"\x07" + b"\x00" * 20), "unknown version 7"),
    (bytes([0xC6, 0x30]) + b"\x04short", "claims 48 bytes"),
    (bytes([0xC6, 0xE1]) + b"\x04", "partial body length"),
])
def test_what_is_not_a_public_key_is_refused_saying_why(data, says):
    with pytest.raises(pgp.OpenPGPError, match=says):
        pgp.parse_keys(data)


def test_pin_keeps_only_the_pinned_key_of_a_keyring():
    ring = RFC9580_V4_ED25519 + pgp.dearmor(RFC9580_V6)
    out, selected, found = pgp.pin(ring, [RFC9580_V6_FPR.lower()])
    assert [k.fingerprint for k in found] == [RFC9580_V4_ED25519_FPR, RFC9580_V6_FPR]
    assert [k.fingerprint for k in pgp.parse_keys(out)] == [RFC9580_V6_FPR]


def test_pin_names_the_expected_and_the_found_fingerprints():
    with pytest.raises(pgp.PinMismatch) as e:
        pgp.pin(RFC9580_V6, ["9DC858229FC7DD38854AE2D88D81803C0EBFCD88"])
    text = e.value.describe()
    assert text.startswith("expected 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88; found CB18 6C4F")


def test_a_pinned_subkey_is_named_as_one():
    with pytest.raises(pgp.PinMismatch) as e:
        pgp.pin(RFC9580_V6, [RFC9580_V6_SUBKEY])
    assert "is a subkey of CB18 6C4F" in e.value.describe()
    assert "pin the primary key's fingerprint" in e.value.describe()


DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")


@pytest.mark.skipif(not DEBIAN_KEYRING.is_file(), reason="no Debian archive keyring here")
def test_a_distributions_keyring_debians_gives_its_release_key_alone(tmp_path):
    """A real keyring (binary, old packet format, keys with designated revokers): the pinned key alone
    comes out, and gpg, where there is one, reads the same fingerprints."""
    data = DEBIAN_KEYRING.read_bytes()
    bookworm = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8"  # roles/nvidia_driver/vars/Debian.yml
    keys = pgp.parse_keys(data)
    assert bookworm in [k.fingerprint for k in keys] and len(keys) > 1
    out, (selected,), _ = pgp.pin(data, [bookworm])
    assert selected.user_ids == ["Debian Archive Automatic Signing Key (12/bookworm) <ftpmaster@debian.org>"]
    assert [k.fingerprint for k in pgp.parse_keys(out)] == [bookworm]
    if shutil.which("gpg"):
        tmp_path.chmod(0o700)
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--show-keys", str(DEBIAN_KEYRING)],
                                 env={**os.environ, "GNUPGHOME": str(tmp_path)}, capture_output=True, text=True,
                                 check=True).stdout
        assert primary_fingerprints(listing) == [k.fingerprint for k in keys]


@pytest.mark.parametrize("python", ["python2.7", "python3.6"])
def test_the_reader_runs_on_the_pythons_of_centos7(python):
    pyenv = Path(os.environ.get("PYENV_ROOT", "~/.pyenv")).expanduser()
    candidates = [shutil.which(python), *sorted(pyenv.glob(f"versions/*/bin/{python}"))]
    found = next((c for c in candidates
                  if c and subprocess.run([str(c), "-c", "pass"], capture_output=True).returncode == 0), None)
    if not found:
        pytest.skip(f"no {python} here")
    utils, ed25519 = str(ROOT / "plugins" / "module_utils"), base64.b64encode(RFC9580_V4_ED25519).decode()
    script = (f"from __future__ import print_function; import sys, base64; sys.path.insert(0, {utils!r}); "
              f"import openpgp_key as o; ring = base64.b64decode({ed25519!r}) + o.dearmor({RFC9580_V6!r}); "
              f"out, sel, found = o.pin(ring, [{RFC9580_V4_ED25519_FPR!r}]); "
              "print(' '.join(k.fingerprint for k in o.parse_keys(out)), len(found))")
    r = subprocess.run([str(found), "-c", script], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [RFC9580_V4_ED25519_FPR, "2"]


# ---- the module ---------------------------------------------------------------------------------------
class Exit(Exception):
    pass


class Fail(Exception):
    pass


@pytest.fixture
def run(monkeypatch):
    def exit_json(self, **kw):
        raise Exit(kw)

    def fail_json(self, **kw):
        raise Fail(kw)

    monkeypatch.setattr(basic.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", fail_json)

    def _run(args, check_mode=False, diff=False):
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps(
            {"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}})))
        try:
            mod.main()
        except Exit as e:
            return e.args[0]
        raise AssertionError("the module neither exited nor failed")

    return _run


def failure(run, args, **kw) -> dict:
    with pytest.raises(Fail) as e:
        run(args, **kw)
    return e.value.args[0]


def test_an_armored_key_with_its_fingerprint_is_written_then_left_alone(run, keys, tmp_path):
    dest = tmp_path / "a.asc"
    spaced = " ".join(keys.a[i:i + 4] for i in range(0, 40, 4)).lower()
    first = run({"src": str(keys.dir / "a.asc"), "fingerprint": spaced, "dest": str(dest)})
    assert first["changed"] is True
    assert first["fingerprint"] == [keys.a] and first["keys"][0]["user_ids"] == ["Test repository A <a@invalid>"]
    assert gpg_fingerprints(dest, keys.env) == [keys.a]  # gpg reads what was written
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644  # apt reads keys as the _apt user
    again = run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)})
    assert again["changed"] is False


def test_a_binary_key_is_read_and_written_armored_or_binary(run, keys, tmp_path):
    dest = tmp_path / "a.asc"
    assert run({"src": str(keys.dir / "a.gpg"), "fingerprint": keys.a, "dest": str(dest)})["changed"] is True
    assert dest.read_bytes().startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    # the armored and the binary export are the same key: the same file either way
    assert run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)})["changed"] is False
    binary = tmp_path / "a.gpg"
    run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(binary), "armor": False})
    assert binary.read_bytes() == (keys.dir / "a.gpg").read_bytes()


@pytest.mark.parametrize("ring", ["ab.gpg", "ab.asc", "a+b.asc"])
def test_from_a_keyring_of_two_keys_only_the_pinned_one_is_kept(run, keys, tmp_path, ring):
    dest = tmp_path / "b.asc"
    result = run({"src": str(keys.dir / ring), "fingerprint": keys.b, "dest": str(dest)})
    assert result["found"] == [keys.a, keys.b] and result["fingerprint"] == [keys.b]
    assert gpg_fingerprints(dest, keys.env) == [keys.b]  # A, served with it, is not trusted
    both = run({"src": str(keys.dir / ring), "fingerprint": [keys.b, keys.a], "dest": str(tmp_path / "ab.asc")})
    assert gpg_fingerprints(tmp_path / "ab.asc", keys.env) == [keys.a, keys.b]
    assert both["fingerprint"] == [keys.a, keys.b]


def test_a_wrong_fingerprint_fails_naming_both_and_leaves_dest_as_it_was(run, keys, tmp_path):
    dest = tmp_path / "repo.asc"
    dest.write_bytes(b"the key an earlier run wrote\n")
    wrong = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
    out = failure(run, {"src": str(keys.dir / "ab.asc"), "fingerprint": wrong, "dest": str(dest)})
    assert "is not the pinned one: expected 9DC8 5822 9FC7 DD38 854A E2D8 8D81 803C 0EBF CD88; found " in out["msg"]
    spaced_a = " ".join(keys.a[i:i + 4] for i in range(0, 40, 4))
    assert f"{spaced_a} (Test repository A <a@invalid>)" in out["msg"]
    assert f"{dest} was left as it was" in out["msg"]
    assert out["found"] == [keys.a, keys.b]
    assert dest.read_bytes() == b"the key an earlier run wrote\n"
    absent = tmp_path / "never.asc"
    failure(run, {"src": str(keys.dir / "a.asc"), "fingerprint": wrong, "dest": str(absent)})
    assert not absent.exists()


def test_a_subkey_fingerprint_is_refused_naming_the_primary(run, keys, tmp_path):
    out = failure(run, {"src": str(keys.dir / "a.asc"), "fingerprint": keys.subkey_a, "dest": str(tmp_path / "k")})
    assert "is a subkey of" in out["msg"] and "pin the primary key's fingerprint" in out["msg"]


@pytest.mark.parametrize("given", ["0EBFCD88", "8D81803C0EBFCD88", "not a fingerprint"])
def test_a_short_key_id_is_refused(run, keys, tmp_path, given):
    out = failure(run, {"src": str(keys.dir / "a.asc"), "fingerprint": given, "dest": str(tmp_path / "k")})
    assert "is not a full fingerprint" in out["msg"] and "short key IDs can be forged" in out["msg"]
    assert not (tmp_path / "k").exists()


def test_a_secret_key_is_refused(run, keys, tmp_path):
    out = failure(run, {"src": str(keys.dir / "a-secret.asc"), "fingerprint": keys.a, "dest": str(tmp_path / "k")})
    assert "private key" in out["msg"]


def test_check_mode_checks_the_key_and_writes_nothing(run, keys, tmp_path):
    dest = tmp_path / "a.asc"
    result = run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)}, check_mode=True)
    assert result["changed"] is True and not dest.exists()
    failure(run, {"src": str(keys.dir / "a.asc"), "fingerprint": keys.b, "dest": str(dest)}, check_mode=True)
    run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)})
    assert run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)},
               check_mode=True)["changed"] is False
    # in check mode a missing directory is what an earlier task would make
    assert run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(tmp_path / "no" / "a.asc")},
               check_mode=True)["changed"] is True


def test_the_diff_names_the_keys_before_and_after(run, keys, tmp_path):
    dest = tmp_path / "k.asc"
    run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest)})
    result = run({"src": str(keys.dir / "ab.asc"), "fingerprint": keys.b, "dest": str(dest)}, diff=True)
    assert result["diff"]["before"] == keys.a + "\n" and result["diff"]["after"] == keys.b + "\n"


def test_mode_and_a_missing_directory(run, keys, tmp_path):
    dest = tmp_path / "a.asc"
    run({"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(dest), "mode": "0600"})
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    out = failure(run, {"src": str(keys.dir / "a.asc"), "fingerprint": keys.a, "dest": str(tmp_path / "no" / "a")})
    assert "does not exist; make it first" in out["msg"]


def test_url_or_src_one_of_them(run, keys, tmp_path):
    assert "one of the following is required: url, src" in failure(
        run, {"fingerprint": keys.a, "dest": str(tmp_path / "k")})["msg"]
    assert "mutually exclusive: url|src" in failure(
        run, {"url": "https://x/gpg", "src": "/x", "fingerprint": keys.a, "dest": str(tmp_path / "k")})["msg"]


class Response:
    def __init__(self, data: bytes):
        self.data = data

    def read(self, n: int = -1) -> bytes:
        return self.data if n < 0 else self.data[:n]


def test_a_url_is_fetched_with_the_modules_settings(run, keys, tmp_path, monkeypatch):
    seen = {}

    def fetch_url(module, url, **kw):
        seen.update(url=url, validate_certs=module.params["validate_certs"], **kw)
        return Response((keys.dir / "ab.asc").read_bytes()), {"status": 200, "msg": "OK"}

    monkeypatch.setattr(mod, "fetch_url", fetch_url)
    dest = tmp_path / "k.asc"
    result = run({"url": "https://repo.example/gpgkey", "fingerprint": keys.a, "dest": str(dest),
                  "validate_certs": False, "use_proxy": False, "timeout": 5})
    assert result["changed"] is True and gpg_fingerprints(dest, keys.env) == [keys.a]
    assert seen == {"url": "https://repo.example/gpgkey", "validate_certs": False, "use_proxy": False, "timeout": 5}


def test_a_url_that_does_not_answer_fails_saying_so(run, keys, tmp_path, monkeypatch):
    monkeypatch.setattr(mod, "fetch_url", lambda module, url, **kw: (None, {"status": 404, "msg": "Not Found"}))
    out = failure(run, {"url": "https://repo.example/gpgkey", "fingerprint": keys.a, "dest": str(tmp_path / "k")})
    assert out["msg"] == "Cannot fetch the key from https://repo.example/gpgkey: 404 Not Found"


def test_an_html_page_instead_of_a_key_is_refused(run, keys, tmp_path, monkeypatch):
    page = b"<!DOCTYPE html><html><body>Sign in</body></html>"
    monkeypatch.setattr(mod, "fetch_url", lambda module, url, **kw: (Response(page), {"status": 200, "msg": "OK"}))
    out = failure(run, {"url": "https://repo.example/gpgkey", "fingerprint": keys.a, "dest": str(tmp_path / "k")})
    assert out["msg"].startswith("https://repo.example/gpgkey is not a usable OpenPGP public key: it is an HTML page")


def test_a_file_url_is_read_on_the_host(run, keys, tmp_path):
    dest = tmp_path / "k.asc"
    assert run({"url": f"file://{keys.dir / 'a.gpg'}", "fingerprint": keys.a, "dest": str(dest)})["changed"] is True
    out = failure(run, {"url": f"file://{tmp_path / 'missing'}", "fingerprint": keys.a, "dest": str(dest)})
    assert out["msg"].startswith(f"Cannot read the key file {tmp_path / 'missing'}")


def test_the_module_is_documented_as_ansible_reads_it():
    import yaml

    doc = yaml.safe_load(mod.DOCUMENTATION)
    assert doc["module"] == "signing_key"
    assert {"url", "src", "dest", "fingerprint", "armor", "validate_certs", "use_proxy", "mode"} <= set(doc["options"])
    yaml.safe_load(mod.EXAMPLES)
    assert set(yaml.safe_load(mod.RETURN)) == {"dest", "fingerprint", "keys", "found"}
    assert sys.modules["signing_key"] is mod
