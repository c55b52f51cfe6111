"""Judges for pairwise evaluation: a local model through srlm's generation backends, or any OpenAI-compatible
chat endpoint (`POST …/v1/chat/completions`).

A judge turns prompts into judgment texts (`complete`), in prompt order. Both kinds look every prompt up in a
JudgmentCache first, keyed by (judge identity, prompt, decoding settings), so a rerun only pays for what is new.
The endpoint judge paces request starts (requests per second, shared across its worker threads), retries 429,
5xx and connection failures with exponential backoff (honouring Retry-After), and fails on other 4xx at once.
Credentials come from the config, an Airflow-style connection (URI or dict, never Airflow itself), or the
environment (SRLM_JUDGE_API_KEY, then OPENAI_API_KEY); they are never logged or printed.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Mapping, Protocol, Sequence
from urllib.parse import parse_qsl, unquote, urlsplit

from srlm.errors import BackendError, ConfigError
from srlm.evaluation.judgment_cache import JudgmentCache, judgment_key
from srlm.evaluation.rate_limit import Backoff, RateLimiter, parse_retry_after

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("SRLM_JUDGE_API_KEY", "OPENAI_API_KEY")
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class Judge(Protocol):
    name: str

    def complete(self, prompts: Sequence[str]) -> list[str]: ...

    def close(self) -> None: ...


def _f(default: Any, help: str, **kwargs: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class EndpointJudgeConfig:
    url: str = _f("", "Base URL of an OpenAI-compatible API (…/v1) or the full …/chat/completions URL.")
    model: str = _f("", "Model name sent in each request.")
    api_key: str | None = _f(None, "API key; None reads SRLM_JUDGE_API_KEY, then OPENAI_API_KEY.", repr=False)
    requests_per_second: float | None = _f(2.0, "Most request starts per second (None: unpaced).")
    max_concurrency: int = _f(4, "Requests in flight at once.")
    max_retries: int = _f(6, "Retries of a request after 429 / 5xx / connection errors before giving up.")
    backoff_initial_s: float = _f(1.0, "First retry delay; doubles per retry, with jitter.")
    backoff_max_s: float = _f(60.0, "Longest retry delay (also caps a server's Retry-After).")
    timeout_s: float = _f(120.0, "Per-request timeout.")
    temperature: float = _f(0.0, "Sampling temperature (0: the judge's most likely verdict).")
    max_tokens: int = _f(512, "Longest judgment, in tokens.")
    headers: dict = _f({}, "Extra HTTP headers (e.g. an organisation id).")

    def resolved_api_key(self) -> str | None:
        if self.api_key:
            return self.api_key
        for name in API_KEY_ENV_VARS:
            if os.environ.get(name):
                return os.environ[name]
        return None


def chat_completions_url(url: str) -> str:
    """…/chat/completions as given; a base ending in /v1 (or any path) gets /chat/completions; a bare host /v1/…."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url
    if urlsplit(url).path in ("", "/"):
        return f"{url}/v1/chat/completions"
    return f"{url}/chat/completions"


_CONFIG_KEYS = {f.name for f in fields(EndpointJudgeConfig)}


def endpoint_config_from_connection(connection: str | Mapping[str, Any], **overrides: Any) -> EndpointJudgeConfig:
    """An endpoint config from a URL or an Airflow-style connection, without importing Airflow.

    Accepted: a plain URL ("https://api.openai.com/v1"); an Airflow connection URI
    ("http://:KEY@host:8000/https?model=gpt-4o&requests_per_second=1", where the password is the API key, a path
    of "/http" or "/https" is Airflow's schema field, and query parameters are extras); or a connection dict as
    Airflow's JSON format / Connection.to_dict() gives it (conn_type, host, port, schema, login, password, extra).
    Extras named like EndpointJudgeConfig fields set them; `overrides` win over everything.
    """
    if isinstance(connection, str):
        values = _from_connection_uri(connection)
    elif isinstance(connection, Mapping):
        values = _from_connection_dict(connection)
    else:
        raise ConfigError(f"judge connection: expected a URL or a dict, got {type(connection).__name__}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - _CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"judge connection: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(_CONFIG_KEYS))}")
    config = EndpointJudgeConfig(**{k: _coerce_setting(k, v) for k, v in values.items()})
    if not config.url:
        raise ConfigError("judge connection: no URL / host")
    if not config.model:
        raise ConfigError(f"judge connection {_redacted(config.url)}: no model name (pass one, or ?model=… in the URL)")
    return config


def _from_connection_uri(uri: str) -> dict[str, Any]:
    parts = urlsplit(uri)
    if not parts.scheme or not parts.hostname:
        raise ConfigError(f"judge connection {_redacted(uri)}: not a URL")
    scheme, path = parts.scheme, parts.path
    if path.strip("/") in ("http", "https"):  # Airflow's `schema` field carries the protocol of http connections
        scheme, path = path.strip("/"), ""
    elif scheme not in ("http", "https"):
        scheme = "https"
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    values: dict[str, Any] = {"url": f"{scheme}://{host}{path}"}
    if parts.password:
        values["api_key"] = unquote(parts.password)
    for key, value in parse_qsl(parts.query):
        if key == "__extra__":  # Airflow's URI form for a JSON `extra`
            values.update(_extra_dict(value))
        else:
            values[key.removeprefix("extra__")] = value
    return values


def _from_connection_dict(conn: Mapping[str, Any]) -> dict[str, Any]:
    extra = _extra_dict(conn.get("extra"))
    url = str(conn.get("host") or "")
    if url and "://" not in url:
        # Airflow http connections keep the protocol in `schema`; anything else there is a path prefix.
        schema = str(conn.get("schema") or "").strip("/")
        scheme = schema if schema in ("http", "https") else "https"
        url = f"{scheme}://{url}" + (f":{conn['port']}" if conn.get("port") else "")
        if schema and schema not in ("http", "https"):
            url = f"{url}/{schema}"
    values: dict[str, Any] = {"url": extra.pop("url", None) or url}
    if conn.get("password"):
        values["api_key"] = conn["password"]
    values.update(extra)
    return values


def _extra_dict(extra: Any) -> dict[str, Any]:
    if not extra:
        return {}
    if isinstance(extra, Mapping):
        return dict(extra)
    try:
        parsed = json.loads(str(extra))
    except json.JSONDecodeError:
        raise ConfigError("judge connection: `extra` is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise ConfigError("judge connection: `extra` must be a JSON object")
    return parsed


def _coerce_setting(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if name in ("requests_per_second", "backoff_initial_s", "backoff_max_s", "timeout_s", "temperature"):
            return None if str(value).lower() in ("none", "") else float(value)
        if name in ("max_concurrency", "max_retries", "max_tokens"):
            return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"judge connection: {name} must be a number, got {value!r}") from None
    if name == "headers" and isinstance(value, str):
        return json.loads(value)
    return value


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


class EndpointJudge:
    """Judgments from an OpenAI-compatible chat endpoint (paced, retried, cached)."""

    def __init__(
        self,
        config: EndpointJudgeConfig,
        *,
        cache: JudgmentCache | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.config = config
        self.url = chat_completions_url(config.url)
        self.name = f"{config.model}@{_redacted(self.url)}"
        self.cache = cache
        self._sleep = sleep or time.sleep
        self._limiter = RateLimiter(config.requests_per_second, clock=clock or time.monotonic, sleep=self._sleep)
        self._backoff = Backoff(config.backoff_initial_s, config.backoff_max_s)
        self._local = threading.local()
        self.requests_sent = 0
        self.retries = 0
        self._count_lock = threading.Lock()

    @property
    def settings(self) -> dict[str, Any]:
        return {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}

    def complete(self, prompts: Sequence[str]) -> list[str]:
        keys = [judgment_key(self.name, p, self.settings) for p in prompts]
        results: list[str | None] = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        failure: BaseException | None = None
        if todo:
            with ThreadPoolExecutor(max_workers=max(1, self.config.max_concurrency)) as pool:
                futures = {pool.submit(self._request, prompts[i]): i for i in todo}
                # Cache each judgment as it arrives, so a failure part-way loses nothing already paid for.
                for future in as_completed(futures):
                    i = futures[future]
                    try:
                        results[i] = future.result()
                    except BaseException as exc:  # noqa: BLE001 - re-raised below after the others finish
                        if failure is None:
                            failure = exc
                            for other in futures:
                                other.cancel()
                        continue
                    if self.cache:
                        self.cache.put(keys[i], results[i], {"judge": self.name})
        if failure is not None:
            raise failure
        return [r or "" for r in results]

    def _session(self):
        import requests

        if getattr(self._local, "session", None) is None:
            self._local.session = requests.Session()
        return self._local.session

    def _request(self, prompt: str) -> str:
        import requests

        headers = {"Content-Type": "application/json", **self.config.headers}
        key = self.config.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.config.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        }
        attempt = 0
        while True:
            self._limiter.acquire()
            with self._count_lock:
                self.requests_sent += 1
            retry_after: float | None = None
            try:
                response = self._session().post(self.url, json=body, headers=headers, timeout=self.config.timeout_s)
            except requests.RequestException as exc:
                problem = f"{type(exc).__name__}"
            else:
                if response.status_code == 200:
                    return self._content(response)
                problem = f"HTTP {response.status_code}: {response.text[:200]!r}"
                if response.status_code not in RETRYABLE_STATUS:
                    raise BackendError(f"judge endpoint {self.name}: {problem}")
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if attempt >= self.config.max_retries:
                raise BackendError(f"judge endpoint {self.name}: giving up after {attempt + 1} attempts ({problem})")
            delay = self._backoff.delay(attempt, retry_after)
            log.info("judge endpoint %s: %s; retry %d in %.1fs", self.name, problem, attempt + 1, delay)
            with self._count_lock:
                self.retries += 1
            self._sleep(delay)
            attempt += 1

    def _content(self, response) -> str:
        try:
            content = response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise BackendError(f"judge endpoint {self.name}: response is not a chat completion: {response.text[:200]!r}") from None
        return content if isinstance(content, str) else ""

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


def local_model_identity(model_path: str) -> str:
    """A cache identity for a local model: its path plus the names, sizes and mtimes of its files, so judgments of a
    directory that was retrained in place are not reused."""
    import hashlib
    from pathlib import Path

    root = Path(model_path)
    if not root.is_dir():
        return f"local:{model_path}"
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return f"local:{root}:{digest.hexdigest()[:16]}"


class BackendJudge:
    """Judgments from a local model through an open srlm GenerationBackend (greedy by default)."""

    def __init__(
        self,
        backend,
        *,
        identity: str,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        cache: JudgmentCache | None = None,
        owns_backend: bool = False,
    ) -> None:
        self.backend = backend
        self.name = identity
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.cache = cache
        self._owns_backend = owns_backend

    @property
    def settings(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens}

    def complete(self, prompts: Sequence[str]) -> list[str]:
        from srlm.generation.base import Sampling

        # Sampled judgments are not reproducible, so only greedy ones are cached.
        cacheable = self.cache is not None and self.temperature == 0
        keys = [judgment_key(self.name, p, self.settings) for p in prompts] if cacheable else []
        results: list[str | None] = [self.cache.get(k) for k in keys] if cacheable else [None] * len(prompts)
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            sampling = Sampling(n=1, temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
            completions = self.backend.generate([[{"role": "user", "content": prompts[i]}] for i in todo], sampling)
            for i, completion in zip(todo, completions):
                results[i] = completion.texts[0] if completion.texts else ""
                if cacheable:
                    self.cache.put(keys[i], results[i], {"judge": self.name})
        return [r or "" for r in results]

    def close(self) -> None:
        if self._owns_backend:
            self.backend.close()
