"""Which exec'd commands carry a file archive (and so must not be masked)."""

from __future__ import annotations

import pytest

from hoopd.transfer import is_tar_stream


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["tar", "cf", "-", "/tmp/x"], True),  # kubectl cp from a pod
        (["tar", "-xmf", "-", "-C", "/tmp"], True),  # kubectl cp to a pod
        (["/bin/tar", "--no-same-owner", "-xf", "-"], True),
        (["tar", "czf", "-", "dir"], True),
        (["tar", "cf", "out.tar", "dir"], False),  # the archive goes to a file
        (["tar", "-tf", "-"], False),  # listing: text out
        (["sh", "-c", "tar cf - x"], False),  # a shell: an ordinary exec
        (["tar"], False),
        (["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-", "-C", "/tmp"], True),
        # options that run a program: its output would pass as the archive
        (["tar", "cf", "-", "--use-compress-program=sh -c 'cat /secret'", "x"], False),
        (["tar", "-cIf", "-", "x"], False),
        (["tar", "cf", "-", "-I", "sh -c env", "x"], False),
        (["tar", "-xmf", "-", "--to-command=sh -c env"], False),
        (["tar", "cf", "-", "--checkpoint=1", "--checkpoint-action=exec=env", "x"], False),
        (["tar", "cIf", "prog", "-", "x"], False),
        ([], False),
    ],
)
def test_is_tar_stream(argv: list[str], expected: bool) -> None:
    assert is_tar_stream(argv) is expected
