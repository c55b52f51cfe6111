"""The OpenAI-compatible endpoint judge against a tiny HTTP server on 127.0.0.1: retries on 429/5xx, request
pacing (with a fake clock, so no test depends on real time), the judgment cache, and connection parsing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from srlm.errors import BackendError, ConfigError
from srlm.evaluation.judges import (
    EndpointJudge,
    EndpointJudgeConfig,
    chat_completions_url,
    endpoint_config_from_connection,
)
from srlm.evaluation.judgment_cache import JudgmentCache
from srlm.evaluation.rate_limit import RateLimiter


class FakeChatServer:
    """Answers POST /v1/chat/completions with reply(prompt) (default 'Winner: A (<prompt length>)'); can fail the
    first N requests with an error status."""

    def __init__(self, fail_first: int = 0, fail_status: int = 429, retry_after: str | None = None, reply=None,
                 fail_when=None):
        self.reply = reply or (lambda prompt: f"Winner: A ({len(prompt)})")
        self.fail_when = fail_when or (lambda prompt: False)
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body})
                    owner.auth.append(self.headers.get("Authorization"))
                    failing = len(owner.requests) <= owner.fail_first or owner.fail_when(body["messages"][0]["content"])
                if failing:
                    self.send_response(owner.fail_status)
                    if owner.retry_after is not None:
                        self.send_header("Retry-After", owner.retry_after)
                    self.end_headers()
                    self.wfile.write(b'{"error": "slow down"}')
                    return
                prompt = body["messages"][0]["content"]
                reply = {"choices": [{"message": {"role": "assistant", "content": owner.reply(prompt)}}]}
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


class FakeTime:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def clock(self) -> float:
        with self.lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds


def _judge(server, fake, tmp_path=None, **overrides):
    config = EndpointJudgeConfig(url=server.url, model="judge-1", api_key="sk-test-secret", max_concurrency=1,
                                 backoff_initial_s=0.5, **overrides)
    cache = JudgmentCache(str(tmp_path / "cache")) if tmp_path is not None else None
    return EndpointJudge(config, cache=cache, sleep=fake.sleep, clock=fake.clock)


def test_retries_429_then_succeeds_honouring_retry_after():
    fake = FakeTime()
    with FakeChatServer(fail_first=2, fail_status=429, retry_after="3") as server:
        judge = _judge(server, fake, requests_per_second=None)
        assert judge.complete(["hello"]) == ["Winner: A (5)"]
    assert len(server.requests) == 3 and judge.retries == 2
    assert all(s >= 3.0 for s in fake.sleeps)  # Retry-After wins over the shorter backoff
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["body"]["model"] == "judge-1"
    assert server.auth[0] == "Bearer sk-test-secret"


def test_retries_5xx_with_growing_backoff_and_gives_up():
    fake = FakeTime()
    with FakeChatServer(fail_first=100, fail_status=503) as server:
        judge = _judge(server, fake, requests_per_second=None, max_retries=3)
        with pytest.raises(BackendError, match="giving up after 4 attempts") as info:
            judge.complete(["x"])
    assert len(server.requests) == 4
    assert "sk-test-secret" not in str(info.value)
    # full jitter within [base/2, base], base doubling from 0.5 s
    for attempt, delay in enumerate(fake.sleeps):
        base = 0.5 * 2**attempt
        assert base / 2 <= delay <= base


def test_client_errors_are_not_retried():
    with FakeChatServer(fail_first=1, fail_status=400) as server:
        judge = _judge(server, FakeTime(), requests_per_second=None)
        with pytest.raises(BackendError, match="HTTP 400"):
            judge.complete(["x"])
    assert len(server.requests) == 1


def test_requests_are_paced_to_the_configured_rate():
    fake = FakeTime()
    with FakeChatServer() as server:
        judge = _judge(server, fake, requests_per_second=4.0)
        judge.complete([f"prompt {i}" for i in range(5)])
    assert len(server.requests) == 5
    # 5 request starts at 4/s: the fake clock must have advanced by 4 intervals of 0.25 s
    assert sum(fake.sleeps) == pytest.approx(1.0)
    assert all(s == pytest.approx(0.25) for s in fake.sleeps)


def test_rate_limiter_spaces_concurrent_callers():
    fake = FakeTime()
    limiter = RateLimiter(2.0, clock=fake.clock, sleep=lambda s: None)  # no clock advance: slots must queue up
    waits = sorted(limiter.acquire() for _ in range(4))
    assert waits == pytest.approx([0.0, 0.5, 1.0, 1.5])


def test_cache_hits_skip_the_endpoint(tmp_path):
    fake = FakeTime()
    prompts = ["compare these", "and these"]
    with FakeChatServer() as server:
        first = _judge(server, fake, tmp_path)
        assert first.complete(prompts) == ["Winner: A (13)", "Winner: A (9)"]
        assert len(server.requests) == 2 and first.cache.misses == 2
        second = _judge(server, fake, tmp_path)
        assert second.complete(prompts + ["a new one"]) == ["Winner: A (13)", "Winner: A (9)", "Winner: A (9)"]
    assert len(server.requests) == 3  # only the new prompt was sent
    assert second.cache.hits == 2
    # another judge model never reuses these judgments
    with FakeChatServer() as server2:
        other = EndpointJudge(EndpointJudgeConfig(url=server2.url, model="judge-2", requests_per_second=None),
                              cache=JudgmentCache(str(tmp_path / "cache")))
        other.complete(prompts)
        assert len(server2.requests) == 2


def test_a_failure_part_way_keeps_what_was_already_judged(tmp_path):
    fake = FakeTime()
    with FakeChatServer(fail_status=400, fail_when=lambda prompt: prompt == "bad") as server:
        judge = _judge(server, fake, tmp_path, requests_per_second=None)
        with pytest.raises(BackendError, match="HTTP 400"):
            judge.complete(["good", "bad"])
    with FakeChatServer() as fixed:
        rerun = _judge(server, fake, tmp_path, requests_per_second=None)  # same judge identity (URL + model) …
        rerun.url = fixed.url + "/chat/completions"  # … now reached at a server that answers
        assert rerun.complete(["good", "bad"]) == ["Winner: A (4)", "Winner: A (3)"]
    assert [r["body"]["messages"][0]["content"] for r in fixed.requests] == ["bad"]


def test_api_key_from_environment(monkeypatch):
    monkeypatch.delenv("SRLM_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-openai-env")
    assert EndpointJudgeConfig(url="http://x", model="m").resolved_api_key() == "sk-from-openai-env"
    monkeypatch.setenv("SRLM_JUDGE_API_KEY", "sk-srlm")
    assert EndpointJudgeConfig(url="http://x", model="m").resolved_api_key() == "sk-srlm"
    assert "sk-srlm" not in repr(EndpointJudgeConfig(url="http://x", model="m", api_key="sk-srlm"))


def test_connection_uri_and_dict():
    c = endpoint_config_from_connection("http://:s3cret@judge.internal:8000/https?model=gpt-x&requests_per_second=0.5")
    assert (c.url, c.model, c.api_key, c.requests_per_second) == ("https://judge.internal:8000", "gpt-x", "s3cret", 0.5)
    assert chat_completions_url(c.url) == "https://judge.internal:8000/v1/chat/completions"
    c = endpoint_config_from_connection("https://api.example.com/v1", model="m")
    assert chat_completions_url(c.url) == "https://api.example.com/v1/chat/completions"
    c = endpoint_config_from_connection(
        {"conn_type": "http", "host": "llm.local", "port": 9000, "schema": "http", "password": "k",
         "extra": json.dumps({"model": "judge", "max_retries": 2})}
    )
    assert (c.url, c.model, c.api_key, c.max_retries) == ("http://llm.local:9000", "judge", "k", 2)
    with pytest.raises(ConfigError, match="no model name"):
        endpoint_config_from_connection("https://api.example.com/v1")
    with pytest.raises(ConfigError, match="unknown setting"):
        endpoint_config_from_connection("https://api.example.com/v1?model=m&colour=red")
    judge = EndpointJudge(endpoint_config_from_connection("https://:topsecret@h.example/https?model=m"))
    assert "topsecret" not in judge.name
