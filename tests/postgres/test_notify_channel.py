"""A NotificationResponse's channel name is passed as is, its payload masked.

A session is only sent notifications on channels it LISTENs on, by their
exact name, so the channel is always the client's own text (folded and
truncated as an identifier): it cannot carry anything the client did not
send, the upstream password included. Masking it would gain nothing and
break clients that dispatch by channel (asyncpg's ``add_listener`` would
deliver a masked name to no one)."""

from __future__ import annotations

import psycopg

from tests.postgres.conftest import Gateway


def test_channel_name_matching_a_rule_is_kept_payload_masked(gateway: Gateway) -> None:
    channel = "AKIAIOSFODNN7EXAMPLE"
    with psycopg.connect(gateway.dsn("db"), autocommit=True, sslmode="require") as listener:
        listener.execute(f'listen "{channel}"')
        with psycopg.connect(gateway.dsn("db"), autocommit=True, sslmode="require") as sender:
            sender.execute("select pg_notify(%s, %s)", (channel, f"key {channel} ann@example.com"))
        gen = listener.notifies(timeout=5)
        note = next(gen)
        gen.close()
    assert note.channel == channel
    assert note.payload == "key [AWS_ACCESS_KEY_ID] [EMAIL]"
