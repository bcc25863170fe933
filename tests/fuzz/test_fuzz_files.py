"""Fuzzed user files: every scenario file, device file and supply dialect gets a clear answer.

Issue 13, item 3.  Generated and mutated files of each kind (see
``fuzzdocs.py``: shipped files broken one way or three, shipped files with one
value at its edge, hostile YAML snippets, random documents, random bytes) go
through the real loader and what a run calls next (``Scenario.expand`` and
parameter filling, template filling, command rendering), in a worker process
with a time and memory bound (see ``fuzzkit.py`` for why a process).  Every
example must be accepted, or refused with a ``ConfigError`` whose text is
``file:line: key: message`` (line and key where the error has them, the line
a line of the file, the key named, the message short and in the file's
words); a traceback, a hang or an accepted NaN fails.

The figures, counted as the examples run, are printed at the end::

    fuzzed files: scenario 1000 cases, device 1000, dialect 1000: 0 tracebacks, 0 hangs

CI form (what ``pytest tests`` runs): profile ``ci``, derandomized (the same
examples every run for the same tree), no example database, 1,000 examples
per kind, about a minute on a busy 2-core machine.

Longer runs on demand::

    HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/fuzz -q
        # new random examples every run, 20,000 per kind (about 20 minutes),
        # failures kept in runs/fuzz-examples and replayed first next time
    TLS_HIL_FUZZ_EXAMPLES=5000 .venv/bin/pytest tests/fuzz -q
        # any number per kind, with either profile
    TLS_HIL_FUZZ_TIMEOUT=20 ...
        # seconds one file may take before it counts as a hang (default 5)
    TLS_HIL_FUZZ_HARNESS=/tmp/copy ...
        # load a copy of harness/ with a bug planted: proves the tests can fail

A failure prints the smallest file found and a ``@reproduce_failure`` blob;
put the file in ``test_regressions.py`` once the loader is fixed.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzdocs import FAMILIES
from fuzzkit import KINDS, PER_KIND, Tally, Worker, fuzz_settings, judge

#: a long run takes as long as it is asked to: a second per example is far more than one needs
pytestmark = pytest.mark.timeout(max(900, PER_KIND))

#: each family's share of a kind's examples: mutations of shipped files reach deepest
SHARES = {"mutated": 0.3, "edge": 0.2, "payload": 0.2, "random_yaml": 0.15, "random_bytes": 0.15}


def _check(worker: Worker, tally: Tally, kind: str, data: bytes) -> None:
    judge(kind, data, worker.run(kind, data), tally)


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(SHARES["mutated"])
@given(data=st.data())
def test_mutated_shipped_files(fuzz_worker: Worker, fuzz_tally: Tally, kind: str, data: st.DataObject) -> None:
    """A shipped file with one to three things broken is accepted or refused clearly."""
    _check(fuzz_worker, fuzz_tally, kind, data.draw(FAMILIES["mutated"](kind), label="file"))


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(SHARES["edge"])
@given(data=st.data())
def test_one_value_at_its_edge(fuzz_worker: Worker, fuzz_tally: Tally, kind: str, data: st.DataObject) -> None:
    """A shipped file with one number, string or list at its edge: refused, or accepted with no NaN."""
    _check(fuzz_worker, fuzz_tally, kind, data.draw(FAMILIES["edge"](kind), label="file"))


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(SHARES["payload"])
@given(data=st.data())
def test_hostile_yaml_in_shipped_files(fuzz_worker: Worker, fuzz_tally: Tally, kind: str,
                                       data: st.DataObject) -> None:
    """Alias bombs, deep nesting, bad tags, huge numbers in a real file: refused, in bounded time."""
    _check(fuzz_worker, fuzz_tally, kind, data.draw(FAMILIES["payload"](kind), label="file"))


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(SHARES["random_yaml"])
@given(data=st.data())
def test_random_documents(fuzz_worker: Worker, fuzz_tally: Tally, kind: str, data: st.DataObject) -> None:
    """Random documents of the kind's own keys and any values."""
    _check(fuzz_worker, fuzz_tally, kind, data.draw(FAMILIES["random_yaml"](kind), label="file"))


@pytest.mark.parametrize("kind", KINDS)
@fuzz_settings(SHARES["random_bytes"])
@given(data=st.data())
def test_random_bytes(fuzz_worker: Worker, fuzz_tally: Tally, kind: str, data: st.DataObject) -> None:
    """Noise, and shipped files cut short and continued with noise."""
    _check(fuzz_worker, fuzz_tally, kind, data.draw(FAMILIES["random_bytes"](kind), label="file"))


@pytest.mark.parametrize("kind", KINDS)
def test_every_shipped_file_is_accepted(fuzz_worker: Worker, kind: str) -> None:
    """The starting points are good files: the judge must not refuse what the product ships."""
    from fuzzdocs import seeds

    for name, text in seeds(kind):
        result = fuzz_worker.run(kind, text.encode("utf-8"))
        assert result["outcome"] == "accepted", (name, result)
