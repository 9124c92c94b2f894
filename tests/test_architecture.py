"""The layering of ARCHITECTURE.md holds: no module of tlearn imports itself back through others."""

from __future__ import annotations

import grimp


def test_no_import_circle_between_modules_even_through_imports_inside_functions() -> None:
    # Imports under `if TYPE_CHECKING:` never run (they serve annotations), so they cannot close a circle.
    graph = grimp.build_graph("tlearn", exclude_type_checking_imports=True)
    modules = sorted(m for m in graph.modules if m.startswith("tlearn"))
    edges = {m: {d for d in graph.find_modules_directly_imported_by(m) if d.startswith("tlearn")} for m in modules}
    circles = []
    for start in modules:  # a module that reaches itself again closes a circle
        seen, todo = set(), list(edges[start])
        while todo:
            m = todo.pop()
            if m == start:
                circles.append(start)
                break
            if m not in seen:
                seen.add(m)
                todo.extend(edges.get(m, ()))
    assert circles == [], f"import circles through: {circles}"
