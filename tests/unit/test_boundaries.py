"""Pure logic imports no Kafka, Faust or ClickHouse client (DESIGN.md §1, §3).

Every module under the pure packages is imported in a fresh interpreter, and the test fails if
that pulled in (or even tried to import) one of the forbidden client libraries. Modules are
discovered when the test runs, so new ones are covered without touching this file.

One subprocess per package imports all of its modules, recording per module what each import
newly loaded or attempted. When a package is not clean, each of its modules is re-imported in an
interpreter of its own so the report names exactly which modules are affected, and through which
chain of imports.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PURE_PACKAGES = (
    "pipeline.model",
    "pipeline.correlate",
    "pipeline.rules",
    "pipeline.integrity",
    "pipeline.sources",
    "pipeline.identity",
    "pipeline.report",
)
# Single modules held to the same rule: the public connector API (its run_connector imports Kafka
# only when called, so a connector's pure to_events can be imported and tested without it).
PURE_MODULES = ("pipeline.connect",)
FORBIDDEN = ("confluent_kafka", "aiokafka", "faust", "mode", "clickhouse_connect", "chdb", "kafka")

# Run as `python -c CHECKER PREFIX FORBIDDEN_JSON MODULE...`; prints
# {module: {"loaded": [...], "attempted": {forbidden: [importing modules...]}, "error": str | null}}.
CHECKER = r"""
import importlib, json, sys, traceback

prefix, forbidden, modules = sys.argv[1], set(json.loads(sys.argv[2])), sys.argv[3:]
attempts = {}

class Spy:
    # Sees every import of a module not yet loaded, whether or not it is installed.
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in forbidden and top not in attempts:
            chain, frame = [], sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if (mod == prefix or mod.startswith(prefix + ".")) and mod not in chain:
                    chain.append(mod)
                frame = frame.f_back
            attempts[top] = chain[::-1] + [name]
        return None

sys.meta_path.insert(0, Spy())

def loaded():
    return {name.partition(".")[0] for name in sys.modules} & forbidden

report = {}
for module in modules:
    before, attempts = loaded(), {}
    error = None
    try:
        importlib.import_module(module)
    except BaseException:
        error = traceback.format_exc(limit=-3)
    report[module] = {"loaded": sorted(loaded() - before), "attempted": attempts, "error": error}
print(json.dumps(report))
"""


def discover(package: str, root: Path = ROOT) -> list[str]:
    """Dotted names of every module and package under ``package`` (a directory below ``root``)."""
    base = root.joinpath(*package.split("."))
    if not base.is_dir():
        return []
    found = set()
    for path in base.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        if all(part.isidentifier() for part in parts):
            found.add(".".join(parts))
    return sorted(found)


def check(modules: list[str], *, root: Path = ROOT, prefix: str = "pipeline") -> dict[str, dict]:
    """Import ``modules`` in order in one fresh interpreter; what each import brought in."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", CHECKER, prefix, json.dumps(FORBIDDEN), *modules],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"import checker crashed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])


def violations(modules: list[str], *, root: Path = ROOT, prefix: str = "pipeline") -> dict[str, str]:
    """Offending modules, each with a one-line explanation; empty when all are clean."""
    shared = check(modules, root=root, prefix=prefix)
    if not any(r["loaded"] or r["attempted"] or r["error"] for r in shared.values()):
        return {}
    # Something is wrong: attribute exactly, one fresh interpreter per module (a module importing
    # an already-imported offender would look clean in the shared run).
    found = {}
    for module in modules:
        result = check([module], root=root, prefix=prefix)[module]
        if result["error"]:
            found[module] = f"cannot be imported, so its imports cannot be checked:\n{result['error']}"
        elif result["loaded"] or result["attempted"]:
            pulled = sorted(set(result["loaded"]) | set(result["attempted"]))
            chains = "; ".join(" -> ".join(chain) for chain in result["attempted"].values())
            found[module] = f"pulls in {', '.join(pulled)}" + (f" (via {chains})" if chains else "")
    return found


def test_model_package_is_discovered() -> None:
    modules = discover("pipeline.model")
    assert {"pipeline.model", "pipeline.model.event", "pipeline.model.codec"} <= set(modules)


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_package_imports_no_infrastructure_client(package: str) -> None:
    modules = discover(package)
    if not modules:
        pytest.skip(f"{package} has no modules yet")

    found = violations(modules)

    assert not found, f"{package} must stay free of {', '.join(FORBIDDEN)}:\n" + "\n".join(
        f"  {module}: {why}" for module, why in found.items()
    )


@pytest.mark.parametrize("module", PURE_MODULES)
def test_pure_module_imports_no_infrastructure_client(module: str) -> None:
    found = violations([module])
    assert not found, f"{module} must stay free of {', '.join(FORBIDDEN)}: {found}"


def test_checker_attributes_violations_per_module(tmp_path: Path) -> None:
    """The checker itself: stand-in forbidden packages and a fake pure package with clean,
    direct and indirect offenders, imported in an order that hides the indirect one in a
    shared interpreter."""
    (tmp_path / "faust").mkdir()
    (tmp_path / "faust" / "__init__.py").write_text("")
    (tmp_path / "chdb").mkdir()
    (tmp_path / "chdb" / "__init__.py").write_text("")
    pkg = tmp_path / "fakepure"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a_direct.py").write_text("import faust\n")
    (pkg / "b_clean.py").write_text("import json\n")
    (pkg / "c_indirect.py").write_text("from fakepure import a_direct\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "d_lazy_guarded.py").write_text(
        "try:\n    import kafka\nexcept ImportError:\n    kafka = None\n"
    )
    (pkg / "sub" / "e_chdb.py").write_text("from chdb import *  # noqa\n")
    (pkg / "README.txt").write_text("not a module")
    (pkg / "not-a-module.py").write_text("raise SystemExit('never imported')\n")

    modules = discover("fakepure", root=tmp_path)
    assert modules == [
        "fakepure",
        "fakepure.a_direct",
        "fakepure.b_clean",
        "fakepure.c_indirect",
        "fakepure.sub",
        "fakepure.sub.d_lazy_guarded",
        "fakepure.sub.e_chdb",
    ]

    shared = check(modules, root=tmp_path, prefix="fakepure")
    assert shared["fakepure.a_direct"]["loaded"] == ["faust"]
    assert shared["fakepure.c_indirect"]["loaded"] == []  # hidden: a_direct was imported first

    found = violations(modules, root=tmp_path, prefix="fakepure")
    assert set(found) == {
        "fakepure.a_direct",
        "fakepure.c_indirect",
        "fakepure.sub.d_lazy_guarded",
        "fakepure.sub.e_chdb",
    }
    assert found["fakepure.a_direct"].startswith("pulls in faust")
    assert "fakepure.c_indirect -> fakepure.a_direct -> faust" in found["fakepure.c_indirect"]
    # Not installed, but the attempt alone is a violation.
    assert found["fakepure.sub.d_lazy_guarded"].startswith("pulls in kafka")
    assert found["fakepure.sub.e_chdb"].startswith("pulls in chdb")


def test_checker_reports_modules_that_fail_to_import(tmp_path: Path) -> None:
    pkg = tmp_path / "brokenpure"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "broken.py").write_text("raise RuntimeError('half-written module')\n")

    found = violations(discover("brokenpure", root=tmp_path), root=tmp_path, prefix="brokenpure")

    assert list(found) == ["brokenpure.broken"]
    assert "half-written module" in found["brokenpure.broken"]
