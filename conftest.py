"""Wires the harness into pytest when it runs from this repository.

The plugin (:mod:`fixtures.plugin`) is normally loaded by the installed
package's ``pytest11`` entry point, before pytest parses the command line,
which is what makes ``--device PATH`` (with a space, any path) work and what
lets a lab repository with only device and scenario files run the harness
with no conftest of its own.  This file registers it only when that entry
point did not (a checkout used without ``pip install``), so the plugin is
never registered twice.
"""

import sys

if "fixtures.plugin" not in sys.modules:
    # Not even an empty list otherwise: pytest refuses pytest_plugins in a
    # conftest it meets during collection (``pytest --catalog`` from elsewhere).
    pytest_plugins = ["fixtures.plugin"]
