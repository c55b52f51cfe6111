"""Judges for pairwise evaluation: a local model through srlm's generation backends, or any OpenAI-compatible
chat endpoint (`POST …/v1/chat/completions`) through the `openai` SDK.

The hierarchy mirrors TRL's judges: PairwiseJudge (the base: TRL's pairwise `judge(prompts, completions)` plus
srlm's richer both-orders verdicts) → BackendJudge (a local model, e.g. the model judging itself), RubricJudge (a
local model comparing by the loop's own additive rubric: each response scored, the higher mean wins) and
EndpointJudge (an OpenAI-compatible server). Each turns judge prompts into judgment texts (`complete`), in prompt
order, looking every prompt up in a JudgmentCache first, keyed by (judge identity, prompt, decoding settings), so
a rerun only pays for what is new.

The endpoint judge leaves HTTP, timeouts, retries and backoff to `openai.OpenAI` (429, 408, 409, 5xx and
connection errors are retried with exponential backoff, honouring Retry-After; other 4xx fail at once), and adds
bounded concurrency (a thread pool of `max_concurrency`) and request pacing (`requests_per_second`, which the SDK
does not offer). SDK errors become one-line BackendErrors naming the endpoint and the model. Credentials come from
the config, an Airflow-style connection (URI or dict, never Airflow itself), or the environment
(SRLM_JUDGE_API_KEY, then OPENAI_API_KEY); they are never logged or printed.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field, fields
from typing import Any, Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

from srlm.errors import BackendError, ConfigError
from srlm.evaluation.judgment_cache import JudgmentCache, judgment_key
from srlm.evaluation.pairwise import PairToJudge, PairVerdict, pair_verdicts
from srlm.evaluation.rate_limit import RateLimiter
from srlm.judging.rubric import RubricSampling, mean_score, score_responses

log = logging.getLogger(__name__)

API_KEY_ENV_VARS = ("SRLM_JUDGE_API_KEY", "OPENAI_API_KEY")
# Sent when no key is configured: servers run without one (vLLM, llama.cpp, …) ignore it, and the SDK insists on one.
NO_API_KEY = "EMPTY"
# Where TRL keeps BasePairwiseJudge: trl.experimental.judges since the judges went experimental, trl before that.
TRL_JUDGE_MODULES = ("trl.experimental.judges", "trl")


class Judge(Protocol):
    """What srlm's pairwise evaluations need from a judge (PairwiseJudge implements it; test doubles may too)."""

    name: str

    def complete(self, prompts: Sequence[str]) -> list[str]: ...

    def close(self) -> None: ...


class PairwiseJudge(ABC):
    """Base of srlm's judges, shaped like TRL's `BasePairwiseJudge`.

    Subclasses implement `complete` (judge prompts → judgment texts). On top of it: `pair_verdicts` (srlm's API:
    every pair judged in both orders, with each order's verdict and text) and `judge` (TRL's API: the index of the
    preferred completion per prompt), so a judge also plugs into TRL trainers (see `as_trl_judge`).
    """

    name: str
    template: str | None = None  # pairwise template text; None: the shipped "pairwise" template

    @abstractmethod
    def complete(self, prompts: Sequence[str]) -> list[str]:
        """One judgment text per prompt, in order."""

    def close(self) -> None:  # noqa: B027 - optional hook: a judge that holds nothing has nothing to release
        """Release what the judge holds (a model, HTTP connections)."""

    def __enter__(self) -> PairwiseJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def pair_verdicts(self, pairs: Sequence[PairToJudge]) -> list[PairVerdict]:
        """srlm's verdicts: each pair judged in both orders; they must agree for a win, anything else is a tie."""
        return pair_verdicts(pairs, self, template=self.template)

    def judge(
        self,
        prompts: list[str],
        completions: list[list[str]],
        shuffle_order: bool = True,
        return_scores: bool = False,
    ) -> list[int | float]:
        """TRL's pairwise judge call: for each prompt, the index (0 or 1) of the preferred of its two completions,
        or -1 when the judge does not prefer one (the two orders disagree, say tie, or do not parse).

        `shuffle_order` is accepted for TRL's signature and has no effect: srlm always judges both orders, which
        cancels position bias for every pair rather than on average. With `return_scores`, each answer is instead
        the score of the first completion (PairVerdict.output_1_score: 1.0 / 0.0 when both orders agree, 0.5 when
        undecided, 0.75 / 0.25 when one order is).
        """
        del shuffle_order  # both orders are always judged
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completion pairs")
        pairs = []
        for prompt, pair in zip(prompts, completions):
            if len(pair) != 2:
                raise ValueError(f"a pairwise judge needs exactly 2 completions per prompt, got {len(pair)}")
            pairs.append(PairToJudge(instruction=prompt, output_1=pair[0], output_2=pair[1]))
        verdicts = self.pair_verdicts(pairs)
        return [v.output_1_score if return_scores else v.preferred_index for v in verdicts]

    def as_trl_judge(self) -> PairwiseJudge:
        """This judge, registered as a (virtual) subclass of TRL's BasePairwiseJudge when the installed TRL has one,
        so `isinstance(judge, BasePairwiseJudge)` checks in TRL trainers pass. srlm never imports TRL otherwise (it
        is heavy); without it, the judge is still call-compatible."""
        base = trl_pairwise_judge_base()
        if base is not None and not isinstance(self, base):
            base.register(PairwiseJudge)
        return self


def trl_pairwise_judge_base() -> type | None:
    """TRL's BasePairwiseJudge class, or None when the installed TRL has none (or TRL is not installed)."""
    for module_name in TRL_JUDGE_MODULES:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TRL warns on every import from trl.experimental
                module = importlib.import_module(module_name)
        except ImportError:
            continue
        base = getattr(module, "BasePairwiseJudge", None)
        if isinstance(base, type):
            return base
    return None


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
    max_retries: int = _f(
        6,
        "Retries of a request after 429 / 408 / 409 / 5xx / connection errors before giving up (the openai SDK's "
        "backoff: 0.5 s doubling to 8 s, with jitter; a server's Retry-After of up to 2 minutes wins).",
    )
    timeout_s: float = _f(120.0, "Per-request timeout (each attempt).")
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


def openai_base_url(url: str) -> str:
    """The API base the openai client wants: a full …/chat/completions URL loses that suffix, a bare host gets /v1,
    any other path (…/v1, a proxy prefix) is the base as given."""
    url = url.rstrip("/")
    if url.endswith("/chat/completions"):
        return url.removesuffix("/chat/completions")
    if urlsplit(url).path in ("", "/"):
        return f"{url}/v1"
    return url


def chat_completions_url(url: str) -> str:
    """The URL the judge posts to: …/chat/completions as given; a base ending in /v1 (or any path) gets
    /chat/completions; a bare host /v1/chat/completions."""
    return f"{openai_base_url(url)}/chat/completions"


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
    except json.JSONDecodeError as exc:
        raise ConfigError(f"judge connection: `extra` is not valid JSON ({exc})") from exc
    if not isinstance(parsed, dict):
        raise ConfigError("judge connection: `extra` must be a JSON object")
    return parsed


def _coerce_setting(name: str, value: Any) -> Any:
    if value is None:
        return None
    try:
        if name in ("requests_per_second", "timeout_s", "temperature"):
            return None if str(value).lower() in ("none", "") else float(value)
        if name in ("max_concurrency", "max_retries", "max_tokens"):
            return int(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"judge connection: {name} must be a number, got {value!r}") from exc
    if name == "headers" and isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"judge connection: headers must be a JSON object ({exc})") from exc
    return value


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password or parts.username:
        netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
        return parts._replace(netloc=netloc).geturl()
    return url


class EndpointJudge(PairwiseJudge):
    """Judgments from an OpenAI-compatible chat endpoint through `openai.OpenAI` (retried by the SDK; paced, run
    `max_concurrency` at a time and cached here). `sleep`/`clock` drive the pacing only (tests pass fakes)."""

    def __init__(
        self,
        config: EndpointJudgeConfig,
        *,
        cache: JudgmentCache | None = None,
        template: str | None = None,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import openai  # imported here: it takes a second, and only endpoint judges need it

        _check_endpoint_config(config)
        self.config = config
        self.template = template
        self.url = chat_completions_url(config.url)
        # The cache identity: model and endpoint, never credentials. Changing its form would orphan every cached judgment.
        self.name = f"{config.model}@{_redacted(self.url)}"
        self.cache = cache
        self._limiter = RateLimiter(config.requests_per_second, clock=clock or time.monotonic, sleep=sleep or time.sleep)
        self._local = threading.local()  # per worker thread: HTTP attempts of the request in progress
        self.requests_sent = 0  # HTTP requests, retries included
        self.retries = 0
        self._count_lock = threading.Lock()
        # The request hook runs before every attempt the SDK makes, retries included: that is where pacing and
        # counting belong, so a retried request waits for a slot like any other.
        http_client = openai.DefaultHttpxClient(event_hooks={"request": [self._before_attempt]})
        self._client = openai.OpenAI(
            base_url=openai_base_url(config.url),
            api_key=config.resolved_api_key() or NO_API_KEY,
            timeout=config.timeout_s,
            max_retries=config.max_retries,
            default_headers=dict(config.headers) or None,
            http_client=http_client,
        )

    @property
    def settings(self) -> dict[str, Any]:
        return {"temperature": self.config.temperature, "max_tokens": self.config.max_tokens}

    @property
    def where(self) -> str:
        """The endpoint and model, for messages."""
        return f"judge endpoint {_redacted(self.url)} (model {self.config.model})"

    def complete(self, prompts: Sequence[str]) -> list[str]:
        keys = [judgment_key(self.name, p, self.settings) for p in prompts]
        results: list[str | None] = [self.cache.get(k) if self.cache else None for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        failure: BaseException | None = None
        if todo:
            with ThreadPoolExecutor(max_workers=self.config.max_concurrency) as pool:
                futures = {pool.submit(self._judgment, prompts[i]): i for i in todo}
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

    def _before_attempt(self, request: object) -> None:
        self._limiter.acquire()
        self._local.attempts = getattr(self._local, "attempts", 0) + 1
        with self._count_lock:
            self.requests_sent += 1

    def _judgment(self, prompt: str) -> str:
        import openai

        self._local.attempts = 0
        try:
            completion = self._client.chat.completions.create(
                model=self.config.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=self.config.temperature,
                max_tokens=self.config.max_tokens,
            )
        except openai.OpenAIError as exc:
            raise BackendError(self._failure(exc)) from exc
        finally:
            with self._count_lock:
                self.retries += max(0, self._local.attempts - 1)
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError) as exc:
            # Not JSON: the SDK hands back the body as text; JSON without choices: a model holding what came.
            answer = completion if isinstance(completion, str) else json.dumps(completion.model_dump(exclude_unset=True))
            raise BackendError(f"{self.where}: the answer is not a chat completion: {answer[:200]!r}") from exc
        return content if isinstance(content, str) else ""

    def _failure(self, exc: Exception) -> str:
        """One line for an SDK error: the endpoint, the model, what went wrong and, for retried kinds, how often."""
        import openai

        tries = max(1, self._local.attempts)
        attempts = f"giving up after {tries} attempt{'s' if tries > 1 else ''}"
        if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
            problem = (
                f"HTTP {exc.status_code}, the API key was refused (set one in the connection, "
                f"{' or '.join(API_KEY_ENV_VARS)})"
            )
        elif isinstance(exc, openai.NotFoundError):
            problem = (
                f"HTTP 404, no model {self.config.model!r} there, or the URL is not the API's base (…/v1): "
                f"{_body(exc)!r}"
            )
        elif isinstance(exc, openai.APIStatusError):
            problem = f"HTTP {exc.status_code}: {_body(exc)!r}"
            if _sdk_retries(exc.status_code):
                problem = f"{attempts} ({problem})"
        elif isinstance(exc, openai.APITimeoutError):
            problem = f"{attempts} (no answer within {self.config.timeout_s:g} s)"
        elif isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            problem = f"{attempts} (cannot connect: {type(cause).__name__}: {cause})"
        else:
            problem = f"{type(exc).__name__}: {exc}"
        return _without_secret(f"{self.where}: {problem}", self.config.resolved_api_key())

    def close(self) -> None:
        self._client.close()


def _check_endpoint_config(config: EndpointJudgeConfig) -> None:
    if config.requests_per_second is not None and config.requests_per_second <= 0:
        raise ConfigError(f"judge endpoint: requests_per_second must be positive (or None), got {config.requests_per_second}")
    if config.max_concurrency < 1:
        raise ConfigError(f"judge endpoint: max_concurrency must be at least 1, got {config.max_concurrency}")
    if config.max_retries < 0:
        raise ConfigError(f"judge endpoint: max_retries must be 0 or more, got {config.max_retries}")


def _sdk_retries(status: int) -> bool:
    """The statuses openai's client retries (408, 409, 429, 5xx), to say "giving up after N attempts" for them."""
    return status in (408, 409, 429) or status >= 500


def _body(exc: Any) -> str:
    try:
        return exc.response.text[:200]
    except Exception:  # noqa: BLE001 - an unreadable body must not hide the error being reported
        return str(exc)[:200]


def _without_secret(message: str, secret: str | None) -> str:
    # A server may echo the key back in its error body; it must not reach a log or a terminal through us.
    return message.replace(secret, "***") if secret else message



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


class BackendJudge(PairwiseJudge):
    """Judgments from a local model through an open srlm GenerationBackend (greedy by default): the self-judge when
    the backend serves the model under evaluation."""

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
        template: str | None = None,
    ) -> None:
        self.backend = backend
        self.name = identity
        self.template = template
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.cache = cache
        self._owns_backend = owns_backend

    @property
    def settings(self) -> dict[str, Any]:
        # "decoding": greedy judgments cached before the backends set every decoding field (transformers then took
        # the checkpoint's repetition penalty, so greedy was not argmax) are not reused.
        return {"temperature": self.temperature, "top_p": self.top_p, "max_new_tokens": self.max_new_tokens,
                "decoding": "explicit"}

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


RUBRIC = "rubric"  # the head-to-head template name that selects the RubricJudge


class RubricJudge(BackendJudge):
    """A pairwise comparison by the judge the loop trains: each of the two responses is scored `num_samples` times
    with the judge step's additive rubric (srlm.judging.rubric: its template, sampling and parser), and the response
    with the higher mean of its parsed scores wins. Equal means, or a response with fewer than `required_parsed`
    parsed scores (or whose judge prompt does not fit the context), make a tie, as an unparsed pairwise verdict does.

    This is how a self-rewarding model's own judgment compares two responses (its EFT data teach the 5-point rubric,
    not a "Winner:" line). Scoring sees one response at a time, so it has no position bias to cancel: both "orders"
    of a verdict are the same comparison, and position consistency does not apply. The plain judge API (`complete`)
    is BackendJudge's, with the rubric's sampling; sampled judgments are not cached."""

    scores_pointwise = True

    def __init__(
        self,
        backend,
        *,
        identity: str,
        sampling: RubricSampling,
        template_name: str,
        required_parsed: int = 3,
        owns_backend: bool = False,
    ) -> None:
        if not 1 <= required_parsed <= sampling.num_samples:
            raise ConfigError(
                f"judge.min_parsed_samples: {required_parsed} must be within 1..num_samples ({sampling.num_samples})"
            )
        super().__init__(
            backend, identity=f"{identity} ({RUBRIC}: {template_name}, {sampling.num_samples} samples)",
            max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature, top_p=sampling.top_p,
            owns_backend=owns_backend,
        )
        self.sampling = sampling
        self.required_parsed = required_parsed

    def score(self, instruction_response: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        """Per (instruction, response): its judgments, parsed scores (None: unparsed), and the mean of the parsed
        ones when at least `required_parsed` parsed (else None); a prompt too long for the context is not judged."""
        out = []
        for judged in score_responses(self.backend, instruction_response, self.sampling, progress=False):
            judgments = judged or []
            out.append({
                "judgments": [j.text for j in judgments], "scores": [j.score for j in judgments],
                "mean": mean_score([j.score for j in judgments], self.required_parsed), "too_long": judged is None,
            })  # fmt: skip
        return out

    def pair_verdicts(self, pairs: Sequence[PairToJudge]) -> list[PairVerdict]:
        scored = self.score([(p.instruction, out) for p in pairs for out in (p.output_1, p.output_2)])
        verdicts = []
        for i in range(len(pairs)):
            first, second = scored[2 * i], scored[2 * i + 1]
            if first["mean"] is None or second["mean"] is None:
                winner, preference = None, 1.5
            elif first["mean"] == second["mean"]:
                winner, preference = "tie", 1.5
            else:
                winner, preference = ("1", 1.0) if first["mean"] > second["mean"] else ("2", 2.0)
            verdicts.append(PairVerdict(
                preference, winner, winner, "", "", rubric={"output_1": first, "output_2": second}
            ))
        return verdicts

