#!/usr/bin/env python3
"""Check the package's import graph: layers, circles and imports inside functions.

    python3 scripts/check_imports.py          # prints the problems, exit code 1 if any
    python3 scripts/check_imports.py --graph  # also prints every module's imports

It reads the source (the AST of every ``mdistiller/**/*.py``), imports nothing, and checks:

* **layers**: a module imports only modules of its own layer or lower ones (:data:`LAYERS`,
  lowest first): the models, datasets and distillers never import the config loader, the
  engine or the CLI, and nothing imports the CLI;
* **circles**: no cycle between modules, a package's ``__init__`` counting as a module
  (``from . import x`` imports the package's ``__init__``, and importing ``a.b.c`` imports
  the packages ``a.b`` first);
* **no imports inside functions**, except of optional dependencies (:data:`OPTIONAL`), in a
  ``try:`` that handles ImportError, or marked ``# deferred: <why>`` on its line.
"""

import argparse
import ast
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "mdistiller"

#: layers, lowest first; a module belongs to the longest matching prefix
LAYERS = [
    ("mdistiller.utils",),
    ("mdistiller.config.defaults", "mdistiller.config"),  # the package __init__ imports only the defaults
    ("mdistiller.models", "mdistiller.dataset", "mdistiller.solver"),
    ("mdistiller.distillers",),
    ("mdistiller.config.load", "mdistiller.config.plugins"),
    ("mdistiller.runs", "mdistiller.export"),  # export: ships a run folder's student, never runs the loop
    ("mdistiller.engine",),
    ("mdistiller.tune",),  # search (optuna) and cluster launch (submitit), on the engine
    ("mdistiller.cli",),
]
#: the root package (its version and the OpenMP setting) may be imported from anywhere
ANYWHERE = {"mdistiller"}
#: third-party packages a function may import where it is used (not every user has them)
OPTIONAL = {"timm", "torchvision", "tensorboardX", "wandb", "safetensors", "numpy", "matplotlib", "onnx",
            "onnxruntime", "optuna", "submitit", "scipy", "torch._inductor", "PIL", "nvidia", "pynvml", "cpuinfo"}


def layer_of(module):
    best, rank = "", None
    for i, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > len(best):
                best, rank = p, i
    return rank


def modules(root=ROOT):
    """``{module name: (path, is_package)}`` of every source file of the package."""
    out = {}
    for dirpath, _, files in os.walk(os.path.join(root, PACKAGE)):
        for f in files:
            if f.endswith(".py"):
                rel = os.path.relpath(os.path.join(dirpath, f), root)[:-3].split(os.sep)
                pkg = rel[-1] == "__init__"
                out[".".join(rel[:-1] if pkg else rel)] = (os.path.join(dirpath, f), pkg)
    return out


def resolve(mods, current, is_pkg, node):
    """The package modules an import statement imports (targets, with their packages)."""
    base = current if is_pkg else current.rsplit(".", 1)[0]
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        if node.level:
            parts = base.split(".")
            parts = parts[:len(parts) - node.level + 1]
            prefix = ".".join(parts + ([node.module] if node.module else []))
        else:
            prefix = node.module
        names = [f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in mods else prefix for a in node.names]
    targets = set()
    for name in names:
        if not (name == PACKAGE or name.startswith(PACKAGE + ".")):
            continue
        while name not in mods and "." in name:
            name = name.rsplit(".", 1)[0]
        targets.add(name)
        parent = name
        while "." in parent:  # importing a.b.c imports a.b first (unless the importer is inside it)
            parent = parent.rsplit(".", 1)[0]
            if parent != PACKAGE and not (current == parent or current.startswith(parent + ".")):
                targets.add(parent)
    return targets


def _handles_import_error(handlers):
    for h in handlers:
        names = [h.type] if not isinstance(h.type, ast.Tuple) else list(h.type.elts)
        if any(isinstance(n, ast.Name) and n.id in ("ImportError", "ModuleNotFoundError") for n in names):
            return True
    return False


def function_imports(tree):
    """Import statements inside functions that are neither optional nor guarded."""
    found = []

    def visit(node, in_function, guarded):
        for child in ast.iter_child_nodes(node):
            fn = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            g = guarded or (isinstance(child, ast.Try) and _handles_import_error(child.handlers))
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)) and not guarded:
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else \
                    [child.module or ""] if not child.level else []
                if not names or not all(n.split(".")[0] in OPTIONAL or n in OPTIONAL or
                                        any(n.startswith(o + ".") for o in OPTIONAL) for n in names):
                    found.append(child)
            visit(child, fn, g)

    visit(tree, False, False)
    return found


def graph(root=ROOT):
    """``(edges, problems)``: ``edges[module]`` is the set of package modules it imports."""
    mods = modules(root)
    edges, problems = {}, []
    for name, (path, is_pkg) in sorted(mods.items()):
        with open(path) as f:
            source = f.read()
        tree = ast.parse(source, path)
        edges[name] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                edges[name] |= resolve(mods, name, is_pkg, node) - {name}
        rel = os.path.relpath(path, root)
        lines = source.splitlines()
        for node in function_imports(tree):
            if "# deferred:" in lines[node.lineno - 1]:
                continue
            problems.append(f"{rel}:{node.lineno}: import inside a function ({ast.unparse(node)})")
        mine = layer_of(name)
        for target in sorted(edges[name]):
            if target in ANYWHERE:
                continue
            theirs = layer_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{rel}: {name} (layer {mine}) imports {target} (layer {theirs}), a higher layer")
    return edges, problems + circles(edges)


def circles(edges):
    """One line per import cycle found (depth-first search)."""
    found, state, stack = [], {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                cycle = stack[stack.index(m):] + [m]
                found.append("import circle: " + " -> ".join(cycle))
            elif m not in state:
                visit(m)
        stack.pop()
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n)
    return found


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--graph", action="store_true", help="print every module's imports")
    p.add_argument("--root", default=ROOT, help="the repository root (default: this script's)")
    args = p.parse_args(argv)
    edges, problems = graph(args.root)
    if args.graph:
        for n in sorted(edges):
            print(f"{n} [layer {layer_of(n)}] -> {', '.join(sorted(edges[n])) or '-'}")
    for line in problems:
        print(line)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(problems)} problem(s)",
          file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
