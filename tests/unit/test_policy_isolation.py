"""The policy core must stay importable and testable without Faust or Kafka clients."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
POLICY_DIR = ROOT / "streams" / "policy"
FORBIDDEN = ("faust", "aiokafka", "mode", "kafka")

PROBE = """
import importlib, json, pkgutil, sys
import streams.policy
names = []
for info in pkgutil.walk_packages(streams.policy.__path__, "streams.policy."):
    importlib.import_module(info.name)
    names.append(info.name)
print(json.dumps({"imported": names, "modules": sorted(sys.modules)}))
"""


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_importing_policy_loads_no_stream_framework() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    expected = {f"streams.policy.{p.stem}" for p in POLICY_DIR.glob("*.py")} - {
        "streams.policy.__init__"
    }
    assert expected <= set(result["imported"])
    leaked = [m for m in result["modules"] if _forbidden(m)]
    assert leaked == []


def test_policy_sources_import_nothing_forbidden() -> None:
    # __main__.py is the CLI (python -m streams.policy), the shell around the core: it may talk
    # to Kafka, but only from inside functions, which the import probe above checks (importing
    # it loads no framework). No core module may import it.
    files = sorted(p for p in POLICY_DIR.glob("*.py") if p.name != "__main__.py")
    assert files
    for path in files:
        assert "__main__" not in path.read_text("utf-8"), path.name
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] if node.level == 0 else []
            else:
                continue
            bad = [n for n in names if _forbidden(n)]
            assert not bad, f"{path.name}:{node.lineno} imports {bad}"
            # Inside the core, only the core itself may be imported from `streams`.
            for n in names:
                if n == "streams" or n.startswith("streams."):
                    assert n.startswith("streams.policy"), f"{path.name}:{node.lineno} imports {n}"
