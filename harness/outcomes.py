"""Every outcome code the harness can report, with its meaning and typical cause, in one table.

Why one registry: a code is what a lab sorts last night's failures by, what
the JUnit message starts with (``FAIL [code]``), what the README's table
explains and what the variant matrix pins.  Kept as loose strings in several
places they drift apart (one string came to mean two things); here each code
is defined once, means one thing, and the README table is checked against
this module (``tests/verdict/test_outcomes.py``).  Adding a code is one entry
here plus the check that produces it and its test.

Codes compare equal to their strings (``Code.RESUMED == "resumed"``), so
records, JSON and scenario files keep using plain text.
"""

from __future__ import annotations

from enum import Enum


class Code(str, Enum):
    """An outcome code: the string, what it means, and the cause a firmware engineer checks first."""

    meaning: str
    cause: str
    found_by: str

    def __new__(cls, value: str, meaning: str, cause: str = "", found_by: str = "verdict") -> "Code":
        obj = str.__new__(cls, value)
        obj._value_ = value
        obj.meaning = meaning
        obj.cause = cause
        obj.found_by = found_by
        return obj

    # Plain text wherever a code is printed (f-strings, JSON, JUnit messages).
    __str__ = str.__str__
    __format__ = str.__format__

    # -- the central verdict, in the order its checks run ------------------------------
    RESUMED = ("resumed", "pass: the handshake resumed the newest session issued before the cut (for `resumed`, "
               "`connected` and `consistent`: any session)")
    NO_POWER_CUT = ("no-power-cut", "the scenario has no completed power cut to judge",
                    "a scenario without power_off/power_cycle before resumed_across_power_loss")
    POWER_NOT_CUT = ("power-not-cut", "the rail was still above the device's brown-out threshold when power "
                     "came back, or no reset was seen and the device resumed from RAM (the pass of "
                     "`power_not_cut`)", "off time shorter than the rail's discharge")
    NO_BOOT = ("no-boot", "power came back, but no boot banner / ready line (the engine finds it too, waiting for "
               "the device)", "crash or hang restoring flash")
    NEVER_CONNECTED = ("never-connected", "no handshake reached the server",
                       "network, device file address, firmware failed before ClientHello")
    HANDSHAKE_FAILED = ("handshake-failed", "the handshake to judge (the first after the cut or the connect) failed",
                        "certificate, version")
    NO_SESSION_BEFORE_CUT = ("no-session-before-cut", "no handshake completed before the power cut, so there "
                             "was no session to keep", "the scenario must connect before cutting power")
    NOTHING_OFFERED = ("nothing-offered", "full handshake, the device offered nothing; the message says whether "
                       "it ever printed \"session stored\", and when, against when the server sent the ticket",
                       "not stored (RAM only), stored before the TLS 1.3 ticket arrived, tickets never taken in, "
                       "ticket age from uptime, not restored")
    STALE_SESSION = ("stale-session", "resumed (or offered) an older session than the newest one issued",
                     "renewed tickets not stored")
    REFUSED = ("refused", "offered, refused by the server: `expired`, `rotated`, `foreign`, `version`, "
               "`tickets-off`, `unknown`; or recognised but unusable: `binder` (TLS 1.3), `finished` (TLS 1.2), "
               "`decrypt` (damaged ticket)", "server-side change while off, a ticket stored without its secret, "
               "a damaged record, or a session offered to the wrong server")
    NO_FALLBACK = ("no-fallback", "offered, refused, and the device gave up instead of doing a full handshake",
                   "missing fallback path")
    WRONG_VERSION = ("wrong-version", "a handshake in another TLS version than the step names, or a failed one "
                     "where the device never offered that version", "the shell ignored or misread the version "
                     "word (`firmware.version_tokens`), or the stack lacks it (`firmware.versions`)")
    # -- simpler expectations (expect_server: full, resumed, refused, ...) ---------------
    FULL = ("full", "pass: a full handshake where one is expected (`full`, `nothing_offered`, `connected`, "
            "`consistent`)")
    UNEXPECTED_RESUME = ("unexpected-resume", "resumed, or offered a session, where the scenario expects none",
                         "a stored session offered where it must not be (a damaged record trusted)")
    WRONG_REASON = ("wrong-reason", "the server refused the offer, but for another reason than expected",
                    "see the reason: the clock, the keys, the version")
    WRONG_MECHANISM = ("wrong-mechanism", "the handshake used another mechanism (full, ticket, session-id, psk) "
                       "than expected")
    CONNECT_FAILED = ("connect-failed", "the device reported a failed connection that reached the server",
                      "see the server's error and the console")
    NO_HANDSHAKE = ("no-handshake", "pass of `no_handshake`: nothing reached the server")
    UNEXPECTED_HANDSHAKE = ("unexpected-handshake", "a handshake reached the server where none was expected")
    # -- found by the engine before any verdict ----------------------------------------
    NOT_STORED = ("not-stored", "the device never printed its session_stored line", "session kept in RAM only",
                  "engine")
    CONSOLE_TIMEOUT = ("console-timeout", "an expected console line did not come", "", "engine")
    WRONG_RESET_CAUSE = ("wrong-reset-cause", "the device reset for another reason than the scenario expects",
                         "brown-out detector level, watchdog", "engine")
    TRIGGER_NOT_SEEN = ("trigger-not-seen", "the console line that should trigger a power cut never came (or "
                        "there was no session write to time)", "the firmware never wrote the session", "engine")
    FORBIDDEN_OUTPUT = ("forbidden-output", "the device printed a line the device file forbids (panic, assert)",
                        "firmware crash", "engine")
    DISCHARGE = ("discharge", "the rail did not discharge below `discharge_below` in time",
                 "a load that keeps the rail up, or a too low threshold", "engine")
    ERROR = ("error", "any other problem the engine met (the message says which)", "", "engine")
    # -- bench errors: the bench failed, not the device (a pytest error, never a failure) ------
    SUPPLY_UNREACHABLE = ("supply-unreachable", "the supply did not answer: connection refused or dropped, "
                          "VISA timeout", "LAN link, USB hub, the instrument's remote interface", "bench")
    SUPPLY_ERROR = ("supply-error", "the supply reported an error (its error queue's own text) or switched its "
                    "output off by itself", "OVP/OCP trip, a setting out of range for this model", "bench")
    CONSOLE_LOST = ("console-lost", "the console port vanished and did not come back (a device file with "
                    "`console.native_usb: true` makes this the device's `no-boot` instead)",
                    "USB hub, adapter cable, ser2net", "bench")
    SERVER_ERROR = ("server-error", "the reference server could not listen or stopped serving",
                    "its port is taken by another process", "bench")
    BENCH_START = ("bench-start", "the device file's `bench.start` command did not start, or exited during "
                   "the run", "see bench.log in the run directory", "bench")
    RIG_BUSY = ("rig-busy", "another run holds the rig's lock (the message names its pid, user, host and "
                "command); this run never drove it", "a colleague's run, or one still finishing; "
                "`--rig-wait SECONDS` waits", "bench")


#: the codes of :class:`harness.errors.BenchError`: counted apart, reported as pytest errors, retried
BENCH_CODES = frozenset(code for code in Code if code.found_by == "bench")


def is_bench(code: str) -> bool:
    """Whether ``code`` blames the bench rather than the device."""
    return code in BENCH_CODES


def lookup(code: str) -> Code:
    """The registry entry of a code string; an unknown one is a bug in the harness, not in the device."""
    return Code(code)


def markdown_table() -> str:
    """The README's table of codes (section "The verdict"), so the README is pasted, never edited by hand.

    ``tests/verdict/test_outcomes.py`` compares the README with this output;
    ``python -m harness.outcomes`` prints it.
    """
    rows = ["| code | meaning | typical cause | found by |", "|---|---|---|---|"]
    for code in Code:
        cells = [f"`{code.value}`", code.meaning, code.cause, code.found_by]
        rows.append("|" + "|".join(f" {cell} " if cell else " " for cell in cells) + "|")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
