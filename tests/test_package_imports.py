"""The package's import graph: no cycle, and no arrow back up the rooms, lazy imports included.

Every `import` statement of every module counts, wherever it stands (a function body too).
Rooms are the package's folders and top-level modules, in the order they may import one
another: a room imports only rooms before it in ROOMS. Encoder families (the folders under
keras_bat/models/) import no other family.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "keras_bat"
ROOMS = ("errors", "registry", "stderr_filter", "runtime", "ops", "convert", "layers", "training", "data", "heads",
         "models", "workflows", "export", "hear", "keras_bat", "cli", "__main__")
FAMILIES = tuple(sorted(folder.name for folder in (PACKAGE / "models").iterdir() if (folder / "__init__.py").is_file()))


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name):
    relative = Path(*name.split("."))
    return (PACKAGE.parent / relative.with_suffix(".py")).is_file() or (PACKAGE.parent / relative).is_dir()


def imported_modules(path):
    """The keras_bat modules a file imports (`from a.b import c` names `a.b.c` where that is a module)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return {m for m in found if m == "keras_bat" or m.startswith("keras_bat.")}


def import_graph():
    return {module_name(path): imported_modules(path) for path in sorted(PACKAGE.rglob("*.py"))}


def room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "keras_bat"


def family(module):
    parts = module.split(".")
    return parts[2] if len(parts) > 3 and parts[1] == "models" and parts[2] in FAMILIES else None


def test_every_room_is_ordered():
    rooms = {room(module) for module in import_graph()}
    assert rooms == set(ROOMS), f"rooms missing from ROOMS: {rooms - set(ROOMS)}; gone: {set(ROOMS) - rooms}"


def test_no_import_runs_back_up_the_rooms():
    upward = sorted(f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
                    if ROOMS.index(room(target)) > ROOMS.index(room(module)))
    assert not upward, "imports against the room order " + " < ".join(ROOMS) + ":\n  " + "\n  ".join(upward)


def test_encoder_families_do_not_import_each_other():
    crossing = sorted(f"{module} -> {target}" for module, targets in import_graph().items() for target in targets
                      if family(module) and family(target) and family(module) != family(target))
    assert not crossing, "\n".join(crossing)


def find_cycle(graph):
    """A cycle of `graph` as a list of modules, or `None`."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[module] = "done"
        stack.pop()
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_checks_see_lazy_imports_and_cycles():
    graph = import_graph()
    # A lazy import in a function body counts (the HEAR module loads models inside functions).
    assert "keras_bat.models.presets" in graph["keras_bat.hear"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
