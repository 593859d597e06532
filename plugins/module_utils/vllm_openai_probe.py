# -*- coding: utf-8 -*-
"""Probe an OpenAI-compatible vLLM endpoint: wait for /health, then prove a chat completion.

Runs on managed hosts, so it keeps to the standard library and to Python 3.6 syntax
(CentOS 7.9). The HTTP layer is one function (``http``) that tests replace.
"""

import json
import socket
import time

try:  # Python 3
    from urllib.error import HTTPError, URLError
    from urllib.request import Request, urlopen
except ImportError:  # pragma: no cover - Python 2.7
    from urllib2 import HTTPError, Request, URLError, urlopen  # type: ignore


_monotonic = getattr(time, "monotonic", time.time)  # Python 2.7 has no monotonic clock


class ProbeError(Exception):
    """A failed check, with a message meant for the operator."""


def http(method, url, body=None, headers=None, timeout=30.0):
    """Send one request; return (status, body text). Never raises on an HTTP status."""
    data = json.dumps(body).encode("utf-8") if body is not None else None
    req = Request(url, data=data, headers=dict(headers or {}))
    req.get_method = lambda: method
    try:
        resp = urlopen(req, timeout=timeout)
        return resp.getcode(), resp.read().decode("utf-8", "replace")
    except HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def wait_healthy(base_url, timeout, interval=2.0, transport=None, clock=_monotonic, sleep=time.sleep, gone=None):
    """Poll GET /health until it answers 200; return the seconds it took. gone(): a reason to stop waiting
    (the service keeps exiting while it starts), or None."""
    transport = transport or http
    start = clock()
    last = "no answer yet"
    while True:
        reason = gone() if gone else None
        if reason:
            raise ProbeError("%s/health: stopped waiting after %.0fs: %s" % (base_url, clock() - start, reason))
        try:
            status, text = transport("GET", base_url + "/health", timeout=10)
            if status == 200:
                return round(clock() - start, 1)
            last = "HTTP %s %s" % (status, text[:200])
        except (URLError, socket.error, ValueError) as e:  # connection refused, reset, timeout
            last = str(getattr(e, "reason", e))
        if clock() - start >= timeout:
            raise ProbeError("%s/health did not answer 200 within %ss (last: %s)" % (base_url, timeout, last))
        sleep(interval)


def chat_request(model, prompt, max_tokens, stream):
    """The seed's request (section 3.3), with a bound on the reply length."""
    return {
        "model": model,
        "temperature": 0.2,
        "stream": stream,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": prompt}],
    }


def check_completion(text, model):
    """Check a non-streaming reply; return its message content."""
    try:
        reply = json.loads(text)
    except ValueError:
        raise ProbeError("chat completion is not JSON: %r" % text[:300])
    if reply.get("object") != "chat.completion":
        raise ProbeError("expected object 'chat.completion', got %r in %r" % (reply.get("object"), text[:300]))
    if reply.get("model") != model:
        raise ProbeError("reply names model %r, expected %r" % (reply.get("model"), model))
    choices = reply.get("choices") or []
    if not choices or not isinstance(choices[0].get("message"), dict):
        raise ProbeError("chat completion has no choices[0].message: %r" % text[:300])
    message = choices[0]["message"]
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        raise ProbeError("choices[0].message is not an assistant message with content: %r" % message)
    if not (reply.get("usage") or {}).get("completion_tokens"):
        raise ProbeError("chat completion reports no completion tokens: %r" % reply.get("usage"))
    return message["content"]


def check_stream(text, model):
    """Check a streamed reply (server-sent events); return (chunk count, joined content)."""
    events = [line[len("data:"):].strip() for line in text.splitlines() if line.startswith("data:")]
    if not events or events[-1] != "[DONE]":
        raise ProbeError("stream does not end with 'data: [DONE]': %r" % text[-300:])
    content = []
    chunks = [e for e in events[:-1]]
    if not chunks:
        raise ProbeError("stream holds no chunk before [DONE]")
    for raw in chunks:
        try:
            chunk = json.loads(raw)
        except ValueError:
            raise ProbeError("stream chunk is not JSON: %r" % raw[:300])
        if chunk.get("object") != "chat.completion.chunk" or chunk.get("model") != model:
            raise ProbeError("unexpected stream chunk (object %r, model %r), expected model %r"
                             % (chunk.get("object"), chunk.get("model"), model))
        for choice in chunk.get("choices") or []:
            content.append((choice.get("delta") or {}).get("content") or "")
    if not "".join(content):
        raise ProbeError("stream carried no content in %d chunks" % len(chunks))
    return len(chunks), "".join(content)


def probe(base_url, model, api_key="", prompt="Hello", max_tokens=16, health_timeout=600.0,
          request_timeout=120.0, transport=None, clock=_monotonic, sleep=time.sleep, gone=None):
    """Run every check; return a report dict or raise ProbeError."""
    transport = transport or http
    base_url = base_url.rstrip("/")
    report = {"url": base_url, "model": model}
    report["health_seconds"] = wait_healthy(base_url, health_timeout, transport=transport, clock=clock, sleep=sleep,
                                            gone=gone)
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = "Bearer " + api_key
    url = base_url + "/v1/chat/completions"
    for stream in (False, True):
        started = clock()
        try:
            status, text = transport("POST", url, chat_request(model, prompt, max_tokens, stream), headers,
                                     timeout=request_timeout)
        except (URLError, socket.error) as e:
            raise ProbeError("POST %s failed: %s" % (url, getattr(e, "reason", e)))
        if status == 401:
            raise ProbeError("POST %s answered 401: the API key is wrong or missing" % url)
        if status == 404 and "model" in text:
            raise ProbeError("POST %s answered 404: the server does not serve model %r (%s)" % (url, model, text[:200]))
        if status != 200:
            raise ProbeError("POST %s answered HTTP %s: %s" % (url, status, text[:300]))
        if stream:
            report["stream_chunks"], report["stream_content"] = check_stream(text, model)
            report["stream_seconds"] = round(clock() - started, 3)
        else:
            report["content"] = check_completion(text, model)
            report["completion_seconds"] = round(clock() - started, 3)
    return report
