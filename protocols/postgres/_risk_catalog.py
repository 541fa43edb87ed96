"""The SQL risk scorer's vocabulary: categories, their default scores, and
the lists of functions and settings that make an otherwise plain query risky.

Category names are part of the configuration surface (``risk.rules[].match``)
and of recordings: add new ones freely, never rename or repurpose one.
Every category is documented in docs/postgres-risk.md.
"""

from __future__ import annotations

CRITICAL = 100
HIGH = 75
MEDIUM = 50
LOW = 25
NONE = 0

CATEGORY_SCORES: dict[str, int] = {
    # critical: irreversible or server-wide
    "drop_database": CRITICAL,
    "alter_system": CRITICAL,
    "copy_program": CRITICAL,
    # high: destructive, privilege-changing, or opaque
    "drop": HIGH,
    "drop_table": HIGH,
    "drop_schema": HIGH,
    "drop_column": HIGH,
    "truncate": HIGH,
    "delete_without_where": HIGH,
    "update_without_where": HIGH,
    "grant": HIGH,
    "revoke": HIGH,
    "role": HIGH,
    "set_session_authorization": HIGH,
    "sensitive_setting": HIGH,
    "dangerous_function": HIGH,
    "do_block": HIGH,
    "dynamic_sql": HIGH,
    "untrusted_language": HIGH,
    "extension": HIGH,
    "copy_file": HIGH,
    "unknown_prepared": HIGH,
    "unparseable": HIGH,  # the real score comes from RiskSection.unparseable
    # medium: changes data or schema in the ordinary way
    "ddl": MEDIUM,
    "write": MEDIUM,
    "set_role": MEDIUM,
    "call": MEDIUM,
    "other": MEDIUM,
    # low: session and housekeeping
    "copy_stdin": LOW,
    "copy_stdout": LOW,
    "transaction": LOW,
    "maintenance": LOW,
    "listen_notify": LOW,
    "lock": LOW,
    "prepare": LOW,
    "execute": LOW,
    "deallocate": LOW,
    "multi_statement": LOW,
    # none
    "setting": NONE,
    "read": NONE,
    "empty": NONE,
}

# Functions by their unqualified, lower-cased name. Prefixes catch families.
DANGEROUS_FUNCTIONS: dict[str, str] = {
    "pg_terminate_backend": "terminates another session",
    "pg_cancel_backend": "cancels another session's query",
    "pg_read_file": "reads a server-side file",
    "pg_read_binary_file": "reads a server-side file",
    "pg_stat_file": "inspects a server-side file",
    "lo_import": "imports a server-side file",
    "lo_export": "writes a server-side file",
    "lo_unlink": "deletes a large object",
    "pg_reload_conf": "reloads the server configuration",
    "pg_rotate_logfile": "rotates the server log",
    "pg_promote": "promotes a standby",
    "pg_switch_wal": "forces a WAL switch",
    "pg_create_restore_point": "creates a restore point",
    "pg_drop_replication_slot": "drops a replication slot",
    "pg_create_physical_replication_slot": "creates a replication slot",
    "pg_create_logical_replication_slot": "creates a replication slot",
    "pg_copy_physical_replication_slot": "creates a replication slot",
    "pg_copy_logical_replication_slot": "creates a replication slot",
    "pg_truncate_visibility_map": "truncates a visibility map",
    "pg_stat_reset": "resets statistics",
    "pg_stat_reset_shared": "resets statistics",
    "pg_wal_replay_pause": "pauses WAL replay",
    "pg_wal_replay_resume": "resumes WAL replay",
    "query_to_xml": "runs a query given as text",
    "query_to_xml_and_xmlschema": "runs a query given as text",
    "query_to_xmlschema": "runs a query given as text",
}
DANGEROUS_PREFIXES: tuple[tuple[str, str], ...] = (
    ("pg_ls_", "lists a server-side directory"),
    ("pg_file_", "changes a server-side file"),
    ("dblink", "runs SQL over another connection"),
    ("pg_replication_origin_", "changes replication state"),
)
# Functions that run SQL text they are given: opaque to this scorer.
DYNAMIC_SQL_FUNCTIONS = frozenset(
    {"query_to_xml", "query_to_xml_and_xmlschema", "query_to_xmlschema"}
)
DYNAMIC_SQL_PREFIXES = ("dblink",)

# Settings whose change weakens auditing, integrity or access control, for
# both SET and set_config(). Lower-case; a ``prefix.`` entry matches a family.
SENSITIVE_SETTINGS = frozenset(
    {
        "session_replication_role",  # replica: triggers and FK checks off
        "row_security",
        "default_transaction_read_only",
        "transaction_read_only",
        "log_statement",
        "log_min_duration_statement",
        "log_min_messages",
        "log_min_error_statement",
        "log_connections",
        "log_disconnections",
        "log_duration",
        "track_activities",
        "allow_system_table_mods",
        "zero_damaged_pages",
        "ignore_system_indexes",
        "ignore_checksum_failure",
        "search_path",
    }
)
SENSITIVE_SETTING_PREFIXES = ("pgaudit.", "log_", "debug_")

# Languages that can reach the operating system.
TRUSTED_LANGUAGES = frozenset({"sql", "plpgsql", "plperl", "pltcl", "plv8", "plrust"})

# DropStmt.removeType -> extra category.
DROP_CATEGORIES: dict[str, str] = {
    "OBJECT_TABLE": "drop_table",
    "OBJECT_FOREIGN_TABLE": "drop_table",
    "OBJECT_SCHEMA": "drop_schema",
    "OBJECT_EXTENSION": "extension",
}


def function_risk(name: str) -> str | None:
    """Why calling ``name`` (unqualified, any case) is dangerous, or None."""
    name = name.lower()
    why = DANGEROUS_FUNCTIONS.get(name)
    if why is not None:
        return why
    for prefix, why in DANGEROUS_PREFIXES:
        if name.startswith(prefix):
            return why
    return None


def runs_dynamic_sql(name: str) -> bool:
    name = name.lower()
    return name in DYNAMIC_SQL_FUNCTIONS or name.startswith(DYNAMIC_SQL_PREFIXES)


def is_sensitive_setting(name: str) -> bool:
    name = name.lower()
    return name in SENSITIVE_SETTINGS or name.startswith(SENSITIVE_SETTING_PREFIXES)
