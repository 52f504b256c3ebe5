"""The architecture holds: the import contracts of pyproject.toml, no import cycle, every metric documented.

The contracts (``[tool.importlinter]``) say which package may import which: the command line on top, the
components apart from each other, then ``serving``, then ``model``. grimp (import-linter's own graph) then
looks for any cycle between two modules, across packages too; function-level imports count.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys

import grimp
from prometheus_client.metrics import MetricWrapperBase

from tests.conftest import ROOT

PACKAGES = ("model", "serving", "predictor", "transformer", "detector", "housing", "monitoring")
MONITORING_DOC = ROOT / "docs" / "monitoring.md"


def _graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, include_external_packages=True, cache_dir=None)


def test_import_contracts_hold() -> None:
    run = (
        "import sys; from importlinter.cli import lint_imports_command; "
        "sys.argv[1:] = ['--no-cache']; lint_imports_command()"
    )
    result = subprocess.run([sys.executable, "-c", run], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_import_cycle_between_modules() -> None:
    graph = _graph()
    modules = {module for module in graph.modules if module.split(".")[0] in PACKAGES}
    cycles = []
    for importer in sorted(modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer) & modules):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.append(" -> ".join((importer, *back)))
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def _metrics_in_code() -> dict[str, tuple[str, frozenset[str]]]:
    """Every ``housing_*`` metric the project defines: exposed name -> (type, label names)."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    defining = sorted(_graph().find_modules_that_directly_import("prometheus_client"))
    for name in defining:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase) and value._name.startswith("housing_"):
                exposed = value._name + ("_total" if value._type == "counter" else "")
                found[exposed] = (value._type, frozenset(value._labelnames))
    return found


def _metrics_in_docs() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/monitoring.md's metric tables, name -> (type, labels): rows ``| `name` | type | labels |``."""
    section = MONITORING_DOC.read_text().split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented: dict[str, tuple[str, frozenset[str]]] = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        names = re.findall(r"`(housing_\w+)`", cells[0]) if len(cells) >= 4 else []
        for name in names:
            documented[name] = (cells[1].split()[0], frozenset(re.findall(r"\w+", cells[2])))
    return documented


def test_monitoring_docs_list_every_housing_metric_with_its_labels() -> None:
    in_code, in_docs = _metrics_in_code(), _metrics_in_docs()
    assert in_code, "no housing_* metric found"
    assert sorted(in_docs) == sorted(in_code), (
        f"undocumented: {sorted(set(in_code) - set(in_docs))}; "
        f"documented but not defined: {sorted(set(in_docs) - set(in_code))}"
    )
    differ = {name: (in_docs[name], in_code[name]) for name in in_code if in_docs[name] != in_code[name]}
    assert not differ, f"docs/monitoring.md (type, labels) against the code: {differ}"
