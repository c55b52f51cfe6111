"""Generation with transformers `model.generate`: the fallback where vLLM is not installed, and the reference the
vLLM backend is benchmarked against."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from srlm.config import BackendConfig
from srlm.errors import BackendError, ModelError
from srlm.generation.base import Completion, GenerationBackend, GenerationStats, Request, Sampling
from srlm.generation.device import resolve_dtype
from srlm.generation.prompts import (
    check_prompt_lengths,
    first_stop,
    load_tokenizer,
    prompts_fit,
    render_prompt_ids,
    stop_token_ids,
)
from srlm.models.loading import check_model_files, first_line, pretrained_kwargs


class TransformersBackend(GenerationBackend):
    """Batched sampling: prompts sorted by length, left-padded, `num_return_sequences=n` per prompt."""

    name = "transformers"

    def __init__(
        self, model_path: str, cfg: BackendConfig, *, dtype: str = "auto", chat_template: str | None = None
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        if cfg.transformers_batch_size < 1:
            size = cfg.transformers_batch_size
            raise BackendError(f"backend.transformers_batch_size: must be at least 1, got {size}")
        self._cfg = cfg
        check_model_files(model_path)  # before any library reads them: a damaged file is one line naming it
        self._tokenizer = load_tokenizer(model_path, chat_template)
        self._stop_ids = stop_token_ids(self._tokenizer, model_path)
        self.dtype = resolve_dtype(dtype)
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        start = time.perf_counter()
        try:
            model = AutoModelForCausalLM.from_pretrained(
                model_path, dtype=getattr(torch, self.dtype), **pretrained_kwargs(model_path)
            )
        except (OSError, ValueError) as exc:
            raise ModelError(f"{model_path}: cannot load model: {first_line(exc)}") from exc
        # Sampling is set by every generate() call alone (see generation_config), never by the checkpoint's
        # generation_config.json, which transformers would otherwise merge into each call.
        model.generation_config = token_ids_only(model.generation_config)
        self._model = model.to(self._device).eval()
        self.load_seconds = time.perf_counter() - start
        # Engine-level seed, like vLLM's LLM(seed=…): reproducible given the same sequence of generate calls.
        torch.manual_seed(cfg.seed)
        self._stats = GenerationStats(extra={"backend": self.name, "dtype": self.dtype, "load_s": self.load_seconds})

    def fits(self, requests: Sequence[Request]) -> list[bool]:
        return prompts_fit(render_prompt_ids(self._tokenizer, requests), self._cfg.max_model_len)

    def prompt_token_counts(self, requests: Sequence[Request]) -> list[int]:
        return [len(ids) for ids in render_prompt_ids(self._tokenizer, requests)]

    def generate(self, requests: Sequence[Request], sampling: Sampling, *, progress: bool = True) -> list[Completion]:
        import torch
        from tqdm.auto import tqdm

        if self._model is None:
            raise BackendError("transformers backend: generate() called after close()")
        prompts = render_prompt_ids(self._tokenizer, requests)
        check_prompt_lengths(prompts, self._cfg.max_model_len)
        results: list[Completion | None] = [None] * len(prompts)
        # Longest first: similar lengths share a batch (little padding), and a batch too big for memory fails
        # at once rather than at the end.
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        batch_size = self._cfg.transformers_batch_size
        start = time.perf_counter()
        with tqdm(total=len(prompts), desc="generate (transformers)", unit="prompt", disable=not progress) as bar:
            for first in range(0, len(order), batch_size):
                batch = order[first : first + batch_size]
                with torch.inference_mode():
                    completions = self._generate_batch([prompts[i] for i in batch], sampling)
                for index, completion in zip(batch, completions):
                    results[index] = completion
                bar.update(len(batch))
        seconds = time.perf_counter() - start
        done = [c for c in results if c is not None]
        self._stats.requests += len(done)
        self._stats.prompt_tokens += sum(c.prompt_tokens for c in done)
        self._stats.output_tokens += sum(sum(c.num_tokens) for c in done)
        self._stats.seconds += seconds
        return done

    def _generate_batch(self, prompts: list[list[int]], sampling: Sampling) -> list[Completion]:
        greedy = sampling.temperature == 0
        # Greedy decoding gives n identical samples: decode once and repeat, as vLLM returns for temperature 0.
        per_prompt = 1 if greedy else sampling.n
        longest_room = self._cfg.max_model_len - min(len(p) for p in prompts)
        config = generation_config(
            sampling,
            max_new_tokens=min(sampling.max_new_tokens, longest_room),
            num_return_sequences=per_prompt,
            stop_ids=self._stop_ids,
        )
        padded = self._tokenizer.pad({"input_ids": prompts}, return_tensors="pt").to(self._device)
        extra: dict[str, Any] = {"tokenizer": self._tokenizer} if sampling.stop else {}
        output = self._model.generate(**padded, generation_config=config, **extra)
        new_tokens = output[:, padded["input_ids"].shape[1] :].tolist()
        completions = []
        for j, prompt in enumerate(prompts):
            room = self._cfg.max_model_len - len(prompt)
            limit = min(sampling.max_new_tokens, room)
            rows = new_tokens[j * per_prompt : (j + 1) * per_prompt]
            samples = [finish_sample(self._tokenizer, row[:limit], self._stop_ids, sampling.stop) for row in rows]
            if greedy:
                samples = samples * sampling.n
            completions.append(
                Completion(
                    texts=[s[0] for s in samples],
                    num_tokens=[s[1] for s in samples],
                    finish_reasons=[s[2] for s in samples],
                    prompt_tokens=len(prompt),
                )
            )
        return completions

    def close(self) -> None:
        if self._model is None:
            return
        self._model = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


# GenerationConfig fields that say which tokens a sequence may hold and how it ends, not how tokens are chosen.
TOKEN_ID_FIELDS = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id")


def token_ids_only(model_config: Any) -> Any:
    """A model's generation config reduced to its token ids.

    transformers 5.x fills every field a generate() call leaves unset (None) from the model's
    generation_config.json (4.50-era releases did so for every field left at its global default, which made an
    explicit `do_sample=False` sample). Checkpoints ship sampling defaults (Llama/Qwen-derived ones `do_sample: true,
    temperature: 0.6`, Qwen also `repetition_penalty`, `top_k: 20`): on 5.19 a greedy call still picked up the
    repetition penalty, so greedy was not argmax. Without them, unset fields fall back to transformers' neutral
    global defaults."""
    from transformers import GenerationConfig

    return GenerationConfig(**{name: getattr(model_config, name, None) for name in TOKEN_ID_FIELDS})


def generation_config(
    sampling: Sampling, *, max_new_tokens: int, num_return_sequences: int, stop_ids: list[int]
) -> Any:
    """The GenerationConfig of one generate() call, with every field that chooses tokens set explicitly, so that
    greedy (temperature 0) is argmax decoding and sampling is vLLM's: temperature and nucleus over the whole
    vocabulary, nothing else. The sampling-only fields are left out of a greedy config: transformers ignores them
    there (and warns when they are set)."""
    from transformers import GenerationConfig

    greedy = sampling.temperature == 0
    choice = (
        {}
        if greedy
        # top_k 0: no top-k cut (as vLLM), where transformers' global default is 50; typical_p 1.0 and epsilon/eta
        # 0.0 are transformers' "off". (min_p and top_h stay unset, i.e. off: the model's values are gone.)
        else dict(
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=0,
            typical_p=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
        )
    )
    return GenerationConfig(
        do_sample=not greedy,
        num_beams=1,
        max_new_tokens=max_new_tokens,
        min_new_tokens=0,
        num_return_sequences=num_return_sequences,
        repetition_penalty=1.0,
        no_repeat_ngram_size=0,
        eos_token_id=stop_ids,
        # Finished rows are filled with a stop id, so "first stop id" marks the end of every row.
        pad_token_id=stop_ids[0],
        stop_strings=list(sampling.stop) or None,
        **choice,
    )


def finish_sample(
    tokenizer: Any, row: list[int], stop_ids: Sequence[int], stops: Sequence[str]
) -> tuple[str, int, str]:
    """(text, generated tokens, finish reason) of one generated row, counted the way vLLM counts: a stop token is
    a generated token (and not part of the text); a stop string is cut from the text, and the count ends at the
    token that completed it. Rows end at their first stop id (finished rows are padded with one)."""
    end = next((k for k, token in enumerate(row) if token in stop_ids), None)
    content = row if end is None else row[:end]
    text = _decode(tokenizer, content)
    cut = first_stop(text, stops)
    if cut >= 0:
        return text[:cut], _tokens_until_stop(tokenizer, content, stops), "stop"
    if end is not None:
        return text, end + 1, "stop"
    return text, len(row), "length"


def _tokens_until_stop(tokenizer: Any, content: list[int], stops: Sequence[str]) -> int:
    """Fewest leading tokens whose text holds a stop string (whether it does only grows with the prefix)."""
    low, high = 1, len(content)
    while low < high:
        mid = (low + high) // 2
        if first_stop(_decode(tokenizer, content[:mid]), stops) >= 0:
            high = mid
        else:
            low = mid + 1
    return high


def _decode(tokenizer: Any, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=True)
