"""The bench results log: torn lines, lone surrogates, the writer lock, fingerprint checks."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from threadloom.errors import ConfigError
from threadloom.evaluation.fingerprint import RunFingerprint, make_fingerprint
from threadloom.evaluation.records import BenchRecord, ResultLog, separate_set_path
from threadloom.types import SamplingParams


def fingerprint(model: str = "sha256:aaaa", temperature: float = 0.7) -> RunFingerprint:
    return make_fingerprint(
        worker=("fake", model),
        params=SamplingParams(temperature=temperature),
        verifier="auto",
        dataset={"seed": 0, "difficulty": None},
    )


def record(problem: str, **fields: object) -> BenchRecord:
    return BenchRecord(
        dataset="toy",
        problem_id=problem,
        strategy="single",
        seed=1,
        **fields,  # type: ignore[arg-type]
    )


def test_line_torn_inside_a_multibyte_character_is_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    log.append(record("p1", answer="2", correct=True))
    log.append(record("p2", answer="π ≈ 3.14159…"))
    data = log.path.read_bytes()
    cut = data.index("π".encode()) + 1  # between the two bytes of π
    log.path.write_bytes(data[:cut])
    with caplog.at_level(logging.WARNING):
        kept = log.read()
    assert [r.problem_id for r in kept] == ["p1"]
    assert log.done_keys() == {("toy", "p1", "single", 1)}
    assert any(":2 is not a complete record" in m for m in caplog.messages)
    # the next record lands on a fresh line and reads back whole
    log.append(record("p2", answer="π ≈ 3.14159…"))
    assert [r.answer for r in log.read()] == ["2", "π ≈ 3.14159…"]


def test_lone_surrogates_are_stored_as_replacement_characters(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    log.append(
        record(
            "p\udcff",
            answer="\udcff bad \ud800",
            reference="ok",
            error="ValueError: \udc80",
            extra={"k\udcff": ["\ud800"]},
        )
    )
    raw = log.path.read_bytes()
    raw.decode("utf-8")  # strict: what is on disk is valid UTF-8
    back = log.read()[0]
    assert back.answer == "\ufffd bad \ufffd"
    assert back.problem_id == "p\ufffd"
    assert back.extra == {"k\ufffd": ["\ufffd"]}


def test_assignment_is_scrubbed_too() -> None:
    r = record("p1")
    r.answer = "x\udcffy"
    assert r.answer == "x\ufffdy"


def test_first_record_fsyncs_the_new_directory_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[bool] = []
    real_fsync = os.fsync

    def counting_fsync(fd: int) -> None:
        synced.append(os.path.isdir(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", counting_fsync)
    log = ResultLog(tmp_path / "new" / "r.jsonl")
    log.append(record("p1"))
    log.append(record("p2"))
    # two record fsyncs, and one of the directory when the file was created
    assert synced.count(False) == 2 and synced.count(True) == 1


def test_a_second_writer_in_this_process_is_refused(tmp_path: Path) -> None:
    first = ResultLog(tmp_path / "r.jsonl")
    second = ResultLog(tmp_path / "r.jsonl")
    with first.lock():
        with first.lock():  # re-entrant for its holder
            pass
        with pytest.raises(ConfigError, match="another bench") as caught, second.lock():
            pass
        assert str(os.getpid()) in str(caught.value)
    with second.lock():  # free again once released
        pass


def test_a_second_writer_in_another_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from threadloom.evaluation.records import ResultLog
                with ResultLog(Path({str(path)!r})).lock():
                    print("locked", flush=True)
                    sys.stdin.readline()
                """
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        refused = ResultLog(path)
        with pytest.raises(ConfigError, match=f"process {holder.pid} holds"), refused.lock():
            pass
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        holder.wait(timeout=60)
    with ResultLog(path).lock():  # the holder exited: the lock is free
        pass


def test_fingerprint_check_says_what_differs(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    old = fingerprint(model="sha256:aaaa", temperature=0.7)
    log.append(record("p1", fingerprint=old))
    log.check_fingerprint(old)  # same configuration: fine
    new = fingerprint(model="sha256:bbbb", temperature=0.2)
    with pytest.raises(ConfigError) as caught:
        log.check_fingerprint(new)
    message = str(caught.value)
    assert 'model: "sha256:aaaa" → "sha256:bbbb"' in message
    assert "sampling.temperature: 0.7 → 0.2" in message
    assert "max_tokens" not in message  # only what differs
    assert "--new-set" in message


def test_records_without_fingerprint_are_not_trusted(tmp_path: Path) -> None:
    log = ResultLog(tmp_path / "r.jsonl")
    log.append(record("p1"))
    with pytest.raises(ConfigError, match="without a fingerprint"):
        log.check_fingerprint(fingerprint())


def test_separate_set_is_named_by_the_fingerprint(tmp_path: Path) -> None:
    fp = fingerprint()
    path = separate_set_path(tmp_path / "bench-toy.jsonl", fp)
    assert path.parent == tmp_path and path.name == f"bench-toy.{fp.digest()[:8]}.jsonl"
    assert fingerprint(temperature=0.2).digest() != fp.digest()


def test_a_directory_is_not_a_results_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        ResultLog(tmp_path)
    assert list(tmp_path.iterdir()) == []


# Arbitrary characters: every category, lone surrogates (which st.text never draws, so they are
# drawn as code points), line breaks JSON must escape, control characters and JSON syntax.
any_char = st.one_of(
    st.characters(exclude_categories=()),
    st.integers(0xD800, 0xDFFF).map(chr),
    st.sampled_from('\n\r\x00\x1b\x85\u2028"\\{}[]/'),
)
any_text = st.lists(any_char, max_size=200).map("".join)
huge_text = st.lists(any_char, min_size=5_000, max_size=20_000).map("".join)


@seed(20261201)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    answer=st.one_of(st.none(), any_text, huge_text),
    problem_id=any_text,
    error=st.one_of(st.none(), any_text),
    extra=st.dictionaries(
        any_text, st.one_of(any_text, st.integers(), st.lists(any_text)), max_size=3
    ),
    cut=st.integers(min_value=0, max_value=10**6),
)
def test_any_text_survives_the_writer_and_reader(
    tmp_path: Path,
    answer: str | None,
    problem_id: str,
    error: str | None,
    extra: dict[str, object],
    cut: int,
) -> None:
    path = tmp_path / "fuzz.jsonl"
    path.unlink(missing_ok=True)
    log = ResultLog(path)
    written = record(problem_id, answer=answer, error=error, extra=extra)
    log.append(written)
    log.append(record("after", answer=answer))
    back = log.read()
    assert [r.model_dump() for r in back] == [
        written.model_dump(),
        record("after", answer=answer).model_dump(),
    ]
    # tear the file at an arbitrary byte: reading never raises, and keeps whole lines only
    data = path.read_bytes()
    path.write_bytes(data[: cut % (len(data) + 1)])
    kept = log.read()
    assert [r.model_dump() for r in kept] == [r.model_dump() for r in back][: len(kept)]


def test_a_record_from_before_a_sampling_field_existed_still_matches() -> None:
    from threadloom.evaluation.fingerprint import RunFingerprint, make_fingerprint

    current = make_fingerprint(worker=("fake", "m"), params=None, verifier=None,
                               dataset={"seed": 1})
    stored = current.model_dump(mode="json")
    del stored["sampling"]["min_p"]  # as written by a release without min_p
    assert RunFingerprint.model_validate(stored).differences(current) == []
    assert RunFingerprint.model_validate(stored).digest() == current.digest()
