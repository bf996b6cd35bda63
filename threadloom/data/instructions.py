"""Seeded instruction-following tasks whose answers are checked by simple rules.

Each problem's metadata["rules"] lists the rules as plain dicts, one `kind` each:

=================  =========================  ==========================================
kind               fields                     the answer must
=================  =========================  ==========================================
bullet_count       count (int)                have exactly `count` bullet lines
contains_word      word (str)                 use the word
excludes_word      word (str)                 not use the word
json_keys          keys (list of str)         be a JSON object with these keys
max_words          count (int)                have at most `count` words
min_words          count (int)                have at least `count` words
lowercase                                     have no capital letters
uppercase                                     have no lowercase letters
starts_with        text (str)                 start with the text
ends_with          text (str)                 end with the text
no_commas                                     contain no commas
sentence_count     count (int)                have exactly `count` sentences
=================  =========================  ==========================================

The prompt states every rule in words. Rules are only combined when one answer can satisfy
them all (no lowercase with a capitalised opening, no commas-ban on JSON, and so on).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from threadloom.data.jsonl import check_limit
from threadloom.data.options import parse_options
from threadloom.types import Problem

Rule = dict[str, Any]

RULE_FIELDS: dict[str, tuple[str, ...]] = {
    "bullet_count": ("count",),
    "contains_word": ("word",),
    "excludes_word": ("word",),
    "json_keys": ("keys",),
    "max_words": ("count",),
    "min_words": ("count",),
    "lowercase": (),
    "uppercase": (),
    "starts_with": ("text",),
    "ends_with": ("text",),
    "no_commas": (),
    "sentence_count": ("count",),
}
"""Every rule kind and the fields it carries besides `kind`."""

TOPICS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the ocean", ("waves", "salt", "tide")),
    ("a cat", ("whiskers", "paws", "purr")),
    ("a rainy day", ("umbrella", "puddles", "clouds")),
    ("a busy city", ("traffic", "streets", "lights")),
    ("a garden", ("flowers", "soil", "bees")),
    ("a friendly robot", ("metal", "battery", "helpful")),
    ("the night sky", ("stars", "moon", "dark")),
    ("a cup of coffee", ("warm", "bitter", "morning")),
    ("a mountain hike", ("trail", "summit", "boots")),
    ("a birthday party", ("cake", "candles", "gifts")),
    ("a school library", ("shelves", "quiet", "pages")),
    ("a farm", ("cows", "barn", "tractor")),
    ("a train journey", ("tracks", "window", "station")),
    ("winter", ("snow", "cold", "scarf")),
)
"""(topic, words that fit it): a required word always comes from the topic's own list."""

JSON_SUBJECTS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("a fictional person", ("name", "age", "job"), ("teacher", "baker", "pilot")),
    ("a made-up book", ("title", "author", "year"), ("dragon", "moon", "garden")),
    ("an imaginary pet", ("name", "species", "age"), ("dog", "rabbit", "parrot")),
    ("a simple recipe", ("dish", "ingredients", "minutes"), ("tomato", "rice", "cheese")),
    ("a favorite movie", ("title", "genre", "year"), ("comedy", "space", "robot")),
)
"""(what to describe, its keys, words that fit a value)."""

FILLER_WORDS = ("very", "really", "nice", "good", "thing", "beautiful", "amazing", "just")
"""Words to ban: common enough to matter, never needed by a topic."""

OPENINGS = ("Yes", "Sure", "Of course", "Here it is", "Today")
CLOSINGS = ("Done.", "The end.", "That is all.", "Thank you.")
PROSE_TASKS = (
    "Describe {topic}.",
    "Write a short paragraph about {topic}.",
    "Tell a short story about {topic}.",
    "Explain what people enjoy about {topic}.",
)
MAX_WORDS = (15, 20, 25, 30, 40, 50, 60)
MIN_WORDS = (10, 20, 30)
NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}

_CONFLICTS = {
    frozenset(pair)
    for pair in (
        ("lowercase", "uppercase"),
        ("lowercase", "starts_with"),
        ("lowercase", "ends_with"),
        ("uppercase", "starts_with"),
        ("uppercase", "ends_with"),
        # a case-sensitive check could not find a lowercase word in an all-caps answer
        ("uppercase", "contains_word"),
    )
}


class InstructionOptions(BaseModel):
    """Options of the `instructions` dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    difficulty: int = Field(1, ge=1, le=3)
    """How many rules each task has (1 to 3)."""
    size: int = Field(200, ge=1)
    """How many tasks to generate."""


@dataclass
class _Task:
    """A task being assembled: the rules so far and the sentences that state them."""

    rng: random.Random
    words: tuple[str, ...]
    """Words that fit the subject, for a contains_word rule."""
    min_total_words: int
    """The fewest words the task's form needs (a cap on length must leave room for it)."""
    rules: list[Rule] = field(default_factory=list)
    sentences: list[str] = field(default_factory=list)

    def add(self, rule: Rule, sentence: str) -> None:
        self.rules.append(rule)
        self.sentences.append(sentence)

    def count_of(self, kind: str) -> int | None:
        for rule in self.rules:
            if rule["kind"] == kind:
                return int(rule["count"])
        return None


@dataclass(frozen=True)
class _Form:
    """The shape of the answer asked for, with the extra rules that fit it."""

    start: Callable[[random.Random], _Task]
    extras: tuple[str, ...]


def _prose(rng: random.Random) -> _Task:
    topic, words = rng.choice(TOPICS)
    task = _Task(rng, words, min_total_words=10)
    task.sentences.append(rng.choice(PROSE_TASKS).format(topic=topic))
    return task


def _bullets(rng: random.Random) -> _Task:
    topic, words = rng.choice(TOPICS)
    n = rng.randint(2, 5)
    task = _Task(rng, words, min_total_words=6 * n)
    task.add(
        {"kind": "bullet_count", "count": n},
        f"Write exactly {NUMBER_WORDS[n]} bullet points about {topic}. "
        "Start each bullet point on a new line with '- '.",
    )
    return task


def _sentences(rng: random.Random) -> _Task:
    topic, words = rng.choice(TOPICS)
    n = rng.randint(2, 4)
    task = _Task(rng, words, min_total_words=8 * n)
    task.add(
        {"kind": "sentence_count", "count": n},
        f"Write exactly {NUMBER_WORDS[n]} sentences about {topic}.",
    )
    return task


def _json(rng: random.Random) -> _Task:
    subject, all_keys, words = rng.choice(JSON_SUBJECTS)
    keys = list(all_keys[: rng.randint(2, len(all_keys))])
    quoted = [f'"{k}"' for k in keys]
    listed = " and ".join([", ".join(quoted[:-1]), quoted[-1]])
    task = _Task(rng, words, min_total_words=0)
    task.add(
        {"kind": "json_keys", "keys": keys},
        f"Answer in JSON with the keys {listed} for {subject}. "
        "Reply with only the JSON object and no other keys.",
    )
    return task


FORMS = (
    _Form(
        _prose,
        (
            "contains_word",
            "excludes_word",
            "max_words",
            "min_words",
            "lowercase",
            "uppercase",
            "starts_with",
            "ends_with",
            "no_commas",
        ),
    ),
    _Form(
        _bullets,
        (
            "contains_word",
            "excludes_word",
            "max_words",
            "min_words",
            "lowercase",
            "uppercase",
            "no_commas",
        ),
    ),
    _Form(
        _sentences,
        (
            "contains_word",
            "excludes_word",
            "max_words",
            "min_words",
            "lowercase",
            "uppercase",
            "starts_with",
            "no_commas",
        ),
    ),
    # JSON needs commas between keys and its own first and last characters
    _Form(_json, ("contains_word", "excludes_word", "lowercase")),
)


def _add_extra(task: _Task, kind: str) -> bool:
    """Add one rule of `kind` that fits the task so far; False if none fits."""
    rng = task.rng
    if kind == "contains_word":
        word = rng.choice(task.words)
        task.add({"kind": kind, "word": word}, f"Include the word '{word}'.")
    elif kind == "excludes_word":
        word = rng.choice(FILLER_WORDS)
        task.add({"kind": kind, "word": word}, f"Do not use the word '{word}'.")
    elif kind == "max_words":
        least = max(task.min_total_words, (task.count_of("min_words") or 0) + 10)
        caps = [n for n in MAX_WORDS if n >= least]
        if not caps:
            return False
        n = rng.choice(caps)
        task.add({"kind": kind, "count": n}, f"Use no more than {n} words in total.")
    elif kind == "min_words":
        cap = task.count_of("max_words")
        floors = [n for n in MIN_WORDS if cap is None or n <= cap - 10]
        if not floors:
            return False
        n = rng.choice(floors)
        task.add({"kind": kind, "count": n}, f"Use at least {n} words.")
    elif kind == "lowercase":
        task.add({"kind": kind}, "Write everything in lowercase letters only.")
    elif kind == "uppercase":
        task.add({"kind": kind}, "Write everything in capital letters only.")
    elif kind == "starts_with":
        text = rng.choice(OPENINGS)
        task.add({"kind": kind, "text": text}, f"Start your answer with the exact text '{text}'.")
    elif kind == "ends_with":
        text = rng.choice(CLOSINGS)
        task.add({"kind": kind, "text": text}, f"End your answer with the exact text '{text}'.")
    elif kind == "no_commas":
        task.add({"kind": kind}, "Do not use any commas.")
    else:
        raise ValueError(f"no generator for rule kind {kind!r}")
    return True


def _fits(task: _Task, kind: str) -> bool:
    return all(frozenset((kind, rule["kind"])) not in _CONFLICTS for rule in task.rules)


def _problem(seed: int, difficulty: int, index: int) -> Problem:
    rng = random.Random(f"instructions/{seed}/{difficulty}/{index}")
    form = rng.choice(FORMS)
    task = form.start(rng)
    extras = list(form.extras)
    rng.shuffle(extras)
    for kind in extras:
        if len(task.rules) >= difficulty:
            break
        if _fits(task, kind):
            _add_extra(task, kind)
    return Problem(
        prompt=" ".join(task.sentences),
        reference=None,
        answer_format="text",
        id=f"instr-{seed}-{index}",
        metadata={
            "verifier": "rules",
            "dataset": "instructions",
            "rules": task.rules,
            "difficulty": difficulty,
        },
    )


def generate_instructions(
    *, seed: int = 0, limit: int | None = None, **options: Any
) -> list[Problem]:
    """Generate instruction-following tasks graded by the rules in metadata["rules"].

    Args:
        seed: Picks the tasks; the same seed gives the same tasks.
        limit: Keep only the first N tasks.
        **options: `difficulty` (rules per task, 1-3, default 1) and `size` (default 200);
            see `InstructionOptions`.

    Returns:
        Tasks with no reference answer; each states its rules in its prompt.

    Raises:
        ConfigError: An option is unknown or out of range.
    """
    check_limit(limit)
    opts = parse_options(InstructionOptions, "instructions", options)
    count = opts.size if limit is None else min(opts.size, limit)
    return [_problem(seed, opts.difficulty, i) for i in range(count)]
