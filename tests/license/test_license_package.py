"""Package-level promises: no server dependencies, a README example that runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "license" / "README.md"


def test_importing_the_library_pulls_in_no_server_dependencies() -> None:
    # A fresh interpreter, so modules imported by other tests do not count.
    code = (
        "import sys, tenantry.license\n"
        "server = {'kopf', 'fastapi', 'starlette', 'sqlalchemy', 'kubernetes', 'lightkube',"
        " 'psycopg', 'redis', 'uvicorn', 'tenantry.operator', 'tenantry.api'}\n"
        "print(sorted(m for m in sys.modules if m in server or m.split('.')[0] in server))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_readme_example_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {})  # noqa: S102
