"""The scenario catalog shipped with the harness.

A package only so that ``pip install`` carries the scenario files along and
``pytest --catalog`` finds them from any working directory; pytest collects
the YAML files in this folder as tests.
"""
