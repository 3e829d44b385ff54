"""Size of the training loop: ``rankcse/train.py`` lines, the ``Trainer`` class's lines and methods, and its longest method.

Lines are source lines from a definition's first line (decorators included) to its last, as :mod:`ast` reports them.

    python bench/trainer_size.py
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

TRAIN = Path(__file__).resolve().parent.parent / "rankcse" / "train.py"


def _span(node: ast.AST) -> int:
    first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])  # type: ignore[attr-defined]
    return node.end_lineno - first + 1  # type: ignore[attr-defined]


def main() -> int:
    source = TRAIN.read_text()
    tree = ast.parse(source)
    trainer = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer")
    methods = [n for n in trainer.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    longest = max(methods, key=_span)
    print(f"rankcse/train.py: {len(source.splitlines())} lines")
    print(f"Trainer: {_span(trainer)} lines, {len(methods)} methods, longest {longest.name} ({_span(longest)} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
