"""The floor for an asyncssh relay: exec channels only, no auth, no policy,
no masking, no recording. Used by bench_ssh.py to separate what asyncssh
itself costs from what hoopd adds.

    python bench/ssh/bare_proxy.py LISTEN_PORT TARGET_PORT TARGET_KEY HOST_PUB
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncssh
import uvloop


class Up(asyncssh.SSHClientSession[bytes]):
    def __init__(self, down: Down) -> None:
        self.down = down
        self.status: int | None = None

    def data_received(self, data: bytes, datatype: Any) -> None:
        if datatype == asyncssh.EXTENDED_DATA_STDERR:
            self.down.chan.write_stderr(data)
        else:
            self.down.chan.write(data)

    def eof_received(self) -> bool:
        self.down.chan.write_eof()
        return True

    def exit_status_received(self, status: int) -> None:
        self.status = status

    def pause_writing(self) -> None:
        self.down.chan.pause_reading()

    def resume_writing(self) -> None:
        self.down.chan.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.down.chan.exit(self.status or 0)


class Down(asyncssh.SSHServerSession[bytes]):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.up_chan: Any = None
        self.command = ""
        self.pending: list[bytes] = []
        self.eof = False
        self.pty: dict[str, Any] = {}

    def connection_made(self, chan: Any) -> None:
        self.chan = chan

    def pty_requested(self, term_type: str, term_size: Any, term_modes: Any) -> bool:
        self.pty = {"term_type": term_type, "term_size": term_size, "term_modes": term_modes}
        return True

    def exec_requested(self, command: str) -> bool:
        self.command = command
        return True

    def session_started(self) -> None:
        self._task = asyncio.ensure_future(self.start())

    async def start(self) -> None:
        up = await self.server.upstream
        self.up_chan, _ = await up.create_session(
            lambda: Up(self), self.command, encoding=None, window=4 * 1024 * 1024, max_pktsize=256 * 1024,
            **(self.pty or {"request_pty": False}),
        )
        for data in self.pending:  # the one gotcha: input can arrive before upstream is open
            self.up_chan.write(data)
        if self.eof:
            self.up_chan.write_eof()

    def data_received(self, data: bytes, datatype: Any) -> None:
        if self.up_chan is None:
            self.pending.append(data)
        else:
            self.up_chan.write(data)

    def eof_received(self) -> bool:
        if self.up_chan is None:
            self.eof = True
        else:
            self.up_chan.write_eof()
        return True

    def pause_writing(self) -> None:
        self.up_chan.pause_reading()

    def resume_writing(self) -> None:
        self.up_chan.resume_reading()


class Server(asyncssh.SSHServer):
    def __init__(self, target: tuple[int, str, str]) -> None:
        self.target = target

    def begin_auth(self, username: str) -> bool:
        port, key, pub = self.target
        self.upstream = asyncio.ensure_future(asyncssh.connect(
            "127.0.0.1", port, username="root", client_keys=[key], config=None,
            known_hosts=([asyncssh.import_public_key(pub)], [], []), compression_algs=["none"],
            encryption_algs=["aes128-gcm@openssh.com"],
        ))
        return False

    def session_requested(self) -> Down:
        return Down(self)


async def main() -> None:
    listen, port, key, pub = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    await asyncssh.create_server(
        lambda: Server((port, key, pub)), "127.0.0.1", listen,
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        encoding=None, line_editor=False, config=None,
        encryption_algs=["aes128-gcm@openssh.com", "chacha20-poly1305@openssh.com"],
    )
    await asyncio.Event().wait()


if __name__ == "__main__":
    import logging
    if "-v" in sys.argv:
        sys.argv.remove("-v")
        logging.basicConfig(level=logging.INFO)
    uvloop.run(main())
