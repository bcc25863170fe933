"""Several rigs in one run: which device files, under which names, locked by which keys.

A rig is one bench a run drives: a device file, and for a bench the harness
starts itself (a device file with a ``bench:`` section, such as the
simulated bench) one *instance* of it.  Giving the same such file four times
means four independent benches, each started by its own worker; giving a
file with fixed resources (a real supply at one VISA address) twice would
drive one supply from two workers, and is refused.

Names: a file given once is its device file's ``name``; copies are
``name#1``, ``name#2``...  The name goes into every test id, result and
history line of a run with several rigs, so it must be stable from night
to night: it depends only on the command line, never on timing.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from . import devicefile
from .devicefile import DeviceSpec
from .errors import ConfigError, HarnessError

_MAGIC = set("*?[")


@dataclass(frozen=True)
class RigEntry:
    """One rig of the run: a device file's instance and the name it is reported under."""

    name: str
    path: Path
    spec: DeviceSpec
    #: 1-based among the copies of the same device file
    instance: int
    copies: int


def expand(args: Sequence[str], cwd: Path | None = None) -> list[Path]:
    """``--device`` values as files: each value is a path or a glob (``devices/rack-*.yaml``), in order given.

    A glob that matches nothing is an error, not an empty run: a nightly
    job whose rack files moved must say so, not pass with zero scenarios.
    """
    base = Path(cwd) if cwd is not None else Path.cwd()
    out: list[Path] = []
    for arg in args:
        if _MAGIC & set(arg):
            pattern = arg if os.path.isabs(arg) else str(base / arg)
            found = sorted(glob.glob(pattern))
            if not found:
                raise ConfigError("--device", None, None, f"{arg!r}: no device file matches")
            out.extend(Path(p) for p in found)
        else:
            out.append(Path(arg) if os.path.isabs(arg) else base / arg)
    return [p.resolve() for p in out]


def plan(paths: Sequence[Path], load: Callable[[Path], DeviceSpec] = devicefile.load) -> list[RigEntry]:
    """Name the rigs of ``paths`` (each file loaded once); refuse two workers on one fixed bench."""
    specs: dict[Path, DeviceSpec] = {}
    for path in paths:
        if path not in specs:
            specs[path] = load(path)
    copies = {p: sum(q == p for q in paths) for p in specs}
    for path, n in copies.items():
        spec = specs[path]
        if n > 1 and spec.bench is None:
            raise ConfigError(str(path), None, None, f"given {n} times with --device, but it describes one fixed "
                              f"bench (supply {spec.supply.resource}): give each rig its own device file")
    # A device name two different files share: each rig is called after its file instead.
    by_name: dict[str, set[Path]] = {}
    for path, spec in specs.items():
        by_name.setdefault(spec.name, set()).add(path)
    seen: dict[Path, int] = {}
    out: list[RigEntry] = []
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
        spec = specs[path]
        base = spec.name if len(by_name[spec.name]) == 1 else path.stem
        name = base if copies[path] == 1 else f"{base}#{seen[path]}"
        out.append(RigEntry(name=name, path=path, spec=spec, instance=seen[path], copies=copies[path]))
    # Two rigs of one run that drive the same thing would refuse each other (or worse, share it).
    holder: dict[str, str] = {}
    for rig in out:
        for key in lock_keys(rig, dict(rig.spec.variables)):
            if key in holder:
                raise ConfigError("--device", None, None, f"rigs {holder[key]} and {rig.name} both drive {key}: "
                                  "give each rig its own supply, console and place")
            holder[key] = rig.name
    names = [r.name for r in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("--device", None, None, f"several rigs would be reported as {', '.join(dupes)}: give "
                          "the device files different names")
    return out


def lock_keys(rig: RigEntry, values: dict[str, Any]) -> list[str]:
    """What a run must hold alone to drive ``rig``: the device file's instance, and each fixed resource.

    Resources the bench command announces (``{bench.supply}``) are new on
    every start and belong to that run alone; a fixed supply address, a
    console device and a labgrid place are shared things, so two device
    files that name the same one exclude each other too.
    """
    keys = [f"device:{rig.path}#{rig.instance}"]
    spec = rig.spec
    fixed = [("supply", spec.supply.resource, "supply.resource"), ("console", spec.console.url, "console.url")]
    for kind, template, where in fixed:
        if not template or "{bench." in template or template == devicefile.LABGRID_CONSOLE:
            continue            # announced per start, or the place's (locked below, and by labgrid itself)
        try:
            keys.append(f"{kind}:{devicefile.fill(template, values, where)}")
        except HarnessError:
            continue            # a placeholder only the run knows: the device file's key covers it
    place = getattr(spec, "labgrid", None)
    if place is not None:
        keys.append(f"labgrid:{place.coordinator}/{place.place}")
    return keys
