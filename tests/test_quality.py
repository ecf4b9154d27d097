"""The code-quality gates are part of the suite: ruff everywhere, mypy --strict on the packages."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_ruff() -> None:
    out = run(str(BIN / "ruff"), "check", "core", "plugins", "examples", "tests", "bench")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_core_and_plugins() -> None:
    out = run(str(BIN / "mypy"), "--strict", "core/envoi", "plugins/http/envoi_http",
              "plugins/mongo/envoi_mongo", "plugins/grpc/envoi_grpc",
              "plugins/dynamodb/envoi_dynamodb")
    assert out.returncode == 0, out.stdout + out.stderr


# The import graph of every package we ship (grimp reads each module's imports, those under
# ``if TYPE_CHECKING:`` and inside functions included). A circle means two layers know each
# other; layers import downward only.
PACKAGES = ("envoi", "envoi_http", "envoi_mongo", "envoi_grpc", "envoi_dynamodb",
            "envoi_example_filter", "envoi_example_http_filter")

def import_circles(package: str) -> list[list[str]]:
    """The strongly connected components (more than one module) of a package's imports."""
    import grimp

    graph = grimp.build_graph(package)
    modules = graph.modules
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & modules) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return circles


def test_no_import_circles() -> None:
    found = {p: circles for p in PACKAGES if (circles := import_circles(p))}
    assert not found, f"import circles: {found}"


def test_import_circle_check_finds_a_circle(tmp_path: Path) -> None:
    pkg = tmp_path / "circ"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from circ import b\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                              "    from circ.a import x\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert import_circles("circ") == [["circ.a", "circ.b"]]
    finally:
        sys.path.remove(str(tmp_path))


_SYSTEM = {"usr", "etc", "tmp", "dev", "proc", "sys", "var", "bin", "opt", "lib", "run", "srv"}
_ABS_PATH = re.compile(rb"(?<![\w.~/-])/(?:[\w.+-]+/)+[\w.+-]*")


def checkout_paths(root: Path, files: list[str]) -> list[str]:
    """Absolute paths in ``files`` (relative to ``root``) that name a place in a checkout of
    this repository, so the file works only on the machine that wrote it: ``root`` itself, the
    top directory ``root`` lives under (the first part of its path) unless it is a system one,
    and any absolute path that ends in a tracked path or in ``.venv/``."""
    tracked = set(files)
    tracked_dirs = {str(Path(f).parents[i]) for f in files
                    for i in range(len(Path(f).parts) - 1)}
    top = root.parts[1] if len(root.parts) > 1 else ""
    found: list[str] = []
    for name in files:
        try:
            data = (root / name).read_bytes()
        except OSError:
            continue
        if b"\0" in data[:4096]:
            continue  # binary
        for m in _ABS_PATH.finditer(data):
            path = m.group().decode("latin-1").rstrip(".")
            parts = path.strip("/").split("/")
            suffixes = {"/".join(parts[i:]) for i in range(1, len(parts))}
            if (path.startswith(str(root)) or (top and top not in _SYSTEM and parts[0] == top)
                    or any(s in tracked or s in tracked_dirs or s.startswith(".venv/")
                           for s in suffixes)):
                found.append(f"{name}: {path}")
    return found


def test_no_tracked_file_names_a_checkout_path() -> None:
    files = run("git", "ls-files").stdout.split()
    assert files, "git ls-files found nothing"
    # tests/corpus holds third-party configs kept byte for byte: their absolute paths (route
    # prefixes, file names in the examples' containers) are data, not this checkout's paths.
    found = checkout_paths(ROOT, [f for f in files if not f.startswith("tests/corpus/")])
    assert not found, "\n".join(found)


def test_checkout_path_check_finds_them(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    (root / "tests").mkdir(parents=True)
    venv = "/".join(("", "elsewhere", "main", ".venv", "bin", "envoy"))  # not a literal here
    other = "/".join(("", "srv", "other", "tests", "a.py"))
    (root / "tests" / "a.py").write_text(f'ENVOY = "{venv}"\n'
                                         f'CFG = "{root}/tests/x.yaml"\n'
                                         'OK = "/usr/bin/env python3"\n'
                                         'REL = "../shared/bench/run-peers.sh"\n')
    (root / "b.md").write_text(f"see {other} and /dev/null\n")
    assert checkout_paths(root, ["tests/a.py", "b.md"]) == [
        f"tests/a.py: {venv}", f"tests/a.py: {root}/tests/x.yaml", f"b.md: {other}"]
