#!/usr/bin/env python3
"""Checks that every crate of the workspace is layered one way and cut into readable pieces.

For each crate (a directory with a Cargo.toml and a src/ under crates/, or the ones named on
the command line) it reports:

- import cycles: strongly connected components of more than one file in the graph of its
  modules. A module is a file (`mod.rs`, `lib.rs` and `main.rs` stand for their directory's
  module); a file depends on the modules its `crate::…` and `super::…` paths (in `use`
  statements or inline) name, each path resolved to the longest module prefix that is a file.
  A directory module's references to its own children (re-exports, `child::x`) are not edges:
  the children build on it, so the parent is their shared base and their façade.
- every `.rs` file longer than MAX_FILE_LINES lines, not counting inline test modules;
- every `fn` longer than MAX_FN_LINES lines, from the `fn` line to its closing brace.

Tests are left out: files named `tests.rs` or `*_tests.rs`, modules declared `#[cfg(test)]`
(files and inline blocks), and everything below them. Comments, strings and character literals
are blanked before any of this, so a path in a doc comment is no dependency and a brace in a
string closes nothing.

Exits 1 when it reports anything, 0 when the workspace is clean. Python 3 standard library only.
"""

import re
import sys
from pathlib import Path

MAX_FILE_LINES = 800
MAX_FN_LINES = 120


def blank(src):
    """`src` with the insides of comments, strings and char literals replaced by spaces
    (newlines kept), so offsets and line numbers stay those of the original."""
    out = list(src)
    n = len(src)
    i = 0

    def wipe(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            wipe(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            wipe(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            close = '"' + m.group(1)
            j = src.find(close, m.end())
            j = n if j < 0 else j + len(close)
            wipe(m.end(), j - len(close))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            wipe(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}', '\''), else a lifetime or a label.
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\x[0-9a-fA-F]{2}|\\.|[^\\'\n])'").match(src, i)
            if m:
                wipe(i + 1, m.end() - 1)
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def match_brace(text, open_at):
    """Offset just past the `}` matching the `{` at `open_at` (in blanked text)."""
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(text)


CFG_TEST = r"#\[cfg\(test\)\]\s*(?:#\[[^\]]*\]\s*)*"
VIS = r"(?:pub(?:\([^)]*\))?\s+)?"
TEST_MOD_DECL = re.compile(CFG_TEST + VIS + r"mod\s+(\w+)\s*;")
INLINE_MOD = re.compile(r"(" + CFG_TEST + r")?" + VIS + r"\bmod\s+\$?(\w+)\s*\{")
USE = re.compile(r"(?<![\w$])use\s+([^;]+);")
PATH = re.compile(r"(?<![\w:$])((?:crate|super|self)(?:\s*::\s*\w+)+)")
FN = re.compile(r"(?<![\w$])fn\s+(\w+)")


class Source:
    """One file: its module path, its blanked text and its inline modules."""

    def __init__(self, path, module):
        self.path = path
        self.module = module  # tuple of segments; () is the crate root
        self.raw = path.read_text(encoding="utf-8")
        self.text = blank(self.raw)
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", self.text)]
        # (start, end, name, is_test) of every inline `mod name { … }`.
        self.inline = []
        for m in INLINE_MOD.finditer(self.text):
            open_at = m.end() - 1
            self.inline.append((m.start(), match_brace(self.text, open_at), m.group(2), bool(m.group(1))))

    def line(self, offset):
        lo, hi = 0, len(self.line_starts)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self.line_starts[mid] <= offset:
                lo = mid
            else:
                hi = mid
        return lo + 1

    def in_test(self, offset):
        return any(test and s <= offset < e for s, e, _, test in self.inline)

    def scope(self, offset):
        """Module path at `offset`: the file's, plus the inline modules around it."""
        return self.module + tuple(name for s, e, name, _ in self.inline if s <= offset < e)

    def lines_outside_tests(self):
        test_lines = set()
        for s, e, _, test in self.inline:
            if test:
                test_lines.update(range(self.line(s), self.line(e - 1) + 1))
        return len(self.raw.splitlines()) - len(test_lines)


def expand_use(tree):
    """`a::{b, c::{d, self}}` as the paths `a::b`, `a::c::d`, `a::c`."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    parts, depth, start = [], 0, 0
    for k, ch in enumerate(tree):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(tree[start:k])
            start = k + 1
    parts.append(tree[start:])
    paths = []
    for part in filter(None, parts):
        brace = part.find("{")
        if brace < 0:
            paths.append(re.sub(r"::self$", "", part))
            continue
        prefix = part[:brace]
        for sub in expand_use(part[brace + 1 : part.rindex("}")]):
            paths.append(re.sub(r"::self$", "", prefix + sub))
    return paths


def resolve(path, scope):
    """Absolute segments of a `crate::`/`super::`/`self::` path written in `scope`."""
    segs = [s for s in re.split(r"\s*::\s*", path.strip()) if s]
    if segs[0] == "crate":
        base, segs = [], segs[1:]
    else:
        base = list(scope)
        if segs[0] == "self":
            segs = segs[1:]
        while segs and segs[0] == "super":
            if not base:
                return None
            base.pop()
            segs = segs[1:]
    return tuple(base + segs)


class Crate:
    def __init__(self, root):
        self.root = root
        src = root / "src"
        self.files = {}  # module path -> Source
        self.tests = set()  # module paths of test-only file modules
        for path in sorted(src.rglob("*.rs")):
            rel = path.relative_to(src)
            if rel.parts[0] == "bin":
                continue  # separate binaries: their own crates, not modules of this one
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "mod" or parts in (["lib"], ["main"]):
                parts.pop()  # the directory's (or the crate's) own module
            module = tuple(parts)
            self.files[module] = Source(path, module)
            if path.name == "tests.rs" or path.name.endswith("_tests.rs"):
                self.tests.add(module)
        for module, source in self.files.items():
            for m in TEST_MOD_DECL.finditer(source.text):
                self.tests.add(module + (m.group(1),))
        # Below a test module everything is test code.
        self.tests = {m for m in self.files if any(m[: len(t)] == t for t in self.tests)}

    def target(self, segs):
        for k in range(len(segs), -1, -1):
            if segs[:k] in self.files:
                return segs[:k]
        return None

    def edges(self):
        """module -> {module it depends on: line of the first reference}."""
        graph = {m: {} for m in self.files if m not in self.tests}
        for module, source in self.files.items():
            if module in self.tests:
                continue
            found = []
            for m in USE.finditer(source.text):
                found += [(m.start(), p) for p in expand_use(m.group(1))]
            for m in PATH.finditer(source.text):
                found.append((m.start(), m.group(1)))
            for offset, path in found:
                if not re.match(r"(crate|super|self)\b", path) or source.in_test(offset):
                    continue
                segs = resolve(path, source.scope(offset))
                to = self.target(segs) if segs is not None else None
                if to is None or to == module or to in self.tests or to[: len(module)] == module:
                    continue
                graph[module].setdefault(to, source.line(offset))
        return graph

    def cycles(self):
        graph = self.edges()
        index, low, on_stack, stack, sccs = {}, {}, set(), [], []

        def connect(v):
            # Iterative Tarjan: a module chain can be deeper than Python's recursion limit allows.
            work = [(v, iter(graph[v]))]
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            while work:
                node, children = work[-1]
                child = next(children, None)
                if child is None:
                    work.pop()
                    if work:
                        low[work[-1][0]] = min(low[work[-1][0]], low[node])
                    if low[node] == index[node]:
                        scc = []
                        while True:
                            w = stack.pop()
                            on_stack.discard(w)
                            scc.append(w)
                            if w == node:
                                break
                        if len(scc) > 1:
                            sccs.append(sorted(scc))
                elif child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])

        for v in graph:
            if v not in index:
                connect(v)
        return [(scc, {(a, b): graph[a][b] for a in scc for b in graph[a] if b in scc}) for scc in sccs]

    def long_files(self):
        for module, source in self.files.items():
            if module not in self.tests and (n := source.lines_outside_tests()) > MAX_FILE_LINES:
                yield module, n

    def long_fns(self):
        for module, source in self.files.items():
            if module in self.tests:
                continue
            text = source.text
            for m in FN.finditer(text):
                if source.in_test(m.start()):
                    continue
                depth, k = 0, m.end()
                while k < len(text):
                    ch = text[k]
                    if ch in "([":
                        depth += 1
                    elif ch in ")]":
                        depth -= 1
                    elif depth == 0 and ch in "{;":
                        break
                    k += 1
                if k >= len(text) or text[k] == ";":
                    continue  # a declaration without a body
                first, last = source.line(m.start()), source.line(match_brace(text, k) - 1)
                if last - first + 1 > MAX_FN_LINES:
                    yield module, m.group(1), first, last - first + 1


def main(argv):
    repo = Path(__file__).resolve().parent.parent
    roots = [Path(a).resolve() for a in argv] or sorted(p.parent for p in (repo / "crates").glob("*/Cargo.toml"))
    findings = 0
    for root in roots:
        if not (root / "src").is_dir():
            continue
        crate = Crate(root)
        name = root.name

        def where(module):
            path = crate.files[module].path
            return path.relative_to(repo) if path.is_relative_to(repo) else path

        for scc, inner in crate.cycles():
            findings += 1
            print(f"{name}: import cycle through {len(scc)} files:")
            for (a, b), line in sorted(inner.items()):
                print(f"  {where(a)}:{line} -> {where(b)}")
        for module, n in crate.long_files():
            findings += 1
            print(f"{name}: {where(module)} has {n} lines outside tests (limit {MAX_FILE_LINES})")
        for module, fn, line, n in crate.long_fns():
            findings += 1
            print(f"{name}: {where(module)}:{line} fn {fn} has {n} lines (limit {MAX_FN_LINES})")
    print(f"{findings} finding(s)" if findings else "layers OK: no import cycles, no long files, no long functions")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
