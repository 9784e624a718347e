"""Which mutants there are: cosmic-ray's operators applied to a module, less the code whose
mutants change nothing a test can see, and which statements the unmutated tests ran.

Used by ``scripts/mutate.py`` (see its docstring and ``scripts/mutation.toml``).
"""

from __future__ import annotations

import ast
import functools
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: str) -> str:
    """``vicmae/engine/loop.py`` -> ``vicmae.engine.loop`` (``cli/`` installs as vicmae_cli)."""
    parts = list(Path(path).with_suffix("").parts)
    if parts[0] == "cli":
        parts[0] = "vicmae_cli"
    return ".".join(parts)


def quiet_spans(source: str, calls: list[str]) -> list[tuple[tuple, tuple]]:
    """((line, col), (end line, end col)) of code whose mutants change no behaviour a test
    can see: the arguments of ``calls`` (log.info(...), warnings.warn(...)) and of a raised
    exception's constructor (what a message says), annotations (never evaluated here: every
    module has ``from __future__ import annotations``) and a signature's ``*`` and ``/``."""
    spans = []

    def add(node: ast.AST) -> None:
        spans.append(((node.lineno, node.col_offset), (node.end_lineno, node.end_col_offset)))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if isinstance(node.func.value, ast.Name) and node.func.value.id in calls:
                for a in [*node.args, *node.keywords]:
                    add(a)
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            for a in [*node.exc.args, *node.exc.keywords]:
                add(a)
        elif isinstance(node, ast.arg) and node.annotation is not None:
            add(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            add(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            if node.returns is not None:
                add(node.returns)
            a = node.args
            params = [*a.posonlyargs, *a.args, a.vararg, *a.kwonlyargs, a.kwarg]
            named = [p for p in params if p is not None]
            defaults = [d for d in [*a.defaults, *a.kw_defaults] if d is not None]
            if named:  # the parameter list less its default values: only markers to mutate
                first, last = named[0], named[-1]
                holes = sorted(((d.lineno, d.col_offset), (d.end_lineno, d.end_col_offset))
                               for d in defaults)  # fmt: skip
                start = (first.lineno, first.col_offset)
                for h0, h1 in holes:
                    spans.append((start, h0))
                    start = h1
                spans.append((start, (last.end_lineno, last.end_col_offset + 1)))
    return spans


def _inside(pos: tuple[int, int], spans: list[tuple[tuple, tuple]]) -> bool:
    return any(a <= pos < b for a, b in spans)


def mutants(path: str, operators: str, calls: list[str]) -> list[dict]:
    """Every (operator, occurrence) cosmic-ray applies to ``path``, with its line before and
    after; those on quiet lines left out."""
    import cosmic_ray.plugins
    from cosmic_ray.ast import ast_nodes, get_ast
    from cosmic_ray.mutating import mutate_code

    source = (ROOT / path).read_text()
    quiet = quiet_spans(source, calls)
    before = source.splitlines()
    out = []
    for op_name in cosmic_ray.plugins.operator_names():
        if not re.fullmatch(operators, op_name):
            continue
        op = cosmic_ray.plugins.get_operator(op_name)()
        positions = [p for node in ast_nodes(get_ast(source)) for p in op.mutation_positions(node)]
        for occurrence, (start, _end) in enumerate(positions):
            line = start[0]
            if _inside(tuple(start), quiet):
                continue
            try:
                mutated = mutate_code(source, op, occurrence)
            except AttributeError:
                # cosmic-ray 8.7's ExceptionReplacer fails on a dotted name in an except
                # tuple (`except (OSError, zipfile.BadZipFile)`): no mutant made there.
                print(f"note: {path}:{line} {op_name}: cosmic-ray cannot mutate this one")
                continue
            if mutated is None:
                continue
            after = mutated.splitlines()
            # The first line that differs (a mutation may reflow nothing else).
            diff = next(
                (i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), line - 1
            )
            out.append({
                "file": path, "line": diff + 1, "operator": op_name, "occurrence": occurrence,
                "before": before[diff].strip(), "after": after[diff].strip(), "source": mutated,
            })  # fmt: skip
    return out


def statement_ran(m: dict, ran: set[int]) -> bool:
    """Whether the statement holding mutant ``m`` ran in the unmutated tests (its header
    lines: a compound statement's body is its own statements). True when unsure."""
    best = None
    for start, end in _statement_heads(m["file"]):
        if start <= m["line"] <= end and (best is None or start >= best[0]):
            best = (start, end)
    return best is None or any(best[0] <= line <= best[1] for line in ran)


@functools.cache
def _statement_heads(path: str) -> list[tuple[int, int]]:
    """(first line, last line before its first child statement) of every statement."""
    heads = []
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.stmt):
            fields = ("body", "orelse", "finalbody", "handlers")
            children = [c for f in fields for c in getattr(node, f, [])]
            end = min((c.lineno for c in children), default=node.end_lineno + 1) - 1
            heads.append((node.lineno, end))
    return heads
