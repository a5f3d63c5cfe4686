"""Runs the Argo CD health check manifests/argocd/health.lua (the one script that
manifests/argocd/argocd-cm.yaml ships under every kind's key) with a real Lua interpreter,
the way Argo CD runs it: `obj` is the whole object, `kind` included, as a Lua table, the
script returns `{status = ..., message = ...}`, and only the base, string, table and
math libraries are there (Argo CD opens no io or os)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "manifests/argocd/health.lua"
SNIPPET = REPO / "manifests/argocd/argocd-cm.yaml"
KEY_PREFIX = "resource.customizations.health.tenantry.io_"
STATUSES = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}

_DRIVER = """
local env = {
  obj = %(obj)s,
  ipairs = ipairs, pairs = pairs, next = next, type = type, select = select,
  tostring = tostring, tonumber = tonumber, error = error, assert = assert, pcall = pcall,
  string = string, table = table, math = math,
}
local check = assert(load(%(script)s, "=%(name)s", "t", env))
local hs = check()
io.write(tostring(hs.status), "\\n", tostring(hs.message))
"""


def interpreter() -> str:
    found = shutil.which("lua5.4") or shutil.which("lua5.3")
    assert found, "no Lua interpreter: run hack/install-deps.sh (Debian package lua5.4)"
    return found


def scripts() -> dict[str, str]:
    """The health check under each kind's key, as the shipped argocd-cm snippet holds it."""
    data = yaml.safe_load(SNIPPET.read_text())["data"]
    return {key.removeprefix(KEY_PREFIX): text for key, text in data.items()}


def lua_string(text: str) -> str:
    """A Lua string literal of `text`: printable ASCII as is, every other byte `\\ddd`."""
    out = []
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\' or not (32 <= byte < 127):
            out.append(f"\\{byte:03d}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def lua_value(value: Any) -> str:
    """A JSON-shaped value as a Lua literal, as Argo CD converts an object: maps are
    tables by key, lists are sequences, nulls are absent."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, list):
        return "{" + ", ".join(lua_value(item) for item in value) + "}"
    if isinstance(value, dict):
        entries = [
            f"[{lua_string(str(key))}] = {lua_value(item)}"
            for key, item in value.items()
            if item is not None
        ]
        return "{" + ", ".join(entries) + "}"
    raise TypeError(f"no Lua literal for {value!r} (a float has no place in a resource)")


def health(kind: str, obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) as Argo CD would show them for `obj`, a `kind`."""
    # The script branches on obj.kind, which Argo CD always passes: an object without it
    # would silently skip the kind's own rules.
    assert obj.get("kind") == kind, f"the object is a {obj.get('kind')!r}, not a {kind}"
    driver = _DRIVER % {
        "obj": lua_value(obj),
        "script": lua_string(SCRIPT.read_text()),
        "name": SCRIPT.name,
    }
    done = subprocess.run(
        [interpreter(), "-"], input=driver, capture_output=True, text=True, timeout=10, check=False
    )
    assert done.returncode == 0, f"the {kind} health check failed: {done.stderr}"
    status, _, message = done.stdout.partition("\n")
    assert status in STATUSES, f"the {kind} health check returned status {status!r}"
    return status, message
