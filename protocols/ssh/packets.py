"""No empty ``MSG_IGNORE`` before every packet on ciphers that do not need it.

asyncssh (2.24) sends an empty ``MSG_IGNORE`` packet in front of every packet
it sends after key exchange whenever encryption is on
(``SSHConnection.send_packet``: "if we're encrypting and we have no data
outstanding, insert an ignore packet"). That is the old countermeasure to the
CBC chosen-plaintext attack on SSH (predictable IVs: the IV of a CBC packet is
the last cipher block of the previous one, which the attacker has seen), and
it only protects CBC modes. With AEAD ciphers (aes*-gcm@openssh.com,
chacha20-poly1305@openssh.com) and counter mode (aes*-ctr) there is no chained
IV to predict, and OpenSSH does not send them. On a bulk download the gateway
relays, it doubles the packets, encryptions and writes towards the client:
one empty packet per 32 KiB channel packet.

``skip_ignore_padding`` drops exactly that inserted packet on one connection,
when its send cipher is one of ``NO_PADDING_CIPHERS`` (an allow-list: CBC,
arcfour and any cipher asyncssh adds later keep the padding). It replaces the
connection's ``send_packet`` on that instance only, never asyncssh's class:
asyncssh inserts the packet by calling ``self.send_packet(MSG_IGNORE,
String(b''))`` from inside ``send_packet``, so the replacement knows an
empty ignore that comes while an outer call is running is the inserted one.
``MSG_IGNORE`` packets asyncssh or the gateway send on their own (an outer
call) are still sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from asyncssh.constants import MSG_IGNORE
from asyncssh.packet import String

NO_PADDING_CIPHERS = frozenset(
    {
        "aes128-gcm@openssh.com",
        "aes256-gcm@openssh.com",
        "chacha20-poly1305@openssh.com",
        "aes128-ctr",
        "aes192-ctr",
        "aes256-ctr",
    }
)
"""Send ciphers whose security does not rest on an unpredictable first
block, so the empty ignore buys nothing."""

_EMPTY = (String(b""),)


def skip_ignore_padding(conn: Any) -> None:
    """Stop ``conn`` (an asyncssh SSH connection, before its first packet)
    from inserting an empty ``MSG_IGNORE`` before each packet while its
    negotiated send cipher is in ``NO_PADDING_CIPHERS``."""
    send: Callable[..., None] = conn.send_packet  # the class's method, bound
    cipher_of = conn.get_extra_info
    depth = 0  # outer send_packet calls running (inner: the ignore, a rekey's KEXINIT)

    def send_packet(pkttype: int, *args: bytes, handler: Any = None) -> None:
        nonlocal depth
        if (
            depth
            and pkttype == MSG_IGNORE
            and args == _EMPTY
            # Read at each packet: a rekey may negotiate another cipher.
            and cipher_of("send_cipher") in NO_PADDING_CIPHERS
        ):
            return
        depth += 1
        try:
            send(pkttype, *args, handler=handler)
        finally:
            depth -= 1

    conn.send_packet = send_packet
