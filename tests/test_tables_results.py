"""Tests of mistlib.tables.load_results: reading back what reproduce() wrote, and where it looks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mistlib import tables
from mistlib.tables import NOTE, PAPER, TABLES, Row, default_results_dir, load_results, render


def make_rows(table: str) -> list[Row]:
    """One Row per line of ``table`` with distinct made-up metrics, as reproduce() would build them."""
    rows = []
    for index, key in enumerate(TABLES[table]):
        ours = {metric: 0.01 * (index + 1) for metric in PAPER[key]}
        command = f"python -m mistlib train --task {key[0]} --data {key[1]} --method {key[2]} --budget cpu"
        rows.append(Row(*key, ours, PAPER[key], command, 0, 100 + index, "cpu", 10.0 * index))
    return rows


def write(directory: Path, table: str, rows: list[Row]) -> None:
    """The same JSON layout as reproduce() writes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{table}.json").write_text(json.dumps({"note": NOTE, "rows": [vars(r) for r in rows]}))


@pytest.mark.parametrize("table", ["table1", "table2"])
def test_round_trip_gives_equal_rows_in_order(tmp_path, table):
    rows = make_rows(table)
    write(tmp_path, table, rows)
    loaded = load_results(table, tmp_path)
    assert loaded == rows
    assert [(r.task, r.data, r.method) for r in loaded] == TABLES[table]
    assert render(table, loaded) == render(table, rows)  # the markdown of reproduce() can be rebuilt


def test_environment_variable_and_argument_precedence(tmp_path, monkeypatch):
    env_dir, arg_dir = tmp_path / "env", tmp_path / "arg"
    write(env_dir, "table1", make_rows("table1")[:2])
    write(arg_dir, "table1", make_rows("table1")[:3])
    monkeypatch.setenv("MIST_RESULTS", str(env_dir))
    assert default_results_dir() == env_dir
    assert len(load_results("table1")) == 2  # $MIST_RESULTS
    assert len(load_results("table1", arg_dir)) == 3  # an explicit folder wins
    assert len(load_results("table1", str(arg_dir))) == 3  # a str works too
    monkeypatch.delenv("MIST_RESULTS")
    assert default_results_dir() == Path(tables.__file__).resolve().parents[1] / "results"


def test_missing_file_names_the_command_and_bad_table_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m mistlib reproduce table2"):
        load_results("table2", tmp_path)
    with pytest.raises(ValueError, match="table must be one of table1, table2; got 'table9'"):
        load_results("table9", tmp_path)
