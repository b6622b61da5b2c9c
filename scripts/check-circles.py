#!/usr/bin/env python3
"""Fails on an import circle between warren's modules (`make lint`).

Each `.rs` file under src/ is a module (`mod.rs` its folder's); its test files are left out,
and so is everything after a `#[cfg(test)] mod tests`. A module depends on each module that a
`crate::…`, `super::…` or `self::…` path in its code (comments left out) names, as far as the
path names a module. Dependencies between a module and one nested in it are Rust's own (a
child uses its parent's items, a parent declares its children) and do not count. Any strongly
connected group of two or more modules left is a circle: each is printed, and the exit status
is 1. A path through a re-export is counted as a dependency on the module that re-exports it.
"""

import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
PATH = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
GROUP = re.compile(r"use ((?:crate|super|self)(?:::\w+)*)::\{([^}]*)\}")
TESTS = re.compile(r"#\[cfg\(test\)\]\s*(?:#\[path[^\n]*\]\s*)?(?:pub(?:\([^)]*\))?\s+)?mod tests")


def modules():
    found = {}
    for folder, _, files in os.walk(SRC):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(folder, name)
            parts = os.path.relpath(path, SRC)[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            if parts and (parts[-1] == "tests" or parts[-1].endswith("_tests")):
                continue
            found[tuple(parts)] = path
    return found


def resolve(known, current, path):
    """The longest module that `path`, written in `current`, names."""
    parts = path.split("::")
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    else:
        base = list(current)
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    best = tuple(base) if tuple(base) in known else None
    for part in parts:
        base.append(part)
        if tuple(base) not in known:
            break
        best = tuple(base)
    return best


def dependencies(known):
    edges = {}
    for module, path in known.items():
        with open(path, encoding="utf-8") as f:
            code = re.sub(r"//[^\n]*", "", f.read())
        code = TESTS.split(code)[0]
        named = set(PATH.findall(code))
        for base, group in GROUP.findall(code):
            for item in group.split(","):
                head = item.strip().split("::")[0].split(" ")[0]
                if head and head != "self":
                    named.add(f"{base}::{head}")
        edges[module] = {
            target
            for target in (resolve(known, module, p) for p in named)
            if target is not None and not nested(module, target) and not nested(target, module)
        }
    return edges


def nested(outer, inner):
    return inner[: len(outer)] == outer


def circles(edges):
    """Tarjan's strongly connected components of two or more modules."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    sys.setrecursionlimit(10_000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def main():
    known = modules()
    found = circles(dependencies(known))
    for group in found:
        print("import circle: " + " -> ".join("::".join(m) or "crate" for m in group), file=sys.stderr)
    print(f"import circles: {len(found)} among {len(known)} modules")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
