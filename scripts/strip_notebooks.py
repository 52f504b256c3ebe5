"""Strip outputs and execution counts from notebooks, so git holds only their source.

Usage: python scripts/strip_notebooks.py NOTEBOOK [NOTEBOOK ...]   (exit 1 when a file was changed)
"""

from __future__ import annotations

import sys

import nbformat


def strip(path: str) -> bool:
    """Remove outputs from one notebook in place; return whether it changed."""
    notebook = nbformat.read(path, as_version=4)
    changed = False
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        nbformat.write(notebook, path)
    return changed


def main(paths: list[str]) -> int:
    """Strip every notebook named; exit 1 if any was changed (pre-commit then asks to re-add)."""
    if not paths or paths[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    changed = [path for path in paths if strip(path)]
    for path in changed:
        print(f"stripped outputs: {path}")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
