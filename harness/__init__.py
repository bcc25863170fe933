"""Hardware-in-the-loop harness for TLS session resumption across power loss.

The library knows nothing of pytest: every module here can be driven from a
script, a REPL or another runner.  pytest glue lives in ``fixtures/``.
"""

__version__ = "0.1.0"
