"""Every exercise's checker accepts the worked solution and refuses wrong answers and stubs."""

import sys
from pathlib import Path

import pytest

from ocrlib.exercises import EXERCISES, check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
import solutions  # noqa: E402


def solution(name: str):
    return getattr(solutions, "ex_" + name.replace(".", "_"))


@pytest.mark.parametrize("name", list(EXERCISES))
def test_the_worked_solution_is_right(name):
    verdict = check(name, solution(name))
    assert verdict and repr(verdict).endswith(": right"), repr(verdict)


@pytest.mark.parametrize("name", list(EXERCISES))
def test_a_stub_is_not_attempted_and_a_wrong_answer_is_refused(name):
    answer = solution(name)
    stub = None if not callable(answer) else (lambda *args: None)
    assert repr(check(name, stub)).endswith("not attempted yet")
    if callable(answer):
        def wrong(*args):
            out = answer(*args)
            return out * 1.5 + 1 if not isinstance(out, str) else out + "x"
        if name == "07.1":
            def wrong(out, pairs):  # noqa: F811
                return answer(out, pairs[:-1])
    else:
        wrong = (answer[0], answer[1] + 1) if isinstance(answer, tuple) else answer + 1
    verdict = check(name, wrong)
    assert not verdict and "not yet right" in repr(verdict), repr(verdict)


def test_an_answer_that_raises_is_reported_not_raised_and_unknown_names_are_refused():
    def broken(*args):
        raise ValueError("oops")

    verdict = check("03.1", broken)
    assert not verdict and "ValueError: oops" in repr(verdict)
    with pytest.raises(KeyError, match="03.1"):
        check("99.9", None)
