"""Self-instruct request format, task extraction and the prompt filters (no model needed)."""

from __future__ import annotations

import random

import pytest

from srlm.steps.self_instruct import (
    NearDuplicateIndex,
    PromptFilter,
    build_request,
    extract_task,
    normalise,
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
