"""The judges: the OpenAI-compatible endpoint judge (openai SDK) against a tiny HTTP server on 127.0.0.1 — retries
on 429/5xx honouring Retry-After, one-line errors naming endpoint and model, bounded concurrency, request pacing
(with a fake clock, so no test depends on real time), the judgment cache, connection parsing — and the TRL-shaped
pairwise interface (`judge(prompts, completions)`) of every srlm judge."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
import types
from abc import ABC, abstractmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest

from srlm.errors import BackendError, ConfigError
from srlm.evaluation.judges import (
    BackendJudge,
    EndpointJudge,
    EndpointJudgeConfig,
    PairwiseJudge,
    chat_completions_url,
    endpoint_config_from_connection,
)
from srlm.evaluation.judgment_cache import JudgmentCache
from srlm.evaluation.pairwise import PairToJudge
from srlm.evaluation.rate_limit import RateLimiter
from srlm.generation.base import Completion, GenerationBackend

SECRET = "sk-test-secret"


class FakeChatServer:
    """Answers POST /v1/chat/completions with reply(prompt) (default 'Winner: A (<prompt length>)'); can fail the
    first N requests (or those fail_when(prompt) picks) with an error status and body. `hold_until_in_flight`
    makes each request wait (briefly) until that many are in flight, so bounded concurrency shows in
    `max_in_flight` without depending on timing."""

    def __init__(self, fail_first: int = 0, fail_status: int = 429, retry_after: str | None = None, reply=None,
                 fail_when=None, fail_body=None, hold_until_in_flight: int = 0):
        self.reply = reply or (lambda prompt: f"Winner: A ({len(prompt)})")
        self.fail_when = fail_when or (lambda prompt: False)
        self.fail_body = fail_body or (lambda headers: b'{"error": "slow down"}')
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.retry_after = retry_after
        self.hold_until_in_flight = hold_until_in_flight
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.requests.append({"path": self.path, "body": body})
                    owner.auth.append(self.headers.get("Authorization"))
                    failing = len(owner.requests) <= owner.fail_first or owner.fail_when(body["messages"][0]["content"])
                    owner.in_flight += 1
                    owner.max_in_flight = max(owner.max_in_flight, owner.in_flight)
                    owner.lock.notify_all()
                    if owner.hold_until_in_flight:
                        owner.lock.wait_for(lambda: owner.in_flight >= owner.hold_until_in_flight, timeout=0.5)
                try:
                    if owner.hold_until_in_flight:
                        time.sleep(0.02)  # room for a request beyond the limit to arrive, were one sent
                    if failing:
                        self._send(owner.fail_status, owner.fail_body(self.headers))
                    else:
                        prompt = body["messages"][0]["content"]
                        reply = {"choices": [{"message": {"role": "assistant", "content": owner.reply(prompt)}}]}
                        self._send(200, json.dumps(reply).encode())
                finally:
                    with owner.lock:
                        owner.in_flight -= 1

            def _send(self, status, data):
                self.send_response(status)
                if status != 200 and owner.retry_after is not None:
                    self.send_header("Retry-After", owner.retry_after)
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


@pytest.fixture
def fake(monkeypatch) -> FakeTime:
    """Fake time for the judge's pacing and for the openai SDK's retry waits: the SDK sleeps with `time.sleep` in
    openai._base_client, so that module sees a `time` whose sleep is fake (nothing else in the process is touched)."""
    import openai._base_client as sdk

    fake = FakeTime()
    monkeypatch.setattr(sdk, "time", types.SimpleNamespace(**{**vars(time), "sleep": fake.sleep}))
    return fake


def _judge(server, fake, tmp_path=None, **overrides):
    config = EndpointJudgeConfig(**{"url": server.url, "model": "judge-1", "api_key": SECRET, "max_concurrency": 1,
                                    **overrides})
    cache = JudgmentCache(str(tmp_path / "cache")) if tmp_path is not None else None
    return EndpointJudge(config, cache=cache, sleep=fake.sleep, clock=fake.clock)


def test_retries_429_then_succeeds_honouring_retry_after(fake):
    with FakeChatServer(fail_first=2, fail_status=429, retry_after="3") as server:
        judge = _judge(server, fake, requests_per_second=None)
        assert judge.complete(["hello"]) == ["Winner: A (5)"]
    assert len(server.requests) == 3 and judge.retries == 2
    assert len(fake.sleeps) == 2 and all(s >= 3.0 for s in fake.sleeps)  # Retry-After wins over the shorter backoff
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["body"]["model"] == "judge-1"
    assert server.auth[0] == f"Bearer {SECRET}"


def test_retries_5xx_with_growing_backoff_and_gives_up(fake):
    with FakeChatServer(fail_first=100, fail_status=503) as server:
        judge = _judge(server, fake, requests_per_second=None, max_retries=3)
        with pytest.raises(BackendError, match="giving up after 4 attempts") as info:
            judge.complete(["x"])
    assert len(server.requests) == 4
    assert SECRET not in str(info.value)
    # the SDK's backoff: 0.5 s doubling per retry, less up to 25 % jitter
    assert len(fake.sleeps) == 3
    for attempt, delay in enumerate(fake.sleeps):
        base = 0.5 * 2**attempt
        assert base / 2 <= delay <= base


def test_a_500_fails_in_one_line_naming_endpoint_and_model(fake):
    with FakeChatServer(fail_first=100, fail_status=500) as server:
        judge = _judge(server, fake, requests_per_second=None, max_retries=2)
        with pytest.raises(BackendError) as info:
            judge.complete(["x"])
    message = str(info.value)
    assert len(server.requests) == 3 and "giving up after 3 attempts" in message and "HTTP 500" in message
    assert f"{server.url}/chat/completions" in message and "judge-1" in message and "\n" not in message
    assert isinstance(info.value.__cause__, openai.InternalServerError)  # chained: --debug shows the SDK's error


def test_client_errors_are_not_retried(fake):
    with FakeChatServer(fail_first=1, fail_status=400) as server:
        judge = _judge(server, fake, requests_per_second=None)
        with pytest.raises(BackendError, match="HTTP 400"):
            judge.complete(["x"])
    assert len(server.requests) == 1


def test_wrong_model_refused_key_and_no_server_are_one_line_errors(fake):
    with FakeChatServer(fail_first=100, fail_status=404) as server:
        with pytest.raises(BackendError, match="HTTP 404, no model 'judge-1'") as info:
            _judge(server, fake).complete(["x"])
        assert isinstance(info.value.__cause__, openai.NotFoundError)
    with FakeChatServer(fail_first=100, fail_status=401) as server:
        with pytest.raises(BackendError, match="API key was refused") as info:
            _judge(server, fake).complete(["x"])
        assert len(server.requests) == 1 and isinstance(info.value.__cause__, openai.AuthenticationError)
    with FakeChatServer() as server:
        gone = server.url
    with pytest.raises(BackendError, match=r"giving up after 2 attempts \(cannot connect") as info:
        EndpointJudge(EndpointJudgeConfig(url=gone, model="m", requests_per_second=None, max_retries=1)).complete(["x"])
    assert gone in str(info.value) and isinstance(info.value.__cause__, openai.APIConnectionError)


def test_concurrency_never_exceeds_max_concurrency(fake):
    with FakeChatServer(hold_until_in_flight=3) as server:
        judge = _judge(server, fake, requests_per_second=None, max_concurrency=3)
        prompts = [f"prompt {i}" for i in range(12)]
        assert judge.complete(prompts) == [f"Winner: A ({len(p)})" for p in prompts]  # still in prompt order
    assert len(server.requests) == 12
    assert server.max_in_flight == 3


def test_requests_are_paced_to_the_configured_rate(fake):
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


def test_bad_pacing_and_concurrency_settings_are_config_errors():
    with pytest.raises(ConfigError, match="requests_per_second"):
        EndpointJudge(EndpointJudgeConfig(url="http://x", model="m", requests_per_second=0))
    with pytest.raises(ConfigError, match="max_concurrency"):
        EndpointJudge(EndpointJudgeConfig(url="http://x", model="m", max_concurrency=0))


def test_cache_hits_skip_the_endpoint(tmp_path, fake):
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


def test_a_failure_part_way_keeps_what_was_already_judged(tmp_path, fake):
    with FakeChatServer(fail_status=400, fail_when=lambda prompt: prompt == "bad") as server:
        judge = _judge(server, fake, tmp_path, requests_per_second=None)
        with pytest.raises(BackendError, match="HTTP 400"):
            judge.complete(["good", "bad"])
        sent_before = len(server.requests)
        server.fail_when = lambda prompt: False  # the server recovers; the same judge identity (URL + model) reruns
        rerun = _judge(server, fake, tmp_path, requests_per_second=None)
        assert rerun.complete(["good", "bad"]) == ["Winner: A (4)", "Winner: A (3)"]
    assert [r["body"]["messages"][0]["content"] for r in server.requests[sent_before:]] == ["bad"]


def test_api_key_never_in_errors_or_log_records(fake, caplog):
    def echo_key(headers) -> bytes:  # a careless server that quotes the credentials back
        return json.dumps({"error": f"bad request from {headers.get('Authorization')}"}).encode()

    caplog.set_level(logging.DEBUG)  # every logger: srlm's, the SDK's, its HTTP client's
    messages = []
    for status in (401, 500, 400):
        with FakeChatServer(fail_first=100, fail_status=status, fail_body=echo_key) as server:
            with pytest.raises(BackendError) as info:
                _judge(server, fake, requests_per_second=None, max_retries=1).complete(["x"])
        messages.append(str(info.value))
    assert "bad request from Bearer ***" in messages[2]  # the body is shown, the key is not
    assert caplog.records and not [r for r in caplog.records if SECRET in r.getMessage()]
    assert not [m for m in messages if SECRET in m]


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
    assert chat_completions_url("https://api.example.com/v1/chat/completions/") == "https://api.example.com/v1/chat/completions"
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


# --- the TRL-shaped pairwise interface ------------------------------------------------------------------------


def prefer_longer(prompt: str) -> str:
    """A content judge over the shipped template: the longer response wins; equal lengths tie."""
    import re

    responses = dict(re.findall(r"\[Response ([AB])\]\n(.*?)\n\[End of response \1\]", prompt, re.S))
    a, b = len(responses["A"]), len(responses["B"])
    return f"Winner: {'A' if a > b else 'B' if b > a else 'tie'}"


class ScriptedJudge(PairwiseJudge):
    name = "scripted"

    def __init__(self, reply):
        self.reply = reply
        self.prompts: list[str] = []

    def complete(self, prompts):
        self.prompts.extend(prompts)
        return [self.reply(p) for p in prompts]


def test_trl_judge_returns_the_preferred_index_from_both_orders():
    judge = ScriptedJudge(prefer_longer)
    prompts = ["q1", "q2", "q3"]
    completions = [["a long answer", "short"], ["short", "a long answer"], ["same", "same"]]
    assert judge.judge(prompts, completions) == [0, 1, -1]
    assert len(judge.prompts) == 6  # every pair judged in both orders
    assert judge.judge(prompts, completions, shuffle_order=False) == [0, 1, -1]
    assert judge.judge(prompts, completions, return_scores=True) == [1.0, 0.0, 0.5]
    # a judge that always names the first response shown: the orders disagree, so nothing is preferred
    assert ScriptedJudge(lambda p: "Winner: A").judge(prompts, completions) == [-1, -1, -1]
    # one order undecided leans, but does not win
    half = ScriptedJudge(lambda p: "Winner: A" if "[Response A]\na long" in p else "no verdict")
    assert half.judge(["q"], [["a long answer", "short"]]) == [-1]
    assert half.judge(["q"], [["a long answer", "short"]], return_scores=True) == [0.75]
    with pytest.raises(ValueError, match="exactly 2 completions"):
        judge.judge(["q"], [["one", "two", "three"]])
    # srlm's richer answer: both orders' verdicts and texts
    [verdict] = judge.pair_verdicts([PairToJudge("q1", "a long answer", "short")])
    assert (verdict.preference, verdict.forward, verdict.reverse) == (1.0, "1", "1")


def test_endpoint_judge_speaks_trl_and_caches(tmp_path, fake):
    with FakeChatServer(reply=prefer_longer) as server:
        judge = _judge(server, fake, tmp_path, requests_per_second=None, max_concurrency=2)
        completions = [["a long answer", "short"], ["short", "a long answer"]]
        assert judge.judge(["q1", "q2"], completions) == [0, 1]
        assert len(server.requests) == 4
        assert _judge(server, fake, tmp_path).judge(["q1", "q2"], completions) == [0, 1]
        assert len(server.requests) == 4  # the rerun came from the cache


class FirstResponseBackend(GenerationBackend):
    """A local 'model' that always prefers the response shown first (position bias)."""

    def __init__(self):
        self.closed = False

    def generate(self, requests, sampling, *, progress=True):
        return [Completion(texts=["Winner: A"], num_tokens=[3], finish_reasons=["stop"]) for _ in requests]

    def close(self):
        self.closed = True


def test_backend_judge_speaks_trl_and_owns_its_backend():
    backend = FirstResponseBackend()
    with BackendJudge(backend, identity="local:test", owns_backend=True) as judge:
        assert judge.judge(["q"], [["x", "y"]]) == [-1]  # position bias cancels out to a tie
    assert backend.closed


def test_as_trl_judge_registers_with_trls_base_class(monkeypatch):
    class BasePairwiseJudge(ABC):  # what TRL declares (trl.experimental.judges)
        @abstractmethod
        def judge(self, prompts, completions, shuffle_order=True): ...

    fake_trl = types.ModuleType("trl.experimental.judges")
    fake_trl.BasePairwiseJudge = BasePairwiseJudge
    monkeypatch.setitem(sys.modules, "trl.experimental.judges", fake_trl)
    judge = ScriptedJudge(prefer_longer)
    assert not isinstance(judge, BasePairwiseJudge)
    assert judge.as_trl_judge() is judge
    assert isinstance(judge, BasePairwiseJudge) and isinstance(BackendJudge(None, identity="x"), BasePairwiseJudge)
