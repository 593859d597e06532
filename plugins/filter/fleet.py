"""Filters for the fleet's playbooks.

``fleet_batch`` reads ``vllm_fleet_batch``, the size of the batches in which the playbooks that
restart or reboot hosts act (Ansible's ``serial``), however it arrives: a number, a percentage, a
list of them (a canary, then a share), or the same as text from ``-e vllm_fleet_batch=1,25%``.
Anything else stops the run before any host is touched, naming the variable.
"""

from __future__ import annotations

import re
from typing import Any

from ansible.errors import AnsibleFilterError

# A canary of one host, then a quarter of the fleet at a time.
DEFAULT_BATCH: list[int | str] = [1, "25%"]
ITEM = re.compile(r"^(?:[1-9][0-9]*|(?:[1-9][0-9]?|100)%)$")


def fleet_batch(value: Any = None) -> list[int | str]:
    """``serial`` for a play: positive host counts and percentages (1-100 %), as a list."""
    if value is None or value == "" or value == []:
        return list(DEFAULT_BATCH)
    if isinstance(value, bool):
        items: list[Any] = [value]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, int):
        items = [value]
    else:
        items = [part.strip() for part in str(value).split(",")]
    out: list[int | str] = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not ITEM.match(text):
            raise AnsibleFilterError(
                f"vllm_fleet_batch: expected a number of hosts (1, 2, ...), a percentage of the play's hosts "
                f"(1%-100%) or a list of them such as [1, '25%'] (text: 1,25%), got {value!r}")
        out.append(text if text.endswith("%") else int(text))
    return out


def fleet_builder(candidates: list[str], hostvars: Any, image: str, me: str) -> str:
    """The host that builds ``image`` for ``me``: the first of ``candidates`` (vllm_server_image_builder,
    the play's hosts of vllm_builders, the play's hosts) that is ``me`` or runs the same image (its fact
    __vllm_server_run_image, set by the role's validate on every host of the play). A host whose image no
    other host runs builds it itself: one build per distinct image."""
    for host in candidates or []:
        if host == me:
            return me
        try:
            theirs = hostvars[host].get("__vllm_server_run_image")
        except KeyError:
            continue
        if theirs == image:
            return host
    return me


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"fleet_batch": fleet_batch, "fleet_builder": fleet_builder}
