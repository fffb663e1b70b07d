#!/usr/bin/env python3
"""File-level import circles inside each crate of the workspace.

Reads every `src/**/*.rs` of each crate, resolves its `use crate::…`, `use super::…` and
`crate::…`/`super::…` paths to the module file they name, and prints each strongly connected
component of more than one file, then each of more than one top-level module (`store` ↔
`limit`). Edges between a module and its own ancestors or descendants (a `mod.rs` and the
files under it) are ordinary in Rust and not counted: the circles that hurt run between
siblings or across modules.

Usage: scripts/import-cycles.py [crate_dir ...]   (default: every crate with a src/)
Exit status 1 when a circle is found.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = re.compile(r"\b(crate|super|self)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\b(crate|super|self)::\{([^;]*)\}", re.S)


def module_files(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    files = {}
    for dirpath, _, names in os.walk(src):
        for name in names:
            if not name.endswith(".rs"):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            files[tuple(rel)] = full
    return files


def module_of(path, files):
    """The longest module path prefix of `path` that is a file."""
    for n in range(len(path), -1, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return ()


def strip_tests(text):
    """Drops `#[cfg(test)] mod … { … }` blocks (test modules may import freely)."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i:m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def edges_of(module, text, files):
    text = strip_tests(re.sub(r"//[^\n]*", "", text))
    paths = []
    for m in USE_GROUP.finditer(text):
        for item in re.split(r"[,\s]+", m.group(2)):
            item = item.strip("{} ")
            if item and item != "self":
                paths.append((m.group(1), "::" + item.split("::{")[0]))
    paths += [(m.group(1), m.group(2)) for m in PATH.finditer(text)]
    # A file's module path: `super` from it is its parent (from mod.rs: its own parent too).
    out = set()
    for head, tail in paths:
        segs = [s for s in tail.split("::") if s]
        if head == "crate":
            target = segs
        elif head == "self":
            target = list(module) + segs
        else:
            base = list(module)
            while segs and segs[0] == "super":
                segs = segs[1:]
                base = base[:-1]
            target = base[:-1] + segs
        found = module_of(target, files)
        if found != module:
            out.add(found)
    return out


def sccs(graph):
    index, low, stack, on, result = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            result.append(comp)

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return result


def check(crate):
    src = os.path.join(crate, "src")
    files = module_files(src)
    graph = {}
    for module, path in files.items():
        with open(path, encoding="utf-8") as f:
            targets = edges_of(module, f.read(), files)
        graph[module] = {
            t for t in targets if t[: len(module)] != module and module[: len(t)] != t
        }
    circles = [sorted(c) for c in sccs(graph) if len(c) > 1]
    name = os.path.relpath(crate, ROOT)
    for circle in circles:
        names = [os.path.relpath(files[m], ROOT) for m in circle]
        print(f"{name}: circle of {len(names)} files: " + ", ".join(names))
    # The same between top-level modules (a directory module counts as one).
    top = {}
    for module, targets in graph.items():
        if module:
            top.setdefault(module[0], set()).update(t[0] for t in targets if t and t[0] != module[0])
    modules = [sorted(c) for c in sccs(top) if len(c) > 1]
    for circle in modules:
        print(f"{name}: circle of {len(circle)} modules: " + ", ".join(circle))
    return len(circles) + len(modules)


def main():
    crates = sys.argv[1:] or sorted(
        dirpath
        for dirpath, dirs, names in os.walk(ROOT)
        if "Cargo.toml" in names and "src" in dirs
        and not any(part in ("target", "fuzz") or part.startswith(".")
                    for part in os.path.relpath(dirpath, ROOT).split(os.sep))
    )
    found = sum(check(os.path.abspath(c)) for c in crates)
    if found:
        print(f"{found} import circle(s)")
        return 1
    print("no import circles")
    return 0


if __name__ == "__main__":
    sys.exit(main())
