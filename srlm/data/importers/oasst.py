"""`--format oasst`: OpenAssistant conversation trees (oasst1 and oasst2 exports).

Two layouts are read:
  * the tree export (`*.trees.jsonl[.gz]`): one tree per line, `prompt` is the root message and every message
    nests its `replies`;
  * the flat message export (`*.messages.jsonl[.gz]`, or the Hugging Face Parquet files): one message per line or
    row with `message_id`, `parent_id` and `message_tree_id`; trees are rebuilt from the parent links.

What is kept, following the Self-Rewarding paper (Yuan et al., 2024, §3):
  * A message is dropped, with everything below it, when it is deleted, failed review (`review_result` false),
    is synthetic (unless include_synthetic), or has blank text. A conversation never runs through a dropped
    message. `review_result` null means the review was still open; such messages are kept.
  * Flat exports: a message whose parent is missing (orphaned) or whose parent links form a cycle reaches no
    root; it is dropped with everything below it.
Every dropped message is counted under its reason in `filtered` (`messages_<reason>`, the messages below a
dropped one as `messages_below_dropped`), and so are assistant replies that carry no rank
(`assistant_replies_unranked`: with nothing ranked, an export yields neither IFT nor evaluation groups), first
prompts whose kept replies include no rank 0 (`first_prompts_without_a_rank_0_reply`) and a ranked reply that is
the only one of its group and not an IFT target (`ranked_replies_without_a_ranked_sibling`).
  * Trees: every state is read except `aborted_low_grade` and `halted_by_moderator` (stopped on purpose), unless
    tree_states names the states to keep. Ranks exist only where humans finished ranking a sibling group, so
    trees still growing contribute only their completed groups.
  * IFT: for each root prompt in the chosen language, its assistant reply with human rank 0 (the first such reply
    if several tie at 0). Nothing is taken from a prompt whose rank-0 reply was dropped.
  * Evaluation groups: at any depth, the kept assistant replies to a prompter message (in the chosen language)
    that carry a rank, when there are at least two; the prompt is the conversation from the root down to that
    message, and ranks are renumbered 0..k-1 over the kept replies with ties preserved.
A tree or message repeated in one file (same message_id) is read once: the first copy counts.
Messages are marked `role` "prompter" / "assistant" in OASST; in the output they become "user" / "assistant".
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srlm.data.importers.options import ReadOptions
from srlm.data.importers.records import (
    EvalGroup,
    FieldError,
    Issue,
    RankedResponse,
    RowOutcome,
    SftExample,
    dense_ranks,
    optional_bool,
    optional_rank,
    optional_text,
    require_mapping,
    require_text,
    type_name,
    wrapped_records,
)
from srlm.data.importers.sources import iter_json_documents, iter_parquet_rows, source_name

NAME = "oasst"
SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")
OASST_ROLES = ("prompter", "assistant")
_CHAT_ROLE = {"prompter": "user", "assistant": "assistant"}


@dataclass
class Message:
    message_id: str
    parent_id: str | None
    role: str
    text: str
    lang: str | None
    rank: int | None
    deleted: bool
    review_result: bool | None
    synthetic: bool
    line: int | None = None
    replies: list[Message] = field(default_factory=list)


def parse_message(value: Any, prefix: str, line: int | None = None) -> Message:
    """One message's own fields (not its replies); `prefix` locates it in the row for error messages."""
    row = require_mapping(value, prefix.rstrip(".") or None)
    role = row.get("role")
    if role not in OASST_ROLES:
        raise FieldError(f"{prefix}role", f"expected one of prompter/assistant, got {role!r}")
    return Message(
        message_id=require_text(row, "message_id", prefix=prefix),
        parent_id=optional_text(row, "parent_id", prefix=prefix),
        role=role,
        text=require_text(row, "text", prefix=prefix, allow_blank=True),
        lang=optional_text(row, "lang", prefix=prefix),
        rank=optional_rank(row, "rank", prefix=prefix),
        deleted=bool(optional_bool(row, "deleted", prefix=prefix, default=False)),
        review_result=optional_bool(row, "review_result", prefix=prefix),
        synthetic=bool(optional_bool(row, "synthetic", prefix=prefix, default=False)),
        line=line,
    )


def _check_reply(parent: Message, child: Message, role_field: str) -> None:
    if child.role == parent.role:
        expected = "assistant" if parent.role == "prompter" else "prompter"
        raise FieldError(
            role_field, f"expected a {expected} reply to {parent.role} message {parent.message_id}, got {child.role!r}"
        )


def parse_tree(value: dict) -> Message:
    """A tree-export row's root message with all nested replies, validated."""
    root = parse_message(value.get("prompt"), "prompt.")
    if root.role != "prompter":
        raise FieldError("prompt.role", f"the root message must be the prompter's, got {root.role!r}")
    pending = [(root, value["prompt"], "prompt")]
    while pending:
        message, raw, where = pending.pop()
        replies = raw.get("replies")
        if replies is None:
            continue
        if not isinstance(replies, list):
            raise FieldError(f"{where}.replies", f"expected a list, got {type_name(replies)}")
        for i, raw_reply in enumerate(replies):
            reply_where = f"{where}.replies[{i}]"
            reply = parse_message(raw_reply, f"{reply_where}.")
            _check_reply(message, reply, f"{reply_where}.role")
            message.replies.append(reply)
            pending.append((reply, raw_reply, reply_where))
    return root


def exclusion_reason(message: Message, options: ReadOptions) -> str | None:
    if message.deleted:
        return "deleted"
    if message.review_result is False:
        return "review_failed"
    if message.synthetic and not options.include_synthetic:
        return "synthetic"
    if not message.text.strip():
        return "blank_text"
    return None


def _count_dropped(message: Message, reason: str, filtered: Counter) -> None:
    """Count a dropped message under its reason and everything below it (which goes with it)."""
    filtered[f"messages_{reason}"] += 1
    below, pending = 0, list(message.replies)
    while pending:
        reply = pending.pop()
        below += 1
        pending.extend(reply.replies)
    if below:
        filtered["messages_below_dropped"] += below


def harvest(
    root: Message, source: str, options: ReadOptions, filtered: Counter
) -> tuple[list[SftExample], list[EvalGroup]]:
    """The IFT examples and evaluation groups one tree yields (see the module docstring for the rules)."""
    examples: list[SftExample] = []
    groups: list[EvalGroup] = []
    reason = exclusion_reason(root, options)
    if reason:
        _count_dropped(root, reason, filtered)
        return examples, groups
    pending: list[tuple[Message, tuple[tuple[str, str], ...]]] = [(root, ())]
    while pending:
        message, before = pending.pop()
        conversation = before + ((_CHAT_ROLE[message.role], message.text),)
        kept = []
        for reply in message.replies:
            reason = exclusion_reason(reply, options)
            if reason:
                _count_dropped(reply, reason, filtered)
            else:
                kept.append(reply)
        ranked = [reply for reply in kept if reply.role == "assistant" and reply.rank is not None]
        unranked = sum(reply.role == "assistant" and reply.rank is None for reply in kept)
        if unranked:
            filtered["assistant_replies_unranked"] += unranked
        if message.role == "prompter" and ranked:
            if not options.keeps_lang(message.lang):
                filtered["ranked_prompts_other_language"] += 1
            else:
                best = None
                if message is root:
                    best = next((reply for reply in ranked if reply.rank == 0), None)
                    if best is not None:
                        examples.append(SftExample("ift", conversation, best.text, source))
                    else:
                        filtered["first_prompts_without_a_rank_0_reply"] += 1
                if len(ranked) == 1 and best is None:
                    filtered["ranked_replies_without_a_ranked_sibling"] += 1
                if len(ranked) >= 2:
                    ranks = dense_ranks([reply.rank for reply in ranked])
                    responses = tuple(
                        RankedResponse(reply.message_id, reply.text, rank)
                        for reply, rank in zip(ranked, ranks, strict=True)
                    )
                    groups.append(EvalGroup(message.message_id, conversation, responses, message.lang, source))
        # Reversed so that the stack visits replies in export order (stable output order).
        pending.extend((reply, conversation) for reply in reversed(kept))
    return examples, groups


def _tree_outcome(
    row_file: str, line: int | None, value: dict, source: str, options: ReadOptions, seen_roots: set[str]
) -> RowOutcome:
    outcome = RowOutcome(row_file, line)
    try:
        state = optional_text(value, "tree_state")
        root = parse_tree(value)
    except FieldError as exc:
        outcome.issue = Issue(row_file, line, exc.field, exc.reason)
        return outcome
    if root.message_id in seen_roots:
        # Exports repeat some trees (the shared oasst2 sample holds 31 twice): the first copy is kept.
        outcome.filtered["trees_duplicate"] += 1
        return outcome
    seen_roots.add(root.message_id)
    if not options.keeps_tree_state(state):
        outcome.filtered[f"trees_{state}"] += 1
        return outcome
    outcome.examples, outcome.groups = harvest(root, source, options, outcome.filtered)
    return outcome


@dataclass
class _FlatTrees:
    """Messages from a flat export, gathered until every line is read and the trees can be rebuilt."""

    messages: dict[str, Message] = field(default_factory=dict)
    tree_state: dict[str, str | None] = field(default_factory=dict)  # by message_id
    order: list[str] = field(default_factory=list)
    duplicates: int = 0  # repeated message_ids: the first occurrence is kept

    def add(self, row_file: str, line: int | None, value: dict) -> Issue | None:
        try:
            message = parse_message(value, "", line)
            require_text(value, "message_tree_id")
            state = optional_text(value, "tree_state")
        except FieldError as exc:
            return Issue(row_file, line, exc.field, exc.reason)
        if message.message_id in self.messages:
            self.duplicates += 1
            return None
        self.messages[message.message_id] = message
        self.tree_state[message.message_id] = state
        self.order.append(message.message_id)
        return None

    def _unrooted(self, roots: list[Message], children: dict[str, list[Message]]) -> Counter:
        """Why each message that no root reaches is lost: its chain of parents ends at a missing message
        (`messages_orphaned`) or runs in a circle (`messages_in_cycle`)."""
        reached: set[str] = set()
        pending = [root.message_id for root in roots]
        while pending:
            message_id = pending.pop()
            reached.add(message_id)
            pending.extend(child.message_id for child in children.get(message_id, ()))
        lost: Counter = Counter()
        for message_id in self.order:
            if message_id in reached:
                continue
            seen: set[str] = set()
            current: str | None = message_id
            while current in self.messages and current not in seen:
                seen.add(current)
                current = self.messages[current].parent_id
            lost["messages_orphaned" if current not in self.messages else "messages_in_cycle"] += 1
        return lost

    def outcomes(self, row_file: str, source: str, options: ReadOptions) -> Iterator[RowOutcome]:
        children: dict[str, list[Message]] = defaultdict(list)
        roots: list[Message] = []
        dropped = Counter({"messages_duplicate": self.duplicates} if self.duplicates else {})
        for message_id in self.order:
            message = self.messages[message_id]
            if message.parent_id is None:
                roots.append(message)
            else:
                children[message.parent_id].append(message)
        dropped.update(self._unrooted(roots, children))
        if dropped:
            yield RowOutcome(row_file, None, filtered=dropped)
        for message_id, replies in children.items():
            if message_id not in self.messages:
                continue
            parent = self.messages[message_id]
            for reply in replies:
                try:
                    _check_reply(parent, reply, "role")
                except FieldError as exc:
                    # Detach it: a wrongly linked message must not end up inside a conversation.
                    yield RowOutcome(row_file, reply.line, issue=Issue(row_file, reply.line, exc.field, exc.reason))
                    continue
                parent.replies.append(reply)
        for root in roots:
            outcome = RowOutcome(row_file, root.line)
            if root.role != "prompter":
                outcome.issue = Issue(row_file, root.line, "role", "a message without parent_id must be the prompter's")
            elif not options.keeps_tree_state(self.tree_state[root.message_id]):
                outcome.filtered[f"trees_{self.tree_state[root.message_id]}"] += 1
            else:
                outcome.examples, outcome.groups = harvest(root, source, options, outcome.filtered)
            yield outcome


def read(path: Path, options: ReadOptions) -> Iterator[RowOutcome]:
    source = source_name(NAME, path)
    rows = iter_parquet_rows(path) if path.name.endswith(".parquet") else iter_json_documents(path)
    flat = _FlatTrees()
    seen_roots: set[str] = set()
    for row in rows:
        if row.issue is not None:
            yield RowOutcome(row.file, row.line, issue=row.issue)
        elif isinstance(row.value, dict) and "prompt" in row.value:
            yield _tree_outcome(row.file, row.line, row.value, source, options, seen_roots)
        elif isinstance(row.value, dict) and "message_id" in row.value:
            issue = flat.add(row.file, row.line, row.value)
            if issue is not None:
                yield RowOutcome(row.file, row.line, issue=issue)
        else:
            reason = "expected a message tree (with 'prompt') or a message (with 'message_id')"
            if not isinstance(row.value, dict):
                reason = f"expected an object, got {type_name(row.value)}"
            elif wrapper := wrapped_records(row.value):
                reason = wrapper.reason
            yield RowOutcome(row.file, row.line, issue=Issue(row.file, row.line, None, reason))
    if flat.messages:
        yield from flat.outcomes(str(path), source, options)
