"""Prometheus metrics of one server, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from threadloom.types import Usage

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class ServerMetrics:
    """Runs, queue, generations, tokens, verifier calls and latency, labelled by strategy
    family (a strategy kind, 'plain' or 'graph:<name>': a bounded set)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.in_flight = Gauge("threadloom_runs_in_flight", "Runs executing now.", registry=r)
        self.queued = Gauge(
            "threadloom_runs_queued", "Requests waiting for a run slot.", registry=r
        )
        self.runs = Counter(
            "threadloom_runs", "Runs by strategy and outcome (ok, error, cancelled, rejected).",
            ["strategy", "outcome"], registry=r,
        )
        self.generations = Counter(
            "threadloom_generations", "Generations of finished runs.", ["strategy"], registry=r
        )
        self.aborted = Counter(
            "threadloom_aborted_generations", "Generations aborted before they finished.",
            ["strategy"], registry=r,
        )
        self.prompt_tokens = Counter(
            "threadloom_prompt_tokens", "Prompt tokens of all generations.", ["strategy"],
            registry=r,
        )
        self.completion_tokens = Counter(
            "threadloom_completion_tokens", "Completion tokens of all generations.",
            ["strategy"], registry=r,
        )
        self.verifier_calls = Counter(
            "threadloom_verifier_calls", "Verifier calls (judge passes included).",
            ["strategy"], registry=r,
        )
        self.latency = Histogram(
            "threadloom_run_seconds", "Run latency from admission to the answer.",
            ["strategy"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.queue_wait = Histogram(
            "threadloom_queue_seconds", "Time a request waited for a run slot.",
            buckets=LATENCY_BUCKETS, registry=r,
        )

    def record_usage(self, family: str, usage: Usage, seconds: float) -> None:
        self.runs.labels(family, "ok").inc()
        self.generations.labels(family).inc(usage.generations)
        self.aborted.labels(family).inc(usage.aborted_generations)
        self.prompt_tokens.labels(family).inc(usage.prompt_tokens)
        self.completion_tokens.labels(family).inc(usage.completion_tokens)
        self.verifier_calls.labels(family).inc(usage.verifier_calls)
        self.latency.labels(family).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format."""
        return generate_latest(self.registry)
