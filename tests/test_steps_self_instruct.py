"""Self-instruct request format, the demonstration mix, task extraction and the prompt filters (no model needed)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from srlm.config import SRLMConfig, load_config
from srlm.errors import ConfigError
from srlm.steps.self_instruct import (
    NearDuplicateIndex,
    PromptFilter,
    build_request,
    extract_task,
    generated_shot_count,
    normalise,
    parse_phrases,
    rouge_tokens,
    sample_shots,
)

SEEDS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain how a bicycle gear works.",
    "Give me three tips for learning Spanish.",
]


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def rouge_l_f1(a: str, b: str) -> float:
    ta, tb = rouge_tokens(a), rouge_tokens(b)
    common = lcs(ta, tb)
    if not common:
        return 0.0
    precision, recall = common / len(ta), common / len(tb)
    return 2 * precision * recall / (precision + recall)


def test_request_shows_every_shot_as_a_closed_task_and_ends_with_an_open_one():
    text = build_request(SEEDS[:2])
    assert text.startswith("Come up with a series of tasks and questions.")
    assert "<task>What is the capital of France?</task>\n<task>Write a haiku about autumn leaves.</task>\n" in text
    assert text.endswith("<task>")
    assert text.count("<task>") == 3 and text.count("</task>") == 2


def test_sample_shots_never_repeats_a_seed_and_caps_at_the_seed_count():
    rng = random.Random(0)
    shots = sample_shots(SEEDS, 8, rng)
    assert sorted(shots) == sorted(SEEDS)
    assert len(set(sample_shots(SEEDS * 1, 3, rng))) == 3


@pytest.mark.parametrize(
    ("completion", "finish", "expected"),
    [
        ("How do tides work?", "stop", ("How do tides work?", None)),
        ("How do tides work?</task>\n<task>Another one</task>", "stop", ("How do tides work?", None)),
        ("  Summarise   this\r\n\r\n\r\nparagraph.  ", "stop", ("Summarise this\n\nparagraph.", None)),
        ("Describe the water cycle in deta", "length", (None, "truncated")),
        ("Describe the water cycle</task>junk junk", "length", ("Describe the water cycle", None)),
        ("   ", "stop", (None, "no_task")),
        ("<task>What is love?", "stop", (None, "leftover_tag")),
        ("What is love? < /task", "stop", (None, "leftover_tag")),
    ],
)
def test_extract_task(completion, finish, expected):
    assert extract_task(completion, finish) == expected


def test_normalise_ignores_case_spacing_and_end_punctuation():
    assert normalise("  What is  AI? ") == normalise("what is ai") == "what is ai"


def test_near_duplicate_index_is_rouge_l_f1():
    pairs = [
        ("Write a poem about the sea.", "Write a short poem about the deep blue sea."),
        ("How do I bake bread at home?", "What is the best way to bake bread?"),
        ("List five prime numbers.", "Translate this sentence into German."),
    ]
    for a, b in pairs:
        index = NearDuplicateIndex(threshold=0.01)
        index.add(a)
        assert index.best_match(b) == pytest.approx(rouge_l_f1(a, b))


def test_near_duplicate_threshold():
    index = NearDuplicateIndex(threshold=0.7)
    index.add("Write a poem about the sea.")
    assert index.is_near_duplicate("Write a short poem about the sea!")  # F1 = 12/13
    assert not index.is_near_duplicate("Explain how tides are caused by the moon.")


def make_filter(**overrides) -> PromptFilter:
    settings = dict(seeds=SEEDS, min_chars=10, max_chars=200, near_duplicate_threshold=0.7)
    settings.update(overrides)
    return PromptFilter(**settings)


def test_filter_rejects_each_failure_with_its_reason():
    screen = make_filter()
    shots = SEEDS[:2]
    cases = [
        ("Hi?", "stop", "too_short"),
        ("x" * 201, "stop", "too_long"),
        ("- list some fruit please", "stop", "bad_start"),
        ("1. Name a planet in our solar system", "stop", "bad_start"),
        ("what is the capital of france", "stop", "copy_of_shot"),
        ("Give me three tips for learning Spanish!", "stop", "duplicate"),  # a seed, but not a shot here
        ("Give me three good tips for learning Spanish.", "stop", "near_duplicate"),
        ("Why is the sky blu", "length", "truncated"),
    ]
    for completion, finish, reason in cases:
        assert screen.screen(completion, finish, shots) == (None, reason), completion
    assert screen.accepted == 0
    assert sum(screen.rejected.values()) == len(cases)


def test_filter_remembers_what_it_accepts():
    screen = make_filter()
    task, reason = screen.screen("How do airplanes stay in the air?", "stop", SEEDS[:2])
    assert (task, reason) == ("How do airplanes stay in the air?", None)
    assert screen.screen("how do airplanes stay in the air", "stop", SEEDS[:2]) == (None, "duplicate")
    assert screen.screen("How do big airplanes stay up in the air?", "stop", SEEDS[:2]) == (None, "near_duplicate")
    screen.remember_accepted("Name the largest ocean on Earth.")
    assert screen.screen("Name the largest ocean on Earth", "stop", []) == (None, "duplicate")
    assert screen.accepted == 2


# ------------------------------------------------------------------------------ the paper's demonstration mix

GENERATED = [f"Generated question number {i} about topic {i * 37}?" for i in range(10)]


def test_shots_mix_generated_prompts_with_seeds_as_self_instruct_does():
    seeds = [f"Seed task {i}: explain topic {i}." for i in range(12)]
    shots = sample_shots(seeds, 8, random.Random(3), GENERATED, 2)
    assert len(shots) == 8 and len(set(shots)) == 8
    assert sum(shot in GENERATED for shot in shots) == 2 and sum(shot in seeds for shot in shots) == 6
    assert shots == sample_shots(seeds, 8, random.Random(3), GENERATED, 2)  # deterministic given the rng
    assert shots != sample_shots(seeds, 8, random.Random(4), GENERATED, 2)


def test_shots_are_seeds_while_too_few_generated_prompts_exist():
    seeds = [f"Seed task {i}: explain topic {i}." for i in range(12)]
    one = sample_shots(seeds, 8, random.Random(0), GENERATED[:1], 2)
    assert sum(shot in GENERATED for shot in one) == 1 and len(one) == 8
    # With none generated yet the draw is exactly the seed-only draw.
    assert sample_shots(seeds, 8, random.Random(0), [], 2) == random.Random(0).sample(seeds, 8)
    assert [generated_shot_count(8, 2, 0), generated_shot_count(8, 2, 5), generated_shot_count(1, 2, 5)] == [0, 2, 1]


# --------------------------------------------------------------------------------- Self-Instruct's filters


def paper_filter(**overrides) -> PromptFilter:
    """The filter as the prompts step builds it from the default config."""
    cfg = SRLMConfig().prompts
    return PromptFilter.from_config(cfg, overrides.pop("seeds", SEEDS), overrides.pop("earlier", ()))


@pytest.mark.parametrize(
    ("task", "reason"),
    [
        ("Draw a cat sitting on a fence.", "keyword"),
        ("Describe the image of a busy city street.", "keyword"),
        ("Plot the sales figures for last year.", "keyword"),
        ("Where should I GO   TO eat in Paris tonight?", "keyword"),  # a phrase, any case and spacing
        ("Write a short song with music notes.", "keyword"),
        ("Explain what a withdrawal fee is.", None),  # "draw" inside a word is no keyword
        ("Summarise this profile of a famous chef.", None),  # nor "file" inside "profile"
        ("Write a program that sorts a list of numbers.", "blocked_prefix"),
        ("write a program to reverse a string", "blocked_prefix"),
        ("Tell me jokes", "too_short"),  # 3 words: Self-Instruct keeps 4 or more
        (" ".join(["word"] * 151), "too_long"),
        ('"Quoted" questions are not instructions here?', "bad_start"),
        ("(Optional) tell me a joke about cats.", "bad_start"),
        ("• list some fruits that are red please", "bad_start"),
        ("Écris un poème sur la mer et le vent.", "non_ascii_start"),
        ("Why do cats purr when they are happy?", None),
    ],
)
def test_paper_filters_drop_what_self_instruct_drops(task, reason):
    screen = paper_filter()
    expected = (task, None) if reason is None else (None, reason)
    assert screen.screen(task, "stop", []) == expected
    assert screen.rejected == (Counter({reason: 1}) if reason else Counter())


def test_default_keywords_are_self_instructs_list_and_configurable():
    cfg = SRLMConfig().prompts
    keywords = parse_phrases(cfg.blocked_keywords)
    assert len(keywords) == 18 and {"image", "graphs", "go to", "flowchart", "diagram"} <= set(keywords)
    assert parse_phrases(" a, ,b c ,") == ("a", "b c")
    relaxed = PromptFilter.from_config(
        load_config(None, {"prompts.blocked_keywords": "", "prompts.ascii_start": False}).prompts, SEEDS
    )
    assert relaxed.screen("Draw a cat sitting on a fence.", "stop", [])[1] is None
    assert relaxed.screen("Écris un poème sur la mer et le vent.", "stop", [])[1] is None


def test_prompts_of_earlier_iterations_are_rejected_and_counted_apart():
    earlier = ["Explain how rainbows form in the sky.", "List three facts about the planet Mars."]
    screen = paper_filter(earlier=earlier)
    assert screen.screen("explain how rainbows form in the sky", "stop", []) == (None, "earlier_iteration")
    assert screen.screen("List three fun facts about the planet Mars.", "stop", []) == (None, "earlier_iteration")
    assert screen.rejected == Counter({"earlier_iteration": 2})
    assert screen.screen("Why do cats purr when they are happy?", "stop", [])[1] is None
    # Later requests may show the earlier iterations' prompts and the accepted one as generated demonstrations.
    assert screen.generated == [*earlier, "Why do cats purr when they are happy?"]


def test_config_refuses_more_generated_shots_than_shots():
    with pytest.raises(ConfigError, match="num_generated_shots"):
        load_config(None, {"prompts.num_shots": 2, "prompts.num_generated_shots": 3})
    with pytest.raises(ConfigError, match="min_words"):
        load_config(None, {"prompts.min_words": 10, "prompts.max_words": 5})
