"""The start-up self-check as a plain function: what it proves and on which code."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.server import ServerConfig, certs, handshake
from harness.server.clienthello import NEW_SESSION_TICKET, ParseError
from harness.server.selfcheck import selfcheck


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return certs.generate(tmp_path_factory.mktemp("pki"))


def test_passes_without_a_server_whatever_the_knobs(paths):
    # Tickets off, one version, client certificates: the check still proves both versions.
    selfcheck(paths, ServerConfig(tickets=False, versions=("TLSv1.3",), client_cert=True))


def test_fails_when_the_callback_no_longer_shows_tickets(paths):
    def no_tickets(obj, direction, version, content_type, msg_type, data):
        if msg_type != NEW_SESSION_TICKET:
            handshake.stash_message(obj, direction, version, content_type, msg_type, data)

    with pytest.raises(HarnessError, match=r"self-check failed: a TLSv1\.2 handshake issued tickets \[\]"):
        selfcheck(paths, ServerConfig(), no_tickets)


def test_fails_when_the_servers_ticket_parsing_breaks(paths, monkeypatch):
    """The check parses tickets with the server's own code, not a copy that could still pass."""

    def broken(data, tls13):
        raise ParseError("broken on purpose")

    monkeypatch.setattr(handshake, "parse_new_session_ticket", broken)
    with pytest.raises(HarnessError, match="no longer shows NewSessionTicket messages"):
        selfcheck(paths, ServerConfig())
