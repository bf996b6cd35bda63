"""Verifier kinds by name, resolved lazily: 'numeric', 'math', 'regex:PATTERN', 'contains:a,b',
'code' (or 'code:guards' for the weaker sandbox), and the kinds of installed plugins."""

from __future__ import annotations

from typing import Any

from threadloom.errors import ConfigError
from threadloom.registry import Registry
from threadloom.verifiers.base import Verifier, make_total

VERIFIERS: dict[str, str] = {
    "numeric": "threadloom.verifiers.numeric:NumericVerifier",
    "math": "threadloom.verifiers.math:MathVerifier",
    "regex": "threadloom.verifiers.patterns:RegexVerifier",
    "contains": "threadloom.verifiers.patterns:ContainsVerifier",
    "code": "threadloom.verifiers.code:CodeVerifier",
    "game24": "threadloom.verifiers.game24:Game24Verifier",
    "rules": "threadloom.verifiers.rules:RulesVerifier",
    "self-judge": "threadloom.verifiers.prm:SelfJudgePRM",
    "json-schema": "threadloom.verifiers.json_schema:JsonSchemaVerifier",
    "llm-judge": "threadloom.verifiers.llm_judge:LLMJudge",
}
"""name -> 'module:Class' of the built-in verifiers. A new one registers here; nothing else
changes. Other packages add kinds through the 'threadloom.verifiers' entry-point group: a class
built from its options, or with a `from_spec(argument, **options)` classmethod for
'name:argument' (see `Registry.build`)."""

verifier_kinds: Registry[Any] = Registry(
    "verifier",
    "verifiers",
    "threadloom.verifiers",
    VERIFIERS,
    example="regex and contains take an argument, e.g. regex:^\\d+$ or contains:Paris",
)
"""Every verifier kind: the built-in ones and those of installed plugins."""

_NEEDS_ARGUMENT = {"regex": "regex:^\\d+$", "contains": "contains:Paris,France"}


def make_verifier(spec: str | Verifier, **options: Any) -> Verifier:
    """Build a verifier from 'name' or 'name:argument', or pass an instance through.

    Either way its `score` is made total (see `make_total`): an untyped exception raised on a
    hostile answer becomes a failed Score instead of ending the run.
    """
    if not isinstance(spec, str):
        if not isinstance(spec, Verifier):
            raise ConfigError(
                f"a verifier must be a name such as 'numeric' or an object with a name and an "
                f"async score(problem, candidate); got {type(spec).__name__}"
            )
        return make_total(spec)
    return make_total(_build(spec, **options))


def _build(spec: str, **options: Any) -> Verifier:
    kind, _, argument = spec.partition(":")
    name = verifier_kinds.canonical(kind)
    if name not in VERIFIERS:  # a plugin, or unknown (build says which kinds exist)
        verifier = verifier_kinds.build(kind, argument, **options)
        if not isinstance(verifier, Verifier):
            raise ConfigError(
                f"the verifier plugin {name!r} made a {type(verifier).__name__}, which has no "
                "`name` and async `score(problem, candidate)`; its package must return a verifier"
            )
        return verifier
    cls = verifier_kinds.load(name)
    if name in _NEEDS_ARGUMENT:
        if not argument:
            raise ConfigError(
                f"the {name} verifier needs an argument, e.g. {_NEEDS_ARGUMENT[name]}"
            )
        if name == "regex":
            return cls(argument, **options)
        return cls([k for k in argument.split(",")], **options)
    if name == "llm-judge" and argument:
        # 'llm-judge:openai:http://host/v1#model=judge': judge with that worker
        return cls(worker=argument, **options)
    if name == "json-schema" and argument:
        # 'json-schema:schema.json' or the schema inline: 'json-schema:{"type": "object"}'
        return cls(argument, **options)
    if name == "code" and argument:
        # 'code:guards' opts in to the weaker Python-guard sandbox; 'code:bwrap' is the default
        return cls(isolation=argument.strip().lower(), **options)
    if argument:
        raise ConfigError(f"the {name} verifier takes no argument (got {argument!r})")
    return cls(**options)
