from threadloom.types import Candidate, Score
from threadloom.verifiers.voting import answer_key, rank_by_score, vote


def cand(answer: str | None, logprob: float = -1.0, score: float | None = None) -> Candidate:
    c = Candidate(text=str(answer), answer=answer, mean_logprob=logprob)
    if score is not None:
        c.scores["v"] = Score(value=score)
    return c


def test_answer_keys_compare_numbers_by_value() -> None:
    assert answer_key("42") == answer_key("42.0") == answer_key("$42") == answer_key("42.")
    assert answer_key("Paris") == answer_key(" paris ")
    assert answer_key("1/2") == answer_key("0.5")
    assert answer_key(None) is None
    assert answer_key("  ") is None


def test_majority_wins_and_sets_votes() -> None:
    cands = [cand("1"), cand("2"), cand("2.0"), cand(None)]
    groups = vote(cands, "number")
    assert groups[0].key == answer_key("2")
    assert len(groups[0].members) == 2
    assert cands[1].votes == 2 and cands[0].votes == 1


def test_ties_use_tie_break_then_first_seen() -> None:
    cands = [cand("1", -2.0), cand("2", -0.5)]
    groups = vote(cands, tie_break=lambda g: max(m.mean_logprob or 0 for m in g.members))
    assert groups[0].members[0].answer == "2"
    assert vote(cands)[0].members[0].answer == "1"


def test_weighted_vote() -> None:
    cands = [cand("a", score=0.9), cand("b", score=0.2), cand("b", score=0.2)]
    groups = vote(cands, weight=lambda c: c.score_value("v") or 0.0)
    assert groups[0].key == "a"


def test_rank_by_score_then_logprob() -> None:
    cands = [cand("x", -0.1, 0.0), cand("y", -3.0, 1.0), cand("z", -0.2, 1.0)]
    assert [c.answer for c in rank_by_score(cands, "v")] == ["z", "y", "x"]
    assert next(c.answer for c in rank_by_score(cands, None)) == "z"


def test_huge_and_exponent_answers_vote_without_raising() -> None:
    # '1e5000' used to reach str() of a 5001-digit int: ValueError past Python's digit limit
    groups = vote([cand("1e5000"), cand("1e5000"), cand("42")])
    assert [len(g.members) for g in groups] == [2, 1]
    assert groups[0].members[0].answer == "1e5000"
    # a 400-digit answer votes by value, under a key that needs no decimal conversion
    digits = "7" * 400
    assert answer_key(digits) == answer_key(digits + ".0")
    assert len(answer_key(digits) or "") < 400
    assert answer_key("1e999999999") == "1e999999999"  # past the bound: compared as text


def test_small_number_keys_stay_readable() -> None:
    assert answer_key("42") == "#42"
    assert answer_key("0.75") == "#3/4"
