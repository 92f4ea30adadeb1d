"""The launcher's session secrets reach the session process: it is started with `--authKey SECRET` as two
arguments, and argparse takes a value that begins with '-' for an option ("argument --authKey: expected one
argument"), so a URL-safe secret (1 in 64 begins with '-') failed one session start in 64 (seen twice in about
40 browser-test sessions)."""

from __future__ import annotations

import wslink.launcher

from DFM50NLib.web import launcher


def test_session_secrets_are_random_long_and_never_read_as_an_option():
    launcher._replace_wslink_choices()
    secrets = [wslink.launcher.generatePassword() for _ in range(2000)]
    assert len(set(secrets)) == len(secrets)
    assert min(len(s) for s in secrets) >= 40
    assert not [s for s in secrets if s.startswith("-")]  # a URL-safe secret would fail here about 31 times
