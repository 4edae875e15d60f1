"""Self-checking exercises for the course notebooks: "predict, then run".

A student writes a number (or a short string) into a cell and calls ``check``::

    from quantlab.course import check
    check("02.2", 6.02)        # -> "✓ right: ..." or "✗ not yet: <hint>"

Every expected answer is *computed* by quantlab when the exercise is checked (a function registered
with :func:`exercise`), never typed in: if the library or the model changes, the answers follow.
Exercises for notebooks 00-04 live in :mod:`quantlab.course.part1`, 05 onwards in
:mod:`quantlab.course.part2`; both register themselves on import. ``answer(key)`` reveals one (the
instructor guide lists them all, written by ``tools/make_answers.py``).

The registry follows gguf-py's habit: an exercise registers itself where it is defined, and a test
checks that every key a notebook calls exists and that its answer checks as right.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from collections.abc import Callable
from typing import Any

from ..errors import QuantlabError

__all__ = ["Exercise", "exercise", "check", "answer", "reveal", "exercises", "CourseError"]


class CourseError(QuantlabError, KeyError):
    """An exercise key that does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One exercise: ``solve()`` computes the expected answer; ``rel``/``abs`` are the tolerances a
    numeric answer may be off by (a student rounds); ``hint`` is shown on a wrong answer;
    ``explain`` after a right one (and in the instructor guide)."""

    key: str
    question: str
    solve: Callable[[], Any]
    hint: str
    explain: str = ""
    rel: float = 0.0
    abs: float = 0.0
    unit: str = ""

    def expected(self) -> Any:
        return self.solve()

    def is_right(self, given: Any) -> bool:
        want = self.expected()
        if isinstance(want, str):
            return isinstance(given, str) and given.strip().lower() == want.strip().lower()
        if isinstance(want, (set, frozenset, tuple, list)):
            try:
                return {str(g).strip().lower() for g in given} == {str(w).strip().lower() for w in want}
            except TypeError:
                return False
        if isinstance(given, bool) or (not isinstance(given, (int, float)) and not hasattr(given, "__float__")):
            return False
        try:
            g = float(given)
        except (TypeError, ValueError):
            return False
        if not math.isfinite(g):
            return False
        return math.isclose(g, float(want), rel_tol=self.rel, abs_tol=self.abs)


_REGISTRY: dict[str, Exercise] = {}
_PARTS = ("part1", "part2")


def exercise(
    key: str, question: str, *, hint: str, explain: str = "", rel: float = 0.0, abs: float = 0.0, unit: str = ""
) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    """Decorator: register the function (no arguments, returns the expected answer) as exercise ``key``
    ("NN.k": notebook NN, exercise k)."""

    def deco(fn: Callable[[], Any]) -> Callable[[], Any]:
        if key in _REGISTRY:
            raise ValueError(f"exercise {key!r} is registered twice")
        _REGISTRY[key] = Exercise(key, question, fn, hint, explain, rel, abs, unit)
        return fn

    return deco


def exercises() -> dict[str, Exercise]:
    """Every registered exercise, by key (imports the parts that define them)."""
    for part in _PARTS:
        try:
            importlib.import_module(f"{__name__}.{part}")
        except ModuleNotFoundError as e:  # a part not written yet
            if e.name != f"{__name__}.{part}":
                raise
    return dict(sorted(_REGISTRY.items()))


def _get(key: str) -> Exercise:
    ex = exercises().get(key)
    if ex is None:
        raise CourseError(f"no exercise {key!r}; the exercises are: {', '.join(exercises())}")
    return ex


def _fmt(v: Any, unit: str) -> str:
    if isinstance(v, float):
        v = f"{v:.4g}"
    return f"{v} {unit}".strip()


def check(key: str, given: Any, *, quiet: bool = False) -> bool:
    """Check a student's answer to exercise ``key``; print one line (✓ with the explanation, or ✗ with
    the hint) and return whether it is right. ``...`` (the placeholder in the notebook) is 'not tried'."""
    ex = _get(key)
    if given is Ellipsis or given is None:
        if not quiet:
            print(f"{key}: replace ... with your answer, then run the cell again.")
        return False
    ok = ex.is_right(given)
    if not quiet:
        if ok:
            print(f"✓ {key} right" + (f": {ex.explain}" if ex.explain else "."))
        else:
            print(f"✗ {key} not yet ({_fmt(given, '')}). Hint: {ex.hint}")
    return ok


def answer(key: str) -> Any:
    """The expected answer of exercise ``key``, computed now."""
    return _get(key).expected()


class _Reveal:
    """A closed HTML <details> box holding an exercise's answer: the notebook can run it (Run All) without
    showing the answer until the student clicks it. Plain text (a terminal) shows the answer directly."""

    def __init__(self, key: str):
        self.key, self.ex, self.value = key, _get(key), answer(key)

    def _repr_html_(self) -> str:
        import html

        expl = f"<br>{html.escape(self.ex.explain)}" if self.ex.explain else ""
        return (
            f"<details class='ql-answer'><summary>answer to {html.escape(self.key)} (click to show)</summary>"
            f"<b>{html.escape(_fmt(self.value, self.ex.unit))}</b>{expl}</details>"
        )

    def __repr__(self) -> str:
        return f"{self.key}: {_fmt(self.value, self.ex.unit)}"


def reveal(key: str) -> _Reveal:
    """The answer of exercise ``key`` behind a click (a closed <details> box in a notebook)."""
    return _Reveal(key)
