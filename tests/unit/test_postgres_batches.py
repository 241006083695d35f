"""How the PostgreSQL adapter turns an executemany of a plain INSERT into a few multi-row INSERTs."""

from __future__ import annotations

import pytest

from strowger.store.postgres import _chunk_sizes, _multi_row


def test_a_plain_insert_becomes_a_multi_row_insert_with_numbered_placeholders() -> None:
    expected = "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
    assert _multi_row("INSERT INTO t (a, b) VALUES (?, ?)", 2) == expected


def test_on_conflict_do_nothing_is_kept() -> None:
    sql = "INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING"
    assert _multi_row(sql, 3) == "INSERT INTO t (a) VALUES ($1), ($2), ($3) ON CONFLICT (a) DO NOTHING"


@pytest.mark.parametrize(
    "sql",
    [
        # one statement may not update a row twice, which a batch of repeated keys would ask
        "INSERT INTO t (a, b) VALUES (?, ?) ON CONFLICT (a) DO UPDATE SET b = excluded.b",
        "INSERT INTO t (a) VALUES (?) RETURNING id",  # its caller expects one result per row
        "INSERT INTO t (a, b) VALUES (?, now())",  # not only placeholders
        "INSERT INTO t (a) SELECT ? WHERE true",
        "UPDATE t SET a = ? WHERE id = ?",
    ],
)
def test_anything_else_is_left_to_psycopgs_executemany(sql: str) -> None:
    assert _multi_row(sql, 2) is None


def test_rows_are_split_into_powers_of_two_within_the_parameter_limit() -> None:
    assert _chunk_sizes(500, 4) == [256, 128, 64, 32, 16, 4]
    assert _chunk_sizes(1, 20) == [1]
    assert _chunk_sizes(700, 400) == [128, 128, 128, 128, 128, 32, 16, 8, 4]  # 128 rows x 400 < 65,535
    assert all(sum(_chunk_sizes(n, 3)) == n for n in range(1, 600))
