"""Wires the harness into pytest when it runs from this repository.

The plugin (:mod:`fixtures.plugin`) is normally loaded by the installed
package's ``pytest11`` entry point, before pytest parses the command line,
which is what makes ``--device PATH`` (with a space, any path) work and what
lets a lab repository with only device and scenario files run the harness
with no conftest of its own.  This file registers it only when that entry
point did not (a checkout used without ``pip install``), so the plugin is
never registered twice, and says so when the entry point loaded another
copy of the harness than this checkout (an old non-editable install).
"""

import sys
import warnings
from pathlib import Path

_loaded = sys.modules.get("fixtures.plugin")
if _loaded is None:
    # Not even an empty list otherwise: pytest refuses pytest_plugins in a
    # conftest it meets during collection (``pytest --catalog`` from elsewhere).
    pytest_plugins = ["fixtures.plugin"]
elif Path(__file__).resolve().parent not in Path(_loaded.__file__ or "").resolve().parents:
    warnings.warn(f"pytest runs the harness installed at {Path(_loaded.__file__).parent.parent}, not this "
                  f"checkout ({Path(__file__).resolve().parent}): pip install -e . here to test your changes",
                  stacklevel=1)
