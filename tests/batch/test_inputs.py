"""Batch input: both line shapes, defaults, and every invalid case reported with its line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimiflow.batch.inputs import InputDefaults, iter_requests, scan_input

from .conftest import write_jsonl

MODEL = InputDefaults(model="moonshot-v1-8k")


def test_batch_api_and_short_lines_become_chat_bodies(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "kimi-latest", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}},
        {"custom_id": "b", "prompt": "你好", "temperature": 0.3},
        {"messages": [{"role": "user", "content": "no id"}]},
    ])
    scan = scan_input(path, MODEL)
    assert scan.ok and scan.requests == 3 and scan.fingerprint.startswith("sha256:")
    a, b, c = iter_requests(path, MODEL)
    assert (a.custom_id, a.body["model"], a.body["max_tokens"]) == ("a", "kimi-latest", 9)
    assert b.body == {"model": "moonshot-v1-8k", "temperature": 0.3,
                      "messages": [{"role": "user", "content": "你好"}]}
    assert (c.custom_id, c.line) == ("3", 3)  # a missing id becomes the line number


def test_defaults_fill_only_what_a_line_does_not_set(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "prompt": "x"},
        {"custom_id": "b", "prompt": "x", "max_tokens": 5, "model": "kimi-latest"},
        {"custom_id": "c", "messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "x"}]},
    ])
    defaults = InputDefaults(model="moonshot-v1-8k", max_tokens=100, system="be brief")
    a, b, c = iter_requests(path, defaults)
    assert a.body["model"] == "moonshot-v1-8k" and a.body["max_tokens"] == 100
    assert a.body["messages"][0] == {"role": "system", "content": "be brief"}
    assert b.body["model"] == "kimi-latest" and b.body["max_tokens"] == 5
    assert c.body["messages"][0]["content"] == "own" and len(c.body["messages"]) == 2


def test_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}, "", "   ", {"prompt": "b"}])
    scan = scan_input(path, MODEL)
    assert scan.ok and scan.requests == 2
    assert [r.custom_id for r in iter_requests(path, MODEL)] == ["1", "4"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"custom_id": 5, "prompt": "x"}', "custom_id must be a non-empty string"),
        ('{"custom_id": "", "prompt": "x"}', "custom_id must be a non-empty string"),
        ('{"custom_id": "x"}', 'no "messages" or "prompt"'),
        ('{"prompt": "x", "messages": [{"role": "user", "content": "y"}]}', "not both"),
        ('{"prompt": ""}', '"prompt" must be a non-empty string'),
        ('{"messages": []}', "non-empty list"),
        ('{"messages": ["hi"]}', 'messages[0] must be an object with a "role"'),
        ('{"prompt": "x", "stream": true}', "stream"),
        ('{"prompt": "x", "max_tokens": 0}', "positive integer"),
        ('{"prompt": "x", "model": 3}', '"model" must be a string'),
        ('{"method": "GET", "url": "/v1/chat/completions", "body": {}}', 'method must be "POST"'),
        ('{"method": "POST", "url": "/v1/embeddings", "body": {}}', "only chat completions"),
        ('{"method": "POST", "url": "/v1/chat/completions", "body": "x"}', '"body" must be a JSON object'),
        ('{"url": "/v1/chat/completions", "body": {"messages": [{"role": "user"}]}, "temperature": 1}',
         "go inside body"),
    ],
)
def test_each_invalid_line_is_reported_with_its_line_number(tmp_path: Path, line: str, message: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "fine"}, line, {"prompt": "fine too"}])
    scan = scan_input(path, MODEL)
    assert not scan.ok and scan.problem_count == 1 and scan.requests == 2
    assert scan.problems[0].line == 2
    assert message in scan.problems[0].message
    assert scan.describe().startswith("line 2: ")
    assert scan.bad_lines == {2}


def test_missing_model_without_default_says_to_pass_model(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    scan = scan_input(path)
    assert "pass model=" in scan.problems[0].message and "--model" not in scan.problems[0].message


def test_duplicate_ids_name_the_first_line_and_the_line_id_collision(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "a", "prompt": "x"},
        {"custom_id": "b", "prompt": "x"},
        {"custom_id": "a", "prompt": "again"},
        {"prompt": "no id, so its id is 4"},
        {"custom_id": "4", "prompt": "collides with line 4"},
    ])
    scan = scan_input(path, MODEL)
    assert [(p.line, p.message) for p in scan.problems] == [
        (3, "duplicate custom_id 'a' (first on line 1)"),
        (5, "duplicate custom_id '4' (first on line 4)"),
    ]
    # Skipping the bad lines keeps the first occurrence of each id.
    ids = [r.custom_id for r in iter_requests(path, MODEL, skip_lines=scan.bad_lines)]
    assert ids == ["a", "b", "4"]


def test_invalid_utf8_is_a_line_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff\xfe"}\n')
    scan = scan_input(path, MODEL)
    assert [p.line for p in scan.problems] == [2]
    assert str(scan.problems[0]) == "line 2: not valid UTF-8 (byte 0xff at column 13); save the file as UTF-8"


def test_a_utf8_byte_order_mark_at_the_start_is_skipped(tmp_path: Path) -> None:
    """Notepad and Excel's "CSV UTF-8" start the file with a BOM: the first line is still JSON."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"custom_id": "a", "prompt": "hi"}\n{"custom_id": "b", "prompt": "yo"}\n')
    scan = scan_input(path, MODEL)
    assert scan.ok and scan.requests == 2
    assert [r.custom_id for r in iter_requests(path, MODEL)] == ["a", "b"]
    path.write_bytes(b'{"prompt": "hi"}\n\xef\xbb\xbf{"prompt": "yo"}\n')  # only the file's start
    assert str(scan_input(path, MODEL).problems[0]).startswith("line 2: invalid JSON")


def test_a_line_nested_thousands_deep_is_one_line_problem(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    deep = '{"prompt": "hi", "metadata": ' + "[" * 2000 + "]" * 2000 + "}"
    write_jsonl(path, [{"prompt": "ok"}, deep])
    scan = scan_input(path, MODEL)
    assert [str(p) for p in scan.problems] == [
        "line 2: JSON nested too deeply (more than 900 levels); no chat request needs that: flatten the line"
    ]


def test_fingerprint_changes_when_the_file_changes(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "a"}])
    first = scan_input(path, MODEL).fingerprint
    write_jsonl(path, [{"prompt": "b"}])
    assert scan_input(path, MODEL).fingerprint != first


def test_missing_input_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        scan_input(tmp_path / "nope.jsonl", MODEL)


def test_problems_kept_are_capped_but_all_are_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", ["{bad"] * 1500)
    scan = scan_input(path, MODEL)
    assert scan.problem_count == 1500 and len(scan.problems) == 1000
    assert scan.describe(limit=3).endswith("... and 1497 more")


def test_reading_is_streamed_not_loaded(tmp_path: Path) -> None:
    """iter_requests is lazy: the first request arrives before the rest of the file is parsed."""
    path = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "ok"}, "{broken"])
    it = iter_requests(path, MODEL)
    assert next(it).custom_id == "1"
