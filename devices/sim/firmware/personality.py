"""Personalities: the habits of a firmware that are not bugs.

Why: the emulated firmware is one device among many (DESIGN.md principle 7).
Real firmware speaks MQTT or HTTP after the handshake, spells TLS versions
its own way (and silently negotiates whatever it likes when it does not
understand the word), supports only TLS 1.2, or has no shell at all and
connects by itself.  A personality is orthogonal to the *variant* (the
deliberate bugs of :mod:`variants`): every bug combines with every habit.

This module holds the data and the parsing of the options; the behaviour
lives where it belongs (:mod:`appproto`, :mod:`style`, :mod:`shell`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .appproto import APPS
from .tlsclient import VERSIONS

log = logging.getLogger(__name__)

CANONICAL = ("tls1.2", "tls1.3", "auto")
STACK_VERSIONS = ("tls1.2", "tls1.3")
DEFAULT_TOKENS = "tls1.2=tls1.2,tls1.3=tls1.3,auto=auto"
_CODES = {"tls1.2": (3, 3), "tls1.3": (3, 4)}

Range = tuple[tuple[int, int], tuple[int, int]]


class UsageError(ValueError):
    """A connect command the shell cannot parse (the message is the console text)."""


def parse_tokens(spec: str) -> dict[str, str]:
    """``"tls1.2=1.2,tls1.3=1.3,auto=any"`` -> ``{"1.2": "tls1.2", "1.3": "tls1.3", "any": "auto"}``.

    The map goes from the word the shell accepts to what it means.  An
    empty word (``auto=``) means the version word may be left out and then
    means that version.  A version not named cannot be asked for by word.
    """
    words: dict[str, str] = {}
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, word = item.partition("=")
        key, word = key.strip(), word.strip()
        if not sep or key not in CANONICAL:
            raise ValueError(f"bad version token {item!r}: expected VERSION=WORD with VERSION one of "
                             f"{', '.join(CANONICAL)}")
        if any(ch.isspace() for ch in word):
            raise ValueError(f"bad version token {item!r}: the word may not contain spaces")
        if word in words and words[word] != key:
            raise ValueError(f"version word {word!r} given for both {words[word]} and {key}")
        words[word] = key
    if not words:
        raise ValueError("no version tokens given")
    return words


def parse_versions(spec: str) -> tuple[str, ...]:
    """``"tls1.2,tls1.3"`` -> the versions the TLS stack implements."""
    out = tuple(dict.fromkeys(v.strip() for v in spec.split(",") if v.strip()))
    bad = [v for v in out if v not in STACK_VERSIONS]
    if bad or not out:
        raise ValueError(f"bad --versions {spec!r}: expected a comma list of {', '.join(STACK_VERSIONS)}")
    return out


@dataclass(frozen=True)
class Target:
    """Where an autoconnecting firmware connects: ``HOST:PORT[:SERVERNAME]``."""

    host: str
    port: int
    name: str

    @classmethod
    def parse(cls, spec: str) -> "Target":
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0]:
            raise ValueError(f"bad autoconnect target {spec!r}: expected HOST:PORT[:SERVERNAME]")
        try:
            port = int(parts[1])
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            raise ValueError(f"bad autoconnect port {parts[1]!r} in {spec!r}") from None
        name = parts[2] if len(parts) == 3 and parts[2] else parts[0]
        return cls(parts[0], port, name)


@dataclass(frozen=True)
class Personality:
    """Habits of one firmware build; the defaults are the emulated firmware as it always was."""

    app: str = "line"
    hold_s: float = 0.0
    tokens: dict[str, str] = field(default_factory=lambda: parse_tokens(DEFAULT_TOKENS))
    unknown_version: str = "reject"   # reject | auto (the silent real-world habit)
    versions: tuple[str, ...] = STACK_VERSIONS
    autoconnect: Target | None = None
    autoconnect_retry_s: float = 0.0
    client_id: str = "simfw"

    def __post_init__(self) -> None:
        if self.app not in APPS:
            raise ValueError(f"unknown application protocol {self.app!r} (known: {', '.join(APPS)})")
        if self.unknown_version not in ("reject", "auto"):
            raise ValueError(f"unknown --unknown-version {self.unknown_version!r} (reject, auto)")
        if self.hold_s < 0 or self.autoconnect_retry_s < 0:
            raise ValueError("--hold and --autoconnect-retry must be >= 0")

    # ----------------------------------------------------------- version words
    @property
    def version_words(self) -> list[str]:
        """The words the connect command takes, for help and usage lines."""
        return [w for w in self.tokens if w]

    @property
    def omitted(self) -> str:
        """What a connect command without a version word asks for."""
        return self.tokens.get("", "auto")

    def connect_usage(self) -> str:
        return f"connect <host> <port> [{'|'.join(self.version_words)}] [<server-name>]"

    def split_connect_args(self, host: str, rest: list[str]) -> tuple[str, str]:
        """The words after ``<host> <port>`` -> (canonical version, server name).

        A word the shell does not know is either refused (``reject``, the
        emulated firmware's own habit) or silently taken as ``auto``: the
        habit that once let a harness send ``tls1.2`` to a shell taking
        ``1.2`` and pass a cell on a TLS 1.3 handshake.  When the version
        word may be omitted (an empty token), a single unknown word is the
        server name.
        """
        if not rest:
            return self.omitted, host
        word = rest[0]
        if word in self.tokens:
            return self.tokens[word], rest[1] if len(rest) > 1 else host
        if len(rest) == 1 and "" in self.tokens:
            return self.omitted, word
        name = rest[1] if len(rest) > 1 else host
        if self.unknown_version == "auto":
            log.info("connect: unknown version word %r taken as auto", word)
            return "auto", name
        raise UsageError(f"connect failed: unknown TLS version {word!r} ({', '.join(self.version_words)})")

    def offer_range(self, version: str) -> Range:
        """The ClientHello version range for an asked version, within what the stack supports.

        Asked for a version the stack lacks, it offers what it has: it
        negotiates another version than asked (or fails), as real stacks do.
        """
        lo, hi = VERSIONS[version]
        wanted = [v for v in self.versions if lo <= _CODES[v] <= hi]
        if not wanted:
            log.info("connect: %s asked, stack supports only %s: offering that", version, ",".join(self.versions))
            wanted = list(self.versions)
        codes = sorted(_CODES[v] for v in wanted)
        return codes[0], codes[-1]
