"""Child process for the kill -9 test: records forever until killed.

Prints the number of frames the observer reported written, so the parent
knows how much must survive the kill."""

from __future__ import annotations

import sys
from pathlib import Path

from hoopd.model import Output, Stream
from recorder.writer import Recorder, RecorderSettings
from tests.recorder.helpers import KEY


class Progress:
    def __init__(self) -> None:
        self.frames = 0

    def frames_written(self, count: int, nbytes: int) -> None:
        self.frames += count
        print(self.frames, flush=True)

    def write_failed(self, reason: str) -> None:
        pass

    def recovered(self) -> None:
        pass


def main() -> None:
    directory = Path(sys.argv[1])
    settings = RecorderSettings(dir=directory, rotate_bytes=20_000, checkpoint_frames=50,
                                fsync="never")
    rec = Recorder(settings, KEY, Progress())
    rec.start()
    sess = rec.open_session("crash")
    i = 0
    while True:
        i += 1
        sess.write(Output(Stream.STDOUT, f"{i}:".encode() + b"x" * (i % 300)))
        if sess.congested:
            import time

            time.sleep(0.001)


if __name__ == "__main__":
    main()
