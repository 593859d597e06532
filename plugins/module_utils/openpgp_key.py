# -*- coding: utf-8 -*-
"""OpenPGP public keys read without gpg: armor, packets, fingerprints, and the one key pinned.

Runs on managed hosts, so it keeps to the standard library and to syntax Python 2.7 and 3.6
accept (CentOS 7.9). Bytes are handled as ``bytearray`` so that indexing gives integers on both.

What it does (RFC 4880 and RFC 9580, the parts a key file uses):

- ``dearmor``: the binary packets of every ``PUBLIC KEY BLOCK`` in an ASCII-armored text (its CRC-24
  checked where there is one); binary input is returned as it is;
- ``parse_keys``: the transferable public keys in the packets - each primary key (packet tag 6)
  with the packets that belong to it (user IDs, signatures, subkeys) up to the next primary key;
- fingerprints: version 4 keys SHA-1 over 0x99, a two-octet length and the key packet's body;
  version 6 keys (RFC 9580) SHA-256 over 0x9B, a four-octet length and the body; version 5 keys
  (LibrePGP) SHA-256 over 0x9A, a four-octet length and the body. Version 3 keys (MD5 fingerprints,
  forgeable) are refused;
- ``pin``: only the keys whose primary fingerprint is pinned, as an armored (or binary) key file.
  The other keys of a keyring are left out: a key file served with the pinned key AND another one
  must not make the other one trusted.
"""

import base64
import binascii
import hashlib
import re

PUBLIC_KEY, SECRET_KEY, SECRET_SUBKEY, PUBLIC_SUBKEY = 6, 5, 7, 14
USER_ID, SIGNATURE, TRUST, MARKER = 13, 2, 12, 10

ARMOR_BEGIN = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
ARMOR_END = "-----END PGP PUBLIC KEY BLOCK-----"
FINGERPRINT_LENGTHS = (40, 64)  # hex digits: version 4; versions 5 and 6

_ARMOR = re.compile(r"-----BEGIN PGP PUBLIC KEY BLOCK-----(.*?)-----END PGP PUBLIC KEY BLOCK-----", re.S)
_ANY_ARMOR = re.compile(r"-----BEGIN PGP ([A-Z ]+)-----")


class OpenPGPError(Exception):
    """Input that is not a usable OpenPGP public key; the message says why, for the operator."""


def normalize_fingerprint(value):
    """A fingerprint as upper-case hex without spaces (or a leading 0x); None when it is not one."""
    text = re.sub(r"\s+", "", str(value or "")).upper()
    if text.startswith("0X"):
        text = text[2:]
    if len(text) in FINGERPRINT_LENGTHS and re.match(r"^[0-9A-F]+$", text):
        return text
    return None


def spaced(fingerprint):
    """In groups of four, as gpg prints it."""
    return " ".join(fingerprint[i:i + 4] for i in range(0, len(fingerprint), 4))


def crc24(data):
    """The CRC-24 of OpenPGP's ASCII armor (RFC 4880, section 6.1)."""
    crc = 0xB704CE
    for byte in bytearray(data):
        crc ^= byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def _text(data):
    try:
        return bytes(data).decode("ascii")
    except UnicodeDecodeError:
        return bytes(data).decode("latin-1")


def looks_armored(data):
    return b"-----BEGIN PGP" in bytes(data)


def dearmor(data):
    """The binary packets of the input: every public key block of an armored text, concatenated."""
    data = bytes(data)
    if not looks_armored(data):
        if not data:
            raise OpenPGPError("it is empty")
        first = bytearray(data[:1])[0]
        if not first & 0x80:
            what = "an HTML page" if data.lstrip()[:1] == b"<" else "text"
            raise OpenPGPError("it is %s, neither an armored nor a binary OpenPGP key" % what)
        return data
    text = _text(data)
    blocks = _ARMOR.findall(text)
    if not blocks:
        kinds = sorted(set(_ANY_ARMOR.findall(text)))
        if any("PRIVATE" in k or "SECRET" in k for k in kinds):
            raise OpenPGPError("it holds a private key; give the public key only")
        raise OpenPGPError("it holds no armored public key block (found: %s)" % ", ".join(kinds or ["nothing"]))
    out = bytearray()
    for i, block in enumerate(blocks):
        out += _decode_block(block, i + 1)
    return bytes(out)


def _decode_block(block, number):
    checksum = None
    body = []
    for line in block.splitlines():
        line = line.strip()
        # armor headers ("Version: ...", "Comment: ...") hold a colon, which base64 never does
        if not line or ":" in line:
            continue
        if line.startswith("=") and len(line) == 5:
            checksum = line[1:]
        else:
            body.append(line)
    try:
        packets = base64.b64decode("".join(body).encode("ascii"))
    except (binascii.Error, TypeError, ValueError, UnicodeEncodeError):
        raise OpenPGPError("armored block %d is not valid base64" % number)
    if checksum is not None:
        try:
            expected = bytearray(base64.b64decode(checksum.encode("ascii")))
        except (binascii.Error, TypeError, ValueError, UnicodeEncodeError):
            raise OpenPGPError("armored block %d has a malformed checksum line" % number)
        value = (expected[0] << 16) | (expected[1] << 8) | expected[2] if len(expected) == 3 else -1
        if value != crc24(packets):
            raise OpenPGPError("armored block %d fails its CRC-24 checksum (damaged in transit?)" % number)
    if not packets:
        raise OpenPGPError("armored block %d is empty" % number)
    return packets


def packets(data):
    """(tag, the whole packet as bytes, the body as bytearray) for each packet of binary data."""
    buf = bytearray(data)
    pos, out = 0, []
    while pos < len(buf):
        start = pos
        octet = buf[pos]
        if not octet & 0x80:
            raise OpenPGPError("byte %d does not start an OpenPGP packet" % pos)
        if octet & 0x40:  # new format
            tag = octet & 0x3F
            if pos + 1 >= len(buf):
                raise OpenPGPError("packet at byte %d is cut short" % start)
            first = buf[pos + 1]
            if first < 192:
                length, pos = first, pos + 2
            elif first < 224:
                if pos + 2 >= len(buf):
                    raise OpenPGPError("packet at byte %d is cut short" % start)
                length, pos = ((first - 192) << 8) + buf[pos + 2] + 192, pos + 3
            elif first == 255:
                if pos + 5 >= len(buf):
                    raise OpenPGPError("packet at byte %d is cut short" % start)
                length = (buf[pos + 2] << 24) | (buf[pos + 3] << 16) | (buf[pos + 4] << 8) | buf[pos + 5]
                pos += 6
            else:
                raise OpenPGPError("packet at byte %d has a partial body length, which key packets never have" % start)
        else:  # old format
            tag, kind = (octet >> 2) & 0x0F, octet & 0x03
            if kind == 3:
                length, pos = len(buf) - pos - 1, pos + 1
            else:
                size = (1, 2, 4)[kind]
                if pos + size >= len(buf):
                    raise OpenPGPError("packet at byte %d is cut short" % start)
                length = 0
                for i in range(size):
                    length = (length << 8) | buf[pos + 1 + i]
                pos += 1 + size
        if pos + length > len(buf):
            raise OpenPGPError("packet at byte %d claims %d bytes; only %d follow" % (start, length, len(buf) - pos))
        out.append((tag, bytes(buf[start:pos + length]), buf[pos:pos + length]))
        pos += length
    return out


def fingerprint_of(body):
    """The fingerprint (upper-case hex) of a public key or subkey packet's body."""
    body = bytearray(body)
    if not body:
        raise OpenPGPError("a key packet is empty")
    version = body[0]
    n = len(body)
    if version == 4:
        if n > 0xFFFF:
            raise OpenPGPError("a version 4 key packet is longer than 65535 bytes")
        prefix = bytearray([0x99, (n >> 8) & 0xFF, n & 0xFF])
        return hashlib.sha1(bytes(prefix + body)).hexdigest().upper()
    if version in (5, 6):
        prefix = bytearray([0x9A if version == 5 else 0x9B, (n >> 24) & 0xFF, (n >> 16) & 0xFF, (n >> 8) & 0xFF,
                            n & 0xFF])
        return hashlib.sha256(bytes(prefix + body)).hexdigest().upper()
    if version in (2, 3):
        raise OpenPGPError("it holds a version %d key, whose MD5 fingerprint can be forged; such keys are refused"
                        % version)
    raise OpenPGPError("it holds a key of unknown version %d" % version)


class PublicKey(object):
    """One transferable public key: its primary key's fingerprint and version, its user IDs, the
    fingerprints of its subkeys, and its packets as they came."""

    def __init__(self, fingerprint, version):
        self.fingerprint = fingerprint
        self.version = version
        self.user_ids = []
        self.subkeys = []
        self.data = bytearray()

    def as_dict(self):
        return {"fingerprint": self.fingerprint, "version": self.version, "user_ids": list(self.user_ids),
                "subkeys": list(self.subkeys)}


def parse_keys(data):
    """Every transferable public key in the input (armored or binary), in order."""
    keys = []
    for tag, raw, body in packets(dearmor(data)):
        if tag in (SECRET_KEY, SECRET_SUBKEY):
            raise OpenPGPError("it holds secret key material; give the public key only")
        if tag in (TRUST, MARKER):
            continue  # local trust data of a keyring, and the obsolete marker: never part of a key
        if tag == PUBLIC_KEY:
            keys.append(PublicKey(fingerprint_of(body), bytearray(body)[0]))
        elif not keys:
            raise OpenPGPError("it does not start with a public key (its first packet has tag %d)" % tag)
        elif tag == PUBLIC_SUBKEY:
            keys[-1].subkeys.append(fingerprint_of(body))
        elif tag == USER_ID:
            keys[-1].user_ids.append(bytes(body).decode("utf-8", "replace"))
        keys[-1].data += raw
    if not keys:
        raise OpenPGPError("it holds no public key")
    return keys


def armor(data):
    """Binary packets as an ASCII-armored public key block, with its CRC-24 (rpm needs one)."""
    data = bytes(data)
    encoded = base64.b64encode(data).decode("ascii")
    crc = crc24(data)
    checksum = base64.b64encode(bytes(bytearray([(crc >> 16) & 0xFF, (crc >> 8) & 0xFF, crc & 0xFF])))
    lines = [ARMOR_BEGIN, ""] + [encoded[i:i + 64] for i in range(0, len(encoded), 64)]
    lines += ["=" + checksum.decode("ascii"), ARMOR_END, ""]
    return "\n".join(lines).encode("ascii")


class PinMismatch(Exception):
    """None (or not all) of the pinned fingerprints is a primary key of the input."""

    def __init__(self, missing, keys):
        Exception.__init__(self, "pinned fingerprint not found")
        self.missing = missing
        self.keys = keys

    def describe(self):
        found = ["%s (%s)" % (spaced(k.fingerprint), ", ".join(k.user_ids) or "no user ID") for k in self.keys]
        text = "expected %s; found %s" % (
            " and ".join(spaced(f) for f in self.missing),
            "; ".join(found) if found else "no key")
        subkey_of = dict((s, k.fingerprint) for k in self.keys for s in k.subkeys)
        for f in self.missing:
            if f in subkey_of:
                text += (". %s is a subkey of %s: pin the primary key's fingerprint"
                         % (spaced(f), spaced(subkey_of[f])))
        return text


def pin(data, fingerprints, armored=True):
    """The key file holding only the keys whose primary fingerprint is pinned, and every key found.

    Raises PinMismatch when a pinned fingerprint is not the primary fingerprint of a key in the data,
    OpenPGPError when the data is not a public key file."""
    wanted = []
    for value in fingerprints:
        f = normalize_fingerprint(value)
        if f is None:
            raise OpenPGPError("the pinned fingerprint %r is not a full fingerprint (40 hex digits, or 64 for "
                            "version 6 keys); short key IDs can be forged" % (value,))
        if f not in wanted:
            wanted.append(f)
    if not wanted:
        raise OpenPGPError("no fingerprint is pinned")
    keys = parse_keys(data)
    by_fingerprint = dict((k.fingerprint, k) for k in keys)
    missing = [f for f in wanted if f not in by_fingerprint]
    if missing:
        raise PinMismatch(missing, keys)
    selected, seen = [], set()
    for k in keys:  # in the order of the input; a key listed twice is written once
        if k.fingerprint in wanted and k.fingerprint not in seen:
            selected.append(k)
            seen.add(k.fingerprint)
    out = bytearray()
    for k in selected:
        out += k.data
    return (armor(out) if armored else bytes(out)), selected, keys
