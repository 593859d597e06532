#!/usr/bin/python
# -*- coding: utf-8 -*-
# Apache-2.0
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: vllm_server_probe
short_description: Prove that a vLLM OpenAI-compatible endpoint answers chat completions
description:
  - Waits for C(/health) to answer 200 within O(health_timeout) seconds (model loading takes time).
  - "Then sends the seed's chat request to C(/v1/chat/completions), non-streaming and streaming,
    and checks a well-formed reply (C(chat.completion), an assistant message, usage; chunks of
    C(chat.completion.chunk) ending with C(data: [DONE])) that names O(model)."
  - Read-only: never changes anything, so it reports C(changed=false).
options:
  url:
    description: Base URL of the server, without C(/v1).
    type: str
    default: http://127.0.0.1:9999
  model:
    description: The served model name the reply must name (the seed's MODEL_NAME).
    type: str
    required: true
  api_key:
    description: Bearer token, when the server was started with one.
    type: str
    default: ""
    no_log: true
  prompt:
    description: The user message sent.
    type: str
    default: Which company developed you as an AI agent?
  max_tokens:
    description: Bound on the reply length.
    type: int
    default: 16
  health_timeout:
    description: Seconds to wait for C(/health) before failing.
    type: float
    default: 600
  request_timeout:
    description: Seconds to wait for each chat request.
    type: float
    default: 120
  unit:
    description:
      - The systemd unit that runs the server. When given, the wait for C(/health) stops as soon as the unit
        has restarted O(unit_restarts) times since the wait began (the server keeps exiting while it starts),
        instead of waiting O(health_timeout) out. Needs systemd 235 or newer (C(NRestarts)); older ones wait.
    type: str
    default: ""
  unit_restarts:
    description: Restarts of O(unit) during the wait that end it.
    type: int
    default: 2
author: vllm-fleet
"""

EXAMPLES = r"""
- name: Prove the endpoint answers
  vllm_server_probe:
    url: http://127.0.0.1:9999
    model: orion14b-chat
    health_timeout: 1800
"""

RETURN = r"""
health_seconds:
  description: Seconds until C(/health) answered 200.
  type: float
  returned: success
content:
  description: The non-streaming reply's message content.
  type: str
  returned: success
stream_chunks:
  description: "Number of chunks before C(data: [DONE])."
  type: int
  returned: success
completion_seconds:
  description: Latency of the non-streaming request.
  type: float
  returned: success
"""

from ansible.module_utils.basic import AnsibleModule

# Both forms, so the module runs from the checkout (ansible.cfg's module_utils path) and from the
# installed collection vllm_fleet.fleet. ansible-core packs whichever of them it finds: imports
# inside try/except are optional to its dependency finder. The checkout's comes first, so a run
# from the checkout never takes an older installed copy of the collection.
try:
    from ansible.module_utils.vllm_openai_probe import ProbeError, probe
except ImportError:
    from ansible_collections.vllm_fleet.fleet.plugins.module_utils.vllm_openai_probe import ProbeError, probe


def unit_restarts(module, unit, limit):
    """A gone() for the probe: the reason to stop waiting once the unit has restarted `limit` times since now;
    None where systemd does not count restarts (NRestarts, systemd 235)."""

    def restarts():
        rc, out, _ = module.run_command(["systemctl", "show", "--property", "NRestarts", "--value", unit])
        out = out.strip()
        return int(out) if rc == 0 and out.isdigit() else None

    first = restarts()
    if first is None:
        return None

    def gone():
        now = restarts()
        if now is not None and now - first >= limit:
            return ("%s restarted %d times while starting: the server exits before it is healthy "
                    "(its log below says why)" % (unit, now - first))
        return None

    return gone


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", default="http://127.0.0.1:9999"),
            model=dict(type="str", required=True),
            api_key=dict(type="str", default="", no_log=True),
            prompt=dict(type="str", default="Which company developed you as an AI agent?"),
            max_tokens=dict(type="int", default=16),
            health_timeout=dict(type="float", default=600.0),
            request_timeout=dict(type="float", default=120.0),
            unit=dict(type="str", default=""),
            unit_restarts=dict(type="int", default=2),
        ),
        supports_check_mode=True,
    )
    p = module.params
    gone = unit_restarts(module, p["unit"], p["unit_restarts"]) if p["unit"] else None
    try:
        report = probe(p["url"], p["model"], api_key=p["api_key"], prompt=p["prompt"],
                       max_tokens=p["max_tokens"], health_timeout=p["health_timeout"],
                       request_timeout=p["request_timeout"], gone=gone)
    except ProbeError as e:
        module.fail_json(msg="vLLM endpoint check failed: %s" % e)
    module.exit_json(changed=False, **report)


if __name__ == "__main__":
    main()
