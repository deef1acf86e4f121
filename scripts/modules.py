#!/usr/bin/env python3
"""Prints which top-level modules of src/ import which (`crate::X` paths outside
comments), as ARCHITECTURE.md's module graph shows them, and fails when two of them
import each other through any path (a cycle).

    scripts/modules.py [--dot]

Exit status: 0 without cycles, 1 with (each cycle printed). Standard library only.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")


def graph():
    edges = {}
    for d, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            top = os.path.relpath(path, ROOT).split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue
            code = "\n".join(l for l in open(path) if not l.strip().startswith("//"))
            names = set(re.findall(r"crate::(\w+)", code))
            for group in re.findall(r"use crate::\{([^}]*)\}", code):
                names |= set(re.findall(r"(?:^|,)\s*(\w+)", group))
            edges.setdefault(top, set()).update(n for n in names if n != top)
    return edges


def cycles(edges):
    found = []
    def walk(node, stack):
        for nxt in sorted(edges.get(node, ())):
            if nxt in stack:
                cyc = stack[stack.index(nxt):] + [nxt]
                if sorted(cyc[:-1]) not in [sorted(c[:-1]) for c in found]:
                    found.append(cyc)
            elif nxt in edges:
                walk(nxt, stack + [nxt])
    for n in sorted(edges):
        walk(n, [n])
    return found


def main():
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph modules {")
        for k in sorted(edges):
            for v in sorted(edges[k]):
                print(f"  {k} -> {v};")
        print("}")
    else:
        for k in sorted(edges):
            print(f"{k:8} -> {', '.join(sorted(edges[k])) or '(nothing)'}")
    found = cycles(edges)
    for c in found:
        print("cycle: " + " -> ".join(c), file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
