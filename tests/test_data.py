"""atesd.data: every file format, every validation rule, and the messages a user has to act on."""

import csv
import json
import logging
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from atesd.data import (
    EVAL_OPTIONS,
    LIBRARY_OPTIONS,
    TRAIN_OPTIONS,
    BadRow,
    DataError,
    Problem,
    load_problems,
    load_problems_with_report,
    write_problems,
)

GOOD_SOLUTION = "Add the numbers: $1 + 1 = 2$.\n\nThe answer is $\\boxed{2}$."

PROBLEMS = [
    Problem("p1", "What is $1 + 1$?", GOOD_SOLUTION, "2", difficulty=1, source="toy"),
    Problem("p2", "Halve 1.", "Half of 1 is $\\frac{1}{2}$.\n\nSo $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    Problem("p3", "Ünïcödé: what is $2 \\cdot 3$?", "We get $\\boxed{6}$. Done.", "6", difficulty=5),
]


def _jsonl(path, rows):
    """Write rows (dicts, or raw str/bytes lines) one per line; return the path."""
    with open(path, "wb") as handle:
        for row in rows:
            if isinstance(row, dict):
                row = json.dumps(row)
            handle.write((row.encode() if isinstance(row, str) else row) + b"\n")
    return path


def _row(**overrides):
    row = {"problem": "What is $1 + 1$?", "solution": GOOD_SOLUTION}
    row.update(overrides)
    return {key: value for key, value in row.items() if value is not ...}


# --- formats ----------------------------------------------------------------------------------


def test_write_then_load_jsonl_round_trips_every_field(tmp_path):
    path = tmp_path / "out" / "train.jsonl"
    write_problems(path, PROBLEMS)
    assert load_problems(path) == PROBLEMS
    assert [p.name for p in path.parent.iterdir()] == ["train.jsonl"]  # no temporary left behind


def test_write_problems_replaces_atomically_and_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "train.jsonl"
    write_problems(path, PROBLEMS)
    with pytest.raises(TypeError, match="Problem"):
        write_problems(path, [PROBLEMS[0], {"id": "not a Problem"}])
    assert load_problems(path) == PROBLEMS
    write_problems(path, PROBLEMS[:1])
    assert load_problems(path) == PROBLEMS[:1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.jsonl"]


def test_csv_round_trip_with_a_multi_line_cell(tmp_path):
    path = tmp_path / "train.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "problem", "solution", "answer", "difficulty", "source"])
        for p in PROBLEMS:
            writer.writerow([p.id, p.problem, p.solution, p.answer, p.difficulty or "", p.source or ""])
    assert load_problems(str(path)) == PROBLEMS


def test_parquet_round_trip(tmp_path):
    path = tmp_path / "train.parquet"
    rows = [{name: getattr(p, name) for name in Problem.__dataclass_fields__} for p in PROBLEMS]
    pq.write_table(pa.Table.from_pylist(rows), path)
    assert load_problems(path) == PROBLEMS


@pytest.mark.parametrize("wrapped", [False, True])
def test_json_file_holds_a_list_or_a_data_key(tmp_path, wrapped):
    rows = [_row(id="a"), _row(id="b", answer=2)]
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"data": rows} if wrapped else rows))
    assert [(p.id, p.answer) for p in load_problems(path)] == [("a", "2"), ("b", "2")]


def test_json_file_with_another_top_level_shape_is_rejected(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"rows": []}))
    with pytest.raises(DataError, match=r"train\.json: expected a JSON list"):
        load_problems(path)


def test_json_file_bad_element_is_named_by_row(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps([_row(id="a"), _row(id="b", solution="no box")]))
    with pytest.raises(DataError, match=r"train\.json:row 2: field 'solution': no \\boxed\{\} final answer"):
        load_problems(path)


# --- derived fields and column mapping --------------------------------------------------------


def test_answer_is_derived_from_the_last_box_when_there_is_no_answer_column(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row(solution="Maybe $\\boxed{3}$? No: it is $\\boxed{\\frac{1}{2}}$.")])
    assert load_problems(path)[0].answer == "\\frac{1}{2}"


def test_given_answer_wins_over_the_box_and_may_be_an_integer(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id="a", answer="0.5"), _row(id="b", answer=204)])
    assert [p.answer for p in load_problems(path)] == ["0.5", "204"]


def test_missing_ids_are_derived_from_file_stem_and_record_index(tmp_path):
    path = _jsonl(tmp_path / "aime.jsonl", [_row(), "", _row(id=7), _row()])
    assert [p.id for p in load_problems(path)] == ["aime-0", "7", "aime-2"]


def test_column_mapping_reads_other_column_names(tmp_path):
    path = tmp_path / "gsm.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["uid", "question", "worked", "level"])
        writer.writerow(["q1", "What is $1+1$?", GOOD_SOLUTION, "Level 3"])
    mapping = {"id": "uid", "problem": "question", "solution": "worked", "difficulty": "level"}
    expected = Problem("q1", "What is $1+1$?", GOOD_SOLUTION, "2", difficulty=3)
    assert load_problems(path, columns=mapping) == [expected]


def test_mapped_column_absent_from_a_csv_header_fails_once_for_the_file(tmp_path):
    path = tmp_path / "gsm.csv"
    path.write_text("question,solution\nq,s\n")
    expected = (
        r"gsm\.csv: column 'prompt' \(for field 'problem'\) not found; "
        r"available columns: question, solution"
    )
    with pytest.raises(DataError, match=expected):
        load_problems(path, columns={"problem": "prompt"}, on_bad_row="skip")


def test_parquet_without_the_required_columns_names_what_is_there(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "q", "solution": GOOD_SOLUTION}]), path)
    expected = r"column 'problem' \(for field 'problem'\) not found; available columns: question"
    with pytest.raises(DataError, match=expected):
        load_problems(path)
    assert load_problems(path, columns={"problem": "question"})[0].problem == "q"


# --- validation: all bad rows at once ---------------------------------------------------------


def _mixed_file(tmp_path):
    """Good rows at lines 1, 3 and 10; one kind of bad row on each other line (line 2 blank)."""
    return _jsonl(
        tmp_path / "train.jsonl",
        [
            _row(id="a"),                                   # 1 good
            "",                                             # 2 blank, ignored
            _row(id="b"),                                   # 3 good
            '{"id": "c", "problem": "x", "solution": ',     # 4 invalid JSON
            _row(id="d", solution="We get 2."),             # 5 no box
            _row(id="e", problem="   "),                    # 6 empty problem
            _row(id="f", solution=...),                     # 7 missing solution
            _row(id="a"),                                   # 8 duplicate id
            b'{"id": "g", "problem": "caf\xe9", "solution": "\\\\boxed{1}"}',  # 9 Latin-1 byte
            _row(id="h", difficulty=0),                     # 10 bad difficulty
            _row(id="i", problem=["not", "text"]),          # 11 wrong type
            _row(id="j"),                                   # 12 good
        ],
    )


def test_error_mode_lists_every_bad_row_with_file_line_and_field(tmp_path):
    path = _mixed_file(tmp_path)
    with pytest.raises(DataError) as caught:
        load_problems(str(path))
    label = str(path)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith(f"{label}: 8 bad row(s)")
    assert lines[1:] == [
        f"{label}:4: invalid JSON: Expecting value (column 41)",
        f"{label}:5: field 'solution': no \\boxed{{}} final answer",
        f"{label}:6: field 'problem': is empty",
        f"{label}:7: field 'solution': missing (looked for column 'solution')",
        f"{label}:8: field 'id': duplicate id 'a' (first at {label}:1)",
        f"{label}:9: invalid UTF-8 at byte 28 of the line",
        f"{label}:10: field 'difficulty': must be an integer >= 1, got 0",
        f"{label}:11: field 'problem': must be a string, got list ['not', 'text']",
    ]
    assert len(caught.value.bad_rows) == 8
    assert all(isinstance(bad, BadRow) for bad in caught.value.bad_rows)


def test_skip_mode_keeps_good_rows_and_reports_a_count_per_reason(tmp_path, caplog):
    path = _mixed_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="atesd.data"):
        report = load_problems_with_report(path, on_bad_row="skip")
    assert [p.id for p in report.problems] == ["a", "b", "j"]
    assert report.skipped_rows == 8
    assert report.skipped_by_reason == {
        "invalid JSON": 1,
        "no boxed answer": 1,
        "empty": 1,
        "missing": 1,
        "duplicate id": 1,
        "invalid UTF-8": 1,
        "invalid difficulty": 1,
        "wrong type": 1,
    }
    assert "skipped 8 bad row(s)" in caplog.text and "1 invalid JSON" in caplog.text
    assert load_problems(path, on_bad_row="skip") == list(report.problems)


def test_skip_mode_warning_names_each_skipped_row_and_why(tmp_path, caplog):
    path = _mixed_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="atesd.data"):
        load_problems(path, on_bad_row="skip")
    lines = [line.strip() for line in caplog.text.splitlines()]
    assert f"{path}:5: field 'solution': no \\boxed{{}} final answer" in lines
    assert f"{path}:8: field 'id': duplicate id 'a' (first at {path}:1)" in lines
    assert f"{path}:11: field 'problem': must be a string, got list ['not', 'text']" in lines


def test_skip_mode_warning_lists_the_first_20_rows_then_how_many_more(tmp_path, caplog):
    rows = [_row(id="good")] + [_row(id=f"bad{i}", solution="no box") for i in range(25)]
    path = _jsonl(tmp_path / "t.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="atesd.data"):
        load_problems(path, on_bad_row="skip")
    assert f"{path}:21: field 'solution'" in caplog.text  # the 20th bad row (line 21)
    assert f"{path}:22:" not in caplog.text
    assert "... and 5 more" in caplog.text


def test_two_bad_fields_of_a_skipped_row_share_one_entry(tmp_path, caplog):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id="good"), _row(problem="", solution="no box")])
    with caplog.at_level(logging.WARNING, logger="atesd.data"):
        load_problems(path, on_bad_row="skip")
    assert f"{path}:2: field 'problem': is empty; field 'solution': no \\boxed{{}} final answer" in caplog.text


def test_every_row_skipped_is_a_one_line_error_naming_the_file(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [_row(solution="no box"), "{oops", _row(problem="")])
    with pytest.raises(DataError) as caught:
        load_problems(path, on_bad_row="skip")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: no usable rows: 3 skipped (1 empty, 1 invalid JSON, 1 no boxed answer)")
    assert f"{path}:1: field 'solution'" in message


def test_a_row_with_two_bad_fields_gets_one_line_per_field(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row(problem="", solution="no box"), _row()])
    with pytest.raises(DataError) as caught:
        load_problems(path)
    assert [(bad.location, bad.field) for bad in caught.value.bad_rows] == [
        (f"{path}:1", "problem"),
        (f"{path}:1", "solution"),
    ]
    assert load_problems_with_report(path, on_bad_row="skip").skipped_rows == 1


def test_csv_bad_rows_are_named_by_the_file_line_where_they_start(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(
        b"problem,solution\n"                              # 1 header
        b'"two\nline problem","\\boxed{1}"\n'              # 2-3 good
        b'"p","no box"\n'                                  # 4
        b'"caf\xe9","\\boxed{1}"\n'                        # 5 invalid UTF-8
        b'"p","\\boxed{1}","extra"\n'                      # 6 too many cells
    )
    with pytest.raises(DataError) as caught:
        load_problems(path)
    assert str(caught.value).splitlines()[1:] == [
        f"{path}:4: field 'solution': no \\boxed{{}} final answer",
        f"{path}:5: invalid UTF-8",
        f"{path}:6: 3 cells but the header has 2",
    ]


@pytest.mark.parametrize(
    ("difficulty", "expected"),
    [(3, 3), ("4", 4), ("Level 5", 5), ("level2", 2), (None, None), ("", None)],
)
def test_difficulty_accepts_integers_digit_strings_and_math_levels(tmp_path, difficulty, expected):
    path = _jsonl(tmp_path / "t.jsonl", [_row(difficulty=difficulty)])
    assert load_problems(path)[0].difficulty == expected


@pytest.mark.parametrize("difficulty", [0, -1, True, 2.5, "hard", "Level ?"])
def test_difficulty_must_be_an_integer_of_at_least_one(tmp_path, difficulty):
    path = _jsonl(tmp_path / "t.jsonl", [_row(difficulty=difficulty)])
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'difficulty'"):
        load_problems(path)


def test_an_empty_box_is_not_a_final_answer(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row(solution="So $\\boxed{}$.")])
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'solution': the last \\boxed\{\} is empty"):
        load_problems(path)


# --- whole-source errors and arguments --------------------------------------------------------


def test_missing_file_is_a_data_error_naming_it(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"{missing}: file not found"):
        load_problems(missing)
    with pytest.raises(DataError, match=r"data/absent\.csv: file not found"):
        load_problems("data/absent.csv")


def test_unsupported_suffix_directory_and_empty_file_are_data_errors(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="unsupported file type '.txt'"):
        load_problems(tmp_path / "x.txt")
    with pytest.raises(DataError, match="is a directory"):
        load_problems(tmp_path)
    with pytest.raises(DataError, match=r"empty\.jsonl: no rows"):
        load_problems(tmp_path / "empty.jsonl")


def test_invalid_arguments_raise_value_error(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row()])
    with pytest.raises(ValueError, match="on_bad_row"):
        load_problems(path, on_bad_row="ignore")
    with pytest.raises(ValueError, match="unknown field"):
        load_problems(path, columns={"question": "problem"})
    with pytest.raises(ValueError, match="hub datasets only"):
        load_problems(path, split="train")


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)


def test_hub_name_offline_gives_a_data_error_naming_the_source(tmp_path):
    # A subprocess, so that HF_HUB_OFFLINE is read fresh by huggingface_hub at import time.
    script = (
        "from atesd.data import DataError, load_problems\n"
        "try:\n"
        "    load_problems('atesd-test-org/no-such-dataset', split='train')\n"
        "except DataError as error:\n"
        "    print('DataError:', error)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("DataError: atesd-test-org/no-such-dataset: not a local file")
    assert "split 'train'" in done.stdout


# --- evaluation-only sets (require_solution=False) ---------------------------------------------


def test_evaluation_only_parquet_with_problem_index_and_integer_answer_loads_without_a_solution(tmp_path):
    # The MathArena layout: problem_idx (int), problem, answer (int for AIME), no solution column.
    path = tmp_path / "aime.parquet"
    rows = [{"problem_idx": 1, "problem": "Find $x$.", "answer": 204},
            {"problem_idx": 2, "problem": "Find $y$.", "answer": 25}]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"column 'solution' \(for field 'solution'\) not found"):
        load_problems(path, columns={"id": "problem_idx"})
    problems = load_problems(path, columns={"id": "problem_idx"}, require_solution=False)
    assert problems == [Problem("1", "Find $x$.", "", "204"), Problem("2", "Find $y$.", "", "25")]


def test_evaluation_only_row_takes_its_answer_from_the_column_or_else_the_solution_box(tmp_path):
    path = _jsonl(tmp_path / "eval.jsonl", [
        {"id": "column", "problem": "p", "answer": "\\frac{1}{2}"},
        {"id": "box", "problem": "p", "solution": "So $\\boxed{7}$."},
        {"id": "unboxed-solution", "problem": "p", "solution": "It is seven.", "answer": "7"},
    ])
    problems = load_problems(path, require_solution=False)
    assert [(p.id, p.answer, p.solution) for p in problems] == [
        ("column", "\\frac{1}{2}", ""),
        ("box", "7", "So $\\boxed{7}$."),
        ("unboxed-solution", "7", "It is seven."),
    ]


def test_evaluation_only_row_without_any_answer_is_a_bad_row_naming_the_answer_column(tmp_path):
    path = _jsonl(tmp_path / "eval.jsonl", [
        {"id": "a", "problem": "p", "answer": "1"},
        {"id": "b", "problem": "p"},
        {"id": "c", "problem": "p", "solution": "no box here"},
    ])
    with pytest.raises(DataError) as caught:
        load_problems(path, columns={"answer": "answer"}, require_solution=False)
    assert [(b.location, b.field) for b in caught.value.bad_rows] == [
        (f"{path}:2", "answer"), (f"{path}:3", "solution"),
    ]
    assert "looked for column 'answer'" in str(caught.value)


def test_training_load_still_requires_a_boxed_solution_when_an_answer_is_given(tmp_path):
    path = _jsonl(tmp_path / "train.jsonl", [{"id": "a", "problem": "p", "answer": "1"},
                                             {"id": "b", "problem": "p", "solution": "no box", "answer": "1"}])
    with pytest.raises(DataError) as caught:
        load_problems(path)
    located = [(b.location, b.field) for b in caught.value.bad_rows]
    assert located == [(f"{path}:1", "solution"), (f"{path}:2", "solution")]


# --- answers that disagree with their solution --------------------------------------------------


def test_an_answer_disagreeing_with_the_solution_box_is_kept_with_a_warning_naming_the_row(tmp_path, caplog):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id="same", answer="2"), _row(id="equal", answer="2.0"),
                                         _row(id="derived"), _row(id="wrong", answer="3")])
    with caplog.at_level(logging.WARNING, logger="atesd.data_checks"):
        problems = load_problems(path)
    assert [(p.id, p.answer) for p in problems] == [("same", "2"), ("equal", "2.0"), ("derived", "2"),
                                                    ("wrong", "3")]
    assert "1 row(s) give an answer that disagrees" in caplog.text
    assert f"{path}:4: answer '3' but the solution's last box is '2'" in caplog.text
    assert f"{path}:2:" not in caplog.text  # 2.0 = 2 by math-verify


def test_answer_disagreement_list_is_capped(tmp_path, caplog):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id=f"r{i}", answer="3") for i in range(23)])
    with caplog.at_level(logging.WARNING, logger="atesd.data_checks"):
        load_problems(path)
    assert "23 row(s) give an answer that disagrees" in caplog.text
    assert f"{path}:20:" in caplog.text and f"{path}:21:" not in caplog.text
    assert "... and 3 more" in caplog.text


def test_evaluation_only_rows_without_a_boxed_solution_are_not_compared(tmp_path, caplog):
    path = _jsonl(tmp_path / "eval.jsonl", [
        {"id": "unboxed", "problem": "p", "solution": "It is seven.", "answer": "7"},
        {"id": "no-solution", "problem": "p", "answer": "8"},
        {"id": "boxed", "problem": "p", "solution": "So $\\boxed{5}$.", "answer": "9"},
    ])
    with caplog.at_level(logging.WARNING, logger="atesd.data_checks"):
        load_problems(path, require_solution=False)
    assert "1 row(s) give an answer that disagrees" in caplog.text
    assert f"{path}:3: answer '9'" in caplog.text


# --- long cells and long prompts ----------------------------------------------------------------


def _long_csv(path, long_problem):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "problem", "solution"])
        writer.writerow(["short", "What is $1 + 1$?", GOOD_SOLUTION])
        writer.writerow(["long", long_problem, GOOD_SOLUTION])
    return path


def test_a_csv_cell_of_200000_characters_loads(tmp_path):
    long_problem = "1 + " * 50_000  # 200,000 characters, over the csv module's default limit of 131,072
    path = _long_csv(tmp_path / "t.csv", long_problem)
    problems = load_problems(path)
    assert [p.id for p in problems] == ["short", "long"]
    assert len(problems[1].problem) == 200_000


def test_max_prompt_tokens_drops_the_long_csv_row_with_a_warning_naming_it(tmp_path, tiny_tokenizer, caplog):
    from atesd.data_checks import drop_long_prompts
    from atesd.prompts import PromptConfig

    path = _long_csv(tmp_path / "t.csv", "1 + " * 50_000)
    with caplog.at_level(logging.WARNING, logger="atesd.data_checks"):
        kept = drop_long_prompts(load_problems(path), tiny_tokenizer, PromptConfig(), 200, str(path))
    assert [p.id for p in kept] == ["short"]
    assert f"{path}: dropped 1 row(s) whose student prompt is longer than max_prompt_tokens=200; kept 1" in caplog.text
    assert "id 'long': " in caplog.text and "id 'short'" not in caplog.text


def test_max_prompt_tokens_none_keeps_every_row_and_all_dropped_is_a_one_line_error(tmp_path, tiny_tokenizer):
    from atesd.data_checks import drop_long_prompts
    from atesd.prompts import PromptConfig

    problems = load_problems(_long_csv(tmp_path / "t.csv", "1 + " * 1000))
    assert drop_long_prompts(problems, tiny_tokenizer, PromptConfig(), None, "t.csv") == problems
    with pytest.raises(DataError) as caught:
        drop_long_prompts(problems, tiny_tokenizer, PromptConfig(), 3, "t.csv")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("t.csv: no usable rows: all 2 prompts are longer than max_prompt_tokens=3")


# --- the bad-row threshold and how the messages spell the settings ---------------------------------


def test_skip_mode_stops_when_the_bad_share_is_over_the_threshold_naming_the_rows(tmp_path):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id=f"g{i}") for i in range(8)] + [_row(id="x", solution="no box")] * 2)
    assert len(load_problems(path, on_bad_row="skip", max_bad_row_share=0.2)) == 8  # 2 of 10: at the limit
    with pytest.raises(DataError) as caught:
        load_problems(path, on_bad_row="skip", max_bad_row_share=0.1)
    message = str(caught.value)
    assert message.startswith(f"{path}: 2 of 10 rows are bad (20.0%: 2 no boxed answer), more than "
                              "max_bad_row_share=0.1; fix the rows or the column map, or raise max_bad_row_share")
    assert f"{path}:9: field 'solution': no \\boxed{{}} final answer" in message and len(caught.value.bad_rows) == 2


def test_skip_mode_under_the_threshold_skips_with_one_warning(tmp_path, caplog):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id=f"g{i}") for i in range(30)] + [_row(id="x", solution="no box")])
    with caplog.at_level(logging.WARNING, logger="atesd.data"):
        problems = load_problems(path, on_bad_row="skip", max_bad_row_share=0.05)
    assert len(problems) == 30
    assert [r.levelname for r in caplog.records] == ["WARNING"] and f"{path}:31: field 'solution'" in caplog.text


def test_bad_row_threshold_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="max_bad_row_share must be a share between 0 and 1, got 5"):
        load_problems("unused.jsonl", on_bad_row="skip", max_bad_row_share=5)


@pytest.mark.parametrize("options, skip, share", [
    (LIBRARY_OPTIONS, "pass on_bad_row='skip' to drop them", "raise max_bad_row_share"),
    (TRAIN_OPTIONS, "pass data.on_bad_row=skip to drop them", "raise data.max_bad_row_share"),
    (EVAL_OPTIONS, "pass --on-bad-row skip to drop them", "raise --max-bad-row-share"),
])
def test_messages_spell_the_settings_as_the_caller_types_them(tmp_path, options, skip, share):
    path = _jsonl(tmp_path / "t.jsonl", [_row(id="g"), _row(id="x", solution="no box")])
    with pytest.raises(DataError, match=skip):
        load_problems(path, options=options)
    with pytest.raises(DataError, match=share):
        load_problems(path, on_bad_row="skip", max_bad_row_share=0.1, options=options)
