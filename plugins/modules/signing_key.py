#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: signing_key
short_description: Fetch a package repository's signing key and keep it only if its fingerprint is the pinned one
description:
  - Reads an OpenPGP public key (a key file or a keyring, ASCII-armored or binary) from O(url) or from
    O(src) on the host, computes the fingerprint of every primary key in it (version 4 - SHA-1;
    versions 5 and 6 - SHA-256; version 3 keys are refused), and writes to O(dest) only the keys whose
    primary fingerprint is pinned in O(fingerprint). Every other key of the file is left out, so a key
    file served with the pinned key and another one does not make the other one trusted.
  - When a pinned fingerprint is not among them the module fails, naming the fingerprint expected
    and those found, and O(dest) is left as it was.
  - Pure Python (no gpg on the host), Python 2.7 and 3.6 included (CentOS 7).
  - Changes O(dest) only when its bytes differ (idempotent); in check mode it fetches and checks the
    key, and reports what it would change without writing.
options:
  url:
    description:
      - Where the key is fetched from (C(https://), C(http://), or C(file://) for a file on the host).
      - Fetched with Ansible's C(fetch_url), so C(http_proxy), C(https_proxy) and C(no_proxy) in the
        environment apply unless O(use_proxy=false).
    type: str
  src:
    description: A key file on the host, instead of O(url) (a distribution's keyring, for example).
    type: path
  dest:
    description:
      - Where the pinned key is written. Its directory must exist.
      - Usual places are C(/etc/apt/keyrings/NAME.asc) (apt's C(Signed-By)) and
        C(/etc/pki/rpm-gpg/RPM-GPG-KEY-NAME) (yum's C(gpgkey=file://...), rpm's import).
    type: path
    required: true
  fingerprint:
    description:
      - The fingerprint of the primary key to keep, with or without spaces, in any case (a leading
        C(0x) is allowed). 40 hex digits for version 4 keys, 64 for version 5 and 6 keys; short key
        IDs are refused (they can be forged).
      - Several fingerprints keep several keys; each must be found.
    type: list
    elements: str
    required: true
  armor:
    description:
      - Write the key ASCII-armored (what rpm imports and apt reads from a C(.asc) file); V(false)
        writes binary packets (for a C(.gpg) keyring).
    type: bool
    default: true
  validate_certs:
    description: Check the server's TLS certificate when O(url) is C(https://).
    type: bool
    default: true
  use_proxy:
    description: Use the proxy the environment names.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for O(url).
    type: int
    default: 30
  mode:
    description: The file's mode; public keys are readable by all (apt reads them as the C(_apt) user).
    type: raw
    default: "0644"
extends_documentation_fragment:
  - ansible.builtin.files
notes:
  - The fingerprint is that of the primary key, as C(gpg --show-keys) prints it under C(pub), not a subkey's.
  - A pinned fingerprint that turns out to be a subkey is named as such in the failure.
author: vllm-fleet
"""

EXAMPLES = r"""
- name: Docker's apt key, only if it is Docker's
  vllm_fleet.fleet.signing_key:
    url: https://download.docker.com/linux/debian/gpg
    fingerprint: 9DC8 5822 9FC7 DD38 854A  E2D8 8D81 803C 0EBF CD88
    dest: /etc/apt/keyrings/docker.asc

- name: One key out of Debian's archive keyring
  vllm_fleet.fleet.signing_key:
    src: /usr/share/keyrings/debian-archive-keyring.gpg
    fingerprint: B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8
    dest: /etc/apt/keyrings/debian-bookworm.asc
"""

RETURN = r"""
dest:
  description: Where the key was (or would be) written.
  type: str
  returned: always
fingerprint:
  description: The pinned fingerprints found, upper-case hex without spaces.
  type: list
  elements: str
  returned: success
keys:
  description: The keys written - fingerprint, version, user_ids, subkeys (their fingerprints).
  type: list
  elements: dict
  returned: success
found:
  description: The fingerprints of every primary key in the fetched file (also on failure, when it could be read).
  type: list
  elements: str
  returned: always
"""

import os
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.module_utils.urls import fetch_url

# Both forms, so the module runs from the checkout (ansible.cfg's module_utils path) and from the
# installed collection vllm_fleet.fleet. ansible-core packs whichever of them it finds: imports
# inside try/except are optional to its dependency finder. The checkout's comes first, so a run
# from the checkout never takes an older installed copy of the collection.
try:
    from ansible.module_utils.openpgp_key import OpenPGPError, PinMismatch, parse_keys, pin
except ImportError:
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.openpgp_key import (
        OpenPGPError,
        PinMismatch,
        parse_keys,
        pin,
    )

MAX_BYTES = 1024 * 1024  # keyrings are kilobytes; more is not a key file


def read_source(module):
    """The key file's bytes, and a name for it in messages."""
    url, src = module.params["url"], module.params["src"]
    if url and url.startswith("file://"):
        src = url[len("file://"):]
    if src:
        try:
            with open(src, "rb") as f:
                data = f.read(MAX_BYTES + 1)
        except (IOError, OSError) as e:
            module.fail_json(msg="Cannot read the key file %s: %s" % (src, to_native(e)), dest=module.params["dest"],
                             found=[])
        where = src
    else:
        response, info = fetch_url(module, url, use_proxy=module.params["use_proxy"],
                                   timeout=module.params["timeout"])
        if info.get("status") != 200 or response is None:
            module.fail_json(msg="Cannot fetch the key from %s: %s %s" % (url, info.get("status"), info.get("msg")),
                             dest=module.params["dest"], found=[])
        data = response.read(MAX_BYTES + 1)
        where = url
    if len(data) > MAX_BYTES:
        module.fail_json(msg="%s is larger than %d bytes: not a key file" % (where, MAX_BYTES),
                         dest=module.params["dest"], found=[])
    return data, where


def current(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except (IOError, OSError):
        return None


def fingerprints_in(data):
    try:
        return [k.fingerprint for k in parse_keys(data)] if data else []
    except OpenPGPError:
        return ["(not a key file)"]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str"),
            src=dict(type="path"),
            dest=dict(type="path", required=True),
            fingerprint=dict(type="list", elements="str", required=True),
            armor=dict(type="bool", default=True),
            validate_certs=dict(type="bool", default=True),
            use_proxy=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            mode=dict(type="raw", default="0644"),
        ),
        mutually_exclusive=[("url", "src")],
        required_one_of=[("url", "src")],
        add_file_common_args=True,
        supports_check_mode=True,
    )
    dest = module.params["dest"]
    data, where = read_source(module)
    try:
        wanted, selected, found = pin(data, module.params["fingerprint"], armored=module.params["armor"])
    except PinMismatch as e:
        module.fail_json(
            msg="The key from %s is not the pinned one: %s. %s was left as it was." % (where, e.describe(), dest),
            dest=dest, found=[k.fingerprint for k in e.keys])
    except OpenPGPError as e:
        module.fail_json(msg="%s is not a usable OpenPGP public key: %s. %s was left as it was."
                         % (where, to_native(e), dest), dest=dest, found=[])

    directory = os.path.dirname(dest) or "."
    if not os.path.isdir(directory) and not module.check_mode:
        module.fail_json(msg="The directory of %s does not exist; make it first." % dest, dest=dest,
                         found=[k.fingerprint for k in found])

    before = current(dest)
    changed = before != wanted
    if changed and not module.check_mode:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".signing_key.")
        with os.fdopen(fd, "wb") as f:
            f.write(to_bytes(wanted))
        module.atomic_move(tmp, dest)

    if os.path.exists(dest):
        changed = module.set_fs_attributes_if_different(module.load_file_common_arguments(module.params), changed)

    result = dict(changed=changed, dest=dest, fingerprint=[k.fingerprint for k in selected],
                  keys=[k.as_dict() for k in selected], found=[k.fingerprint for k in found])
    if module._diff:
        result["diff"] = dict(before_header=dest, after_header=where,
                              before="\n".join(fingerprints_in(before)) + ("\n" if before else ""),
                              after="\n".join(k.fingerprint for k in selected) + "\n")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
