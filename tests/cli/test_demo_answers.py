"""``kimiflow demo`` answers its own questions with its built-in script, each whole within its token budget."""

from __future__ import annotations

from kimiflow.cli.demo import DEMO_ANSWERS, JOKE, QUESTIONS
from kimiflow.core.tokens import estimate_text_tokens


def test_every_demo_question_has_a_scripted_answer_that_fits_the_default_budget() -> None:
    matches = [line["match"] for line in DEMO_ANSWERS]
    assert set(QUESTIONS) <= set(matches) and JOKE in matches and "你好" in matches
    for line in DEMO_ANSWERS:
        budget = 60 if line["match"] == JOKE else 30  # the stream step's and --max-tokens's defaults
        assert estimate_text_tokens(line["reply"]) <= budget, line


def test_demo_prints_the_scripted_answers(run) -> None:
    result = run("demo", "--latency", "fast", "--no-batch")
    assert result.exit_code == 0, result.output
    out = result.stdout
    replies = {line["match"]: line["reply"] for line in DEMO_ANSWERS}
    assert f"Kimi: {replies['你好']}" in out
    assert f"Kimi: {replies[JOKE]}" in out
    for question in QUESTIONS:
        assert replies[question][:12] in out, question
