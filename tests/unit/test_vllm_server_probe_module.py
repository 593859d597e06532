"""The module around the probe: arguments, check mode, and how it reports."""

from __future__ import annotations

import json

import pytest
import vllm_server_probe as mod
from ansible.module_utils import basic
from ansible.module_utils.common.text.converters import to_bytes


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

    def _run(args, probe):
        monkeypatch.setattr(basic, "_ANSIBLE_ARGS", to_bytes(json.dumps({"ANSIBLE_MODULE_ARGS": args})))
        monkeypatch.setattr(mod, "probe", probe)
        mod.main()

    return _run


def test_reports_unchanged_with_the_probe_report(run):
    seen = {}

    def probe(url, model, **kw):
        seen.update(url=url, model=model, **kw)
        return {"health_seconds": 1.0, "content": "hi", "stream_chunks": 3}

    with pytest.raises(Exit) as e:
        run({"model": "tiny", "api_key": "k" * 10, "health_timeout": 30}, probe)
    assert e.value.args[0]["changed"] is False
    assert e.value.args[0]["stream_chunks"] == 3
    assert seen["url"] == "http://127.0.0.1:9999" and seen["api_key"] == "k" * 10
    assert seen["health_timeout"] == 30.0


def test_probe_failure_becomes_a_clear_module_failure(run):
    def probe(url, model, **kw):
        raise mod.ProbeError("POST x answered 401: the API key is wrong or missing")

    with pytest.raises(Fail) as e:
        run({"model": "tiny"}, probe)
    assert e.value.args[0]["msg"] == "vLLM endpoint check failed: POST x answered 401: the API key is wrong or missing"


def test_model_is_required(run):
    with pytest.raises(Fail) as e:
        run({}, lambda *a, **k: {})
    assert "model" in e.value.args[0]["msg"]


def test_the_units_restarts_end_the_wait(run, monkeypatch):
    counts = iter(["3\n", "3\n", "4\n", "5\n"])
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: (0, next(counts), ""))
    seen = {}

    def probe(url, model, gone=None, **kw):
        seen["reasons"] = [gone(), gone(), gone()]
        return {"health_seconds": 1.0}

    with pytest.raises(Exit):
        run({"model": "tiny", "unit": "vllm-server.service"}, probe)
    assert seen["reasons"][:2] == [None, None]
    assert "restarted 2 times while starting" in seen["reasons"][2]


def test_without_restart_counts_the_wait_is_not_cut(run, monkeypatch):
    monkeypatch.setattr(basic.AnsibleModule, "run_command", lambda self, argv, **kw: (0, "\n", ""))
    seen = {}

    def probe(url, model, gone=None, **kw):
        seen["gone"] = gone
        return {"health_seconds": 1.0}

    with pytest.raises(Exit):
        run({"model": "tiny", "unit": "vllm-server.service"}, probe)
    assert seen["gone"] is None
