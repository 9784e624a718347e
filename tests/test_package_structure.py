"""The packages' shape: no import cycle, each module imports on its own, each room holds its own.

The rooms: ``vicmae/config/`` (configs, YAML, command line -> config), ``vicmae/engine/
batching.py`` (batch arithmetic and the GPU memory probe), ``vicmae_data/load/native/`` (the
C the decoder calls), ``vicmae/model/`` (what an exported encoder needs).
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import vicmae
import vicmae_data

PACKAGE = Path(vicmae_data.__file__).parent
ROOT = PACKAGE.parent
MODEL_PACKAGE = Path(vicmae.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(package.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, anywhere in it (functions included), except
    under ``if TYPE_CHECKING:``; ``from pkg import mod`` counts as importing ``pkg.mod``."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in known and m != name}


def _import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    modules = _modules(package)
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = _import_graph()
    assert _find_cycle(graph) is None  # a finder that always reports a cycle fails here
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    planted = {k: set(v) for k, v in graph.items()}
    planted["vicmae_data.load.native.libwebp"].add("vicmae_data.load.decoder")
    cycle = _find_cycle(planted)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert "vicmae_data.load.native.libwebp" in cycle and "vicmae_data.load.decoder" in cycle


def test_the_graph_sees_imports_inside_functions():
    graph = _import_graph()
    # format/frames.py names its decoder inside get_decoder_class().
    assert "vicmae_data.load.decoder" in graph["vicmae_data.format.frames"]
    assert "vicmae_data.load.crops" in graph["vicmae_data.load.kernels"]


@pytest.mark.parametrize("package", [PACKAGE, MODEL_PACKAGE], ids=["vicmae_data", "vicmae"])
def test_no_import_cycle(package):
    cycle = _find_cycle(_import_graph(package))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_model_does_not_depend_on_the_engine_or_the_jobs():
    """model/ is what an exported encoder needs: it never reaches into training code."""
    for name, deps in _import_graph(MODEL_PACKAGE).items():
        if name.startswith("vicmae.model"):
            bad = {d for d in deps if d.startswith(("vicmae.engine", "vicmae.jobs"))}
            assert not bad, f"{name} imports {sorted(bad)}"


def test_format_does_not_depend_on_later_stages_at_import_time():
    """format/ is read by write/, load/ and inspect/; it may name the decoder lazily only."""
    for name, path in _modules().items():
        if not name.startswith("vicmae_data.format"):
            continue
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(
                    ("vicmae_data.load", "vicmae_data.write", "vicmae_data.inspect")
                ), f"{name} imports {node.module} at import time"


def test_each_module_imports_on_its_own():
    """Every module of both packages imports in a process where no other module of ours was
    imported before it (third-party packages stay loaded between modules, to keep this fast)."""
    names = sorted(_modules(PACKAGE)) + sorted(_modules(MODEL_PACKAGE))
    script = (
        "import importlib, sys, traceback\n"
        f"names = {names!r}\n"
        "import torch, timm, ffcv, numba, av, PIL  # third-party, loaded once\n"
        "failed, ours = [], ('vicmae', 'vicmae_data')\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] in ours]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc().splitlines()[-1])\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]


@pytest.mark.parametrize("name", ["make_loader", "read_sample", "Batch", "to_model_input"])
def test_public_api_names_resolve(name):
    assert callable(getattr(vicmae_data, name))


# Where each moved piece lives (its defining module), so that a piece moved back fails here.
ROOMS = {
    "vicmae.config.sections": ["OptimConfig", "LoaderConfig", "DataConfig", "RunConfig"],
    "vicmae.config.jobs": ["TrainConfig", "LinprobeConfig", "FinetuneConfig"],
    "vicmae.config.io": ["ConfigError", "from_dict", "to_dict", "read_yaml", "config_diff"],
    "vicmae.config.resolve": ["load_config", "resolve", "check_resolution"],
    "vicmae.config.betons": ["parse_beton", "loader_paths"],
    "vicmae.config.cli": ["job_config", "shortcut_overrides", "split_resume_target"],
    "vicmae.engine.batching": ["accumulation", "choose_micro_batch", "largest_passing"],
    "vicmae.engine.param_groups": ["build_optimizer", "param_groups"],
    "vicmae_data.load.native.libwebp": ["function_table", "decode_crop_into"],
    "vicmae_data.load.native.cvresize": ["resize_view", "cv_resize_address"],
    "vicmae_data.load.native.ccall": ["c_function", "address_of"],
}


@pytest.mark.parametrize("module", sorted(ROOMS))
def test_each_room_holds_its_own(module):
    mod = importlib.import_module(module)
    for name in ROOMS[module]:
        assert getattr(mod, name).__module__ == module, f"{name} is not defined in {module}"


def test_old_config_imports_still_resolve():
    """Other code imports every config name from vicmae.config, as before the package."""
    import vicmae.config

    for name in vicmae.config.__all__:
        assert getattr(vicmae.config, name) is not None


def test_the_config_does_not_import_the_engine():
    """The engine reads the config; the config needs none of the engine at import time
    (the model it imports never does, above), except the command line's saved-checkpoint
    reader (vicmae.config.cli)."""
    for name, path in _modules(MODEL_PACKAGE).items():
        if name.startswith("vicmae.config") and name != "vicmae.config.cli":
            tree = ast.parse(path.read_text())
            for node in tree.body:  # module level only
                if isinstance(node, ast.ImportFrom) and node.module:
                    assert not node.module.startswith(("vicmae.engine", "vicmae.jobs")), name


def test_only_the_loader_uses_the_c_bindings():
    """load/native/ serves the decoder: nothing outside vicmae_data.load imports it."""
    for name, deps in _import_graph().items():
        if not name.startswith("vicmae_data.load"):
            bad = {d for d in deps if d.startswith("vicmae_data.load.native")}
            assert not bad, f"{name} imports {sorted(bad)}"
    assert "vicmae_data.load.native.libwebp" in _import_graph()["vicmae_data.load.kernels"]


def test_the_data_command_line_starts_without_the_media_stack():
    """`vicmae-data` builds its whole app at start-up (every command's options, defaults
    included) before it runs one: none of numpy, Pillow, PyAV, ffcv, torch, numba or OpenCV
    may come with that (`--help` and `info` stay quick; benchmarks/bench_startup.py)."""
    code = (
        "import sys; import vicmae_cli.data\n"
        "heavy = {'numpy', 'PIL', 'av', 'ffcv', 'torch', 'numba', 'cv2'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "[]", out.stdout
