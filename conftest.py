"""Wires the harness into pytest: fixtures, options and scenario-file collection.

Everything lives in :mod:`fixtures.plugin`; this file only registers it, so
the same plugin can be loaded by another project with ``-p fixtures.plugin``.
"""

pytest_plugins = ["fixtures.plugin"]
