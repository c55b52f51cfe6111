"""The pyarrow schemas of every table srlm writes.

Each table artifact's manifest records its schema name and SCHEMA_VERSION; readers check both. Add a column by
appending it (nullable) and bumping SCHEMA_VERSION; never reorder or retype a column in place.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = 2

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

SCHEMAS: dict[str, pa.Schema] = {
    # Seed SFT data. IFT: the conversation up to the last user turn → the assistant answer.
    # EFT: a judge prompt (the rubric filled with an instruction and a response) → justification + "Score: N".
    # Loss is computed on `completion` only.
    "sft_examples": pa.schema(
        [
            pa.field("example_id", pa.string(), nullable=False),
            pa.field("kind", pa.string(), nullable=False),  # "ift" or "eft"
            pa.field("prompt_messages", pa.list_(MESSAGE), nullable=False),
            pa.field("completion", pa.string(), nullable=False),
            pa.field("source", pa.string()),  # e.g. "srlm-seed", "oasst2", "alpaca:path"
            pa.field("score", pa.float64()),  # EFT: the score in the completion; IFT: null
        ]
    ),
    # Human-ranked evaluation groups (e.g. OASST sibling replies), one row per response.
    "eval_groups": pa.schema(
        [
            pa.field("group_id", pa.string(), nullable=False),
            pa.field("prompt_messages", pa.list_(MESSAGE), nullable=False),
            pa.field("response_id", pa.string(), nullable=False),
            pa.field("response", pa.string(), nullable=False),
            pa.field("human_rank", pa.int32(), nullable=False),  # 0 = best; equal ranks are ties
            pa.field("lang", pa.string()),
            pa.field("source", pa.string()),
        ]
    ),
    # Prompts for one iteration (self-instruct output, or seed prompts).
    "prompts": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),  # "generated", "seed", "import"
            pa.field("iteration", pa.int32()),
            pa.field("generator", pa.string()),  # model that wrote it
        ]
    ),
    # Candidate responses, one row per (prompt, candidate).
    "candidates": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("candidate_id", pa.string(), nullable=False),  # f"{prompt_id}-c{index}"
            pa.field("candidate_index", pa.int32(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("response", pa.string(), nullable=False),
            pa.field("num_tokens", pa.int32()),
            pa.field("finish_reason", pa.string()),  # "stop" or "length"
            pa.field("model", pa.string()),
            pa.field("backend", pa.string()),
        ]
    ),
    # Judge samples, one row per (candidate, sample). score is null exactly when parse_ok is false.
    "judgments": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("sample_index", pa.int32(), nullable=False),
            pa.field("judgment", pa.string(), nullable=False),  # raw judge text
            pa.field("score", pa.float64()),
            pa.field("parse_ok", pa.bool_(), nullable=False),
            pa.field("parse_error", pa.string()),
            pa.field("judge_model", pa.string()),
        ]
    ),
    # DPO preference pairs: highest vs lowest mean score per prompt.
    "pairs": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("chosen", pa.string(), nullable=False),
            pa.field("rejected", pa.string(), nullable=False),
            pa.field("chosen_candidate_id", pa.string(), nullable=False),
            pa.field("rejected_candidate_id", pa.string(), nullable=False),
            pa.field("chosen_score", pa.float64(), nullable=False),
            pa.field("rejected_score", pa.float64(), nullable=False),
            pa.field("margin", pa.float64(), nullable=False),
            pa.field("chosen_chars", pa.int32()),
            pa.field("rejected_chars", pa.int32()),
            pa.field("chosen_tokens", pa.int32()),
            pa.field("rejected_tokens", pa.int32()),
        ]
    ),
    # Meta-Rewarding: one row per meta-judge call comparing two judgments of one candidate (first shown as A).
    # winner is null exactly when parse_ok is false.
    "meta_judgments": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("first_sample_index", pa.int32(), nullable=False),  # judgments.sample_index shown as A
            pa.field("second_sample_index", pa.int32(), nullable=False),  # … shown as B
            pa.field("meta_judgment", pa.string(), nullable=False),  # raw meta-judge text
            pa.field("winner", pa.string()),  # "A" or "B"
            pa.field("parse_ok", pa.bool_(), nullable=False),
            pa.field("parse_error", pa.string()),
            pa.field("judge_model", pa.string()),
        ]
    ),
    # Meta-Rewarding judge preference pairs: per prompt, the highest- vs the lowest-rated judgment of one candidate.
    # prompt is the judge prompt exactly as the judge saw it (the rubric filled with the instruction and response).
    "judgment_pairs": pa.schema(
        [
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("candidate_id", pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("chosen", pa.string(), nullable=False),  # judgment text
            pa.field("rejected", pa.string(), nullable=False),
            pa.field("chosen_sample_index", pa.int32(), nullable=False),
            pa.field("rejected_sample_index", pa.int32(), nullable=False),
            pa.field("chosen_elo", pa.float64(), nullable=False),
            pa.field("rejected_elo", pa.float64(), nullable=False),
            pa.field("chosen_score", pa.float64()),  # the score each judgment gave the response
            pa.field("rejected_score", pa.float64()),
            pa.field("battles", pa.int32()),  # decisive meta-judgments among this candidate's judgments
        ]
    ),
    # DPO reference log-probs of a pairs table's rows (summed over each response's tokens), keyed by row index.
    "reference_log_probs": pa.schema(
        [
            pa.field("pair_index", pa.int64(), nullable=False),  # row of the pairs table
            pa.field("prompt_id", pa.string(), nullable=False),
            pa.field("ref_chosen_logps", pa.float32(), nullable=False),
            pa.field("ref_rejected_logps", pa.float32(), nullable=False),
        ]
    ),
    # Checkpoint registry: one committed single-row table per checkpoint under <run>/registry/<checkpoint_id>.
    "checkpoints": pa.schema(
        [
            pa.field("checkpoint_id", pa.string(), nullable=False),  # "M0", "M1", "M1-step200", …
            pa.field("run", pa.string(), nullable=False),
            pa.field("iteration", pa.int32(), nullable=False),  # 0 for the seed SFT model
            # The HF checkpoint directory's path relative to the store root (runs/<run>/models/<id>); entries
            # written before that hold the URI as given (srlm.training.registry resolves both).
            pa.field("uri", pa.string(), nullable=False),
            pa.field("parent_id", pa.string()),  # the model it was trained from (also the DPO reference)
            pa.field("training", pa.string(), nullable=False),  # "sft" or "dpo"
            pa.field("step", pa.int64()),
            pa.field("final", pa.bool_(), nullable=False),  # the iteration's output (vs an intermediate save)
            pa.field("data_uri", pa.string()),  # training data it saw (store-relative when in the store)
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("config_json", pa.string()),
            # JSON: how it was trained (backend, world size, nodes, precision, sharding, resumed-from step,
            # checkpoint selection); added in schema version 2, null in older entries.
            pa.field("details_json", pa.string()),
        ]
    ),
    # Evaluation results, keyed by (checkpoint_id, suite, suite_version); one row per metric.
    "eval_results": pa.schema(
        [
            pa.field("checkpoint_id", pa.string(), nullable=False),
            pa.field("suite", pa.string(), nullable=False),  # "reward_model", "winrate", "head2head", "monitors"
            pa.field("suite_version", pa.string(), nullable=False),
            pa.field("metric", pa.string(), nullable=False),
            pa.field("value", pa.float64()),
            pa.field("n", pa.int64()),
            pa.field("details_json", pa.string()),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    ),
    # Pairwise annotations in AlpacaEval's layout (output_1 = baseline / system A).
    "annotations": pa.schema(
        [
            pa.field("instruction", pa.string(), nullable=False),
            pa.field("output_1", pa.string(), nullable=False),
            pa.field("output_2", pa.string(), nullable=False),
            pa.field("generator_1", pa.string()),
            pa.field("generator_2", pa.string()),
            pa.field("preference", pa.float64()),  # 1 = output_1, 2 = output_2, 1.5 = tie; null = unparsed
            pa.field("raw_judgments_json", pa.string()),
        ]
    ),
}


def schema(name: str) -> pa.Schema:
    try:
        return SCHEMAS[name]
    except KeyError as exc:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(sorted(SCHEMAS))}") from exc
