"""Every example in README.md, in docs/*.md and in every command's --help, checked so it
cannot drift.

- Every command line of every ``bash``/``console`` block is parsed by the real command
  line interface (a ``vicmae-data``/``vicmae`` line as the app parses it, a ``torchrun``
  line's module arguments, a ``make`` line with ``make -n``), and so is every example in
  every ``--help``.
- The blocks a 2-core machine can run are run, in one folder holding small synthetic
  datasets under ``data/`` (``vicmae-data synth``): data preparation, the held-out split,
  the Slurm job array, the loading snippet. Where the page says, in the paragraph before
  a block, what to change on a small set or a CPU (```A`` to ``B``` pairs, ``add ``X```),
  the test changes exactly that.
- Every relative link between the pages, and every repository file they name, exists.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import typer

from vicmae_cli.data import app as data_app
from vicmae_cli.train import app as train_app

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# The guides the README points to: their examples are checked like the README's.
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent
APPS = {"vicmae-data": data_app, "vicmae": train_app}
# Programs a README line may call that this test cannot check here (network, other hosts,
# the shell itself); a line calling anything else must be checked or added here.
NOT_CHECKED = {"bash", "source", "scp", "ssh", "rsync", "cd", "export", "pip", "[", "scontrol"}
# Launchers whose arguments are a command line this test checks.
LAUNCHERS = {"srun"}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    before: str  # the paragraph just before the block: where it says what to scale
    line: int
    page: str  # README.md or docs/NAME.md

    @property
    def where(self) -> str:
        return f"{self.page} line {self.line}"

    def commands(self) -> list[str]:
        """Shell commands, continuation lines joined, comments and output lines dropped."""
        lines = self.text.splitlines()
        if self.lang == "console":
            lines = [x[2:] for x in lines if x.startswith("$ ")]
        out, current = [], ""
        for raw in lines:
            line = raw.split(" #", 1)[0].rstrip() if not raw.lstrip().startswith("#") else ""
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            if current.strip():
                out.append(current.strip())
            current = ""
        return out


def readme_blocks() -> list[Block]:
    """Every fenced block of README.md and of the guides in docs/."""
    blocks = []
    pattern = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
    for page in PAGES:
        text = page.read_text()
        name = page.relative_to(REPO).as_posix()
        for match in pattern.finditer(text):
            before = text[: match.start()].rstrip().rsplit("\n\n", 1)[-1]
            line = text[: match.start()].count("\n") + 1
            blocks.append(Block(match.group(1), match.group(2), before, line, name))
    return blocks


def block_with(marker: str) -> Block:
    found = [b for b in readme_blocks() if marker in b.text]
    assert len(found) == 1, f"README and docs: {len(found)} blocks hold {marker!r}"
    return found[0]


def scaling(block: Block) -> tuple[list[tuple[str, str]], list[str]]:
    """What the README says to change for a small set or a CPU, in the paragraph before
    ``block``: ```A`` to ``B``` pairs, and ``add ``X``` to vicmae train lines."""
    pairs = re.findall(r"`([^`]+)`\s+to\s+`([^`]+)`", block.before)
    adds = re.findall(r"add\s+`([^`]+)`", block.before)
    return pairs, adds


def scaled(text: str, block: Block) -> str:
    pairs, _ = scaling(block)
    for old, new in pairs:
        assert old in text, f"{block.where}: {old!r} is not in its block"
        text = text.replace(old, new)
    return text


# --- parsing every command line ------------------------------------------------------------


def parse(argv: list[str], where: str) -> None:
    """Parse a vicmae-data/vicmae command line as the app would, running nothing.

    typer carries its own copy of click, so groups and errors are recognised by what they
    do (``resolve_command``, ``format_message``), not by click's classes.
    """
    command = typer.main.get_command(APPS[argv[0]])
    name, args, parent = argv[0], list(argv[1:]), None
    try:
        while True:
            ctx = command.make_context(name, args, parent=parent)
            if not hasattr(command, "resolve_command"):
                return
            # A group keeps its subcommand apart from the arguments that follow it.
            rest = [*(getattr(ctx, "_protected_args", None) or []), *ctx.args]
            assert rest, f"{where}: {' '.join(argv)}: no command after {name!r}"
            name, command, args = command.resolve_command(ctx, rest)
            parent = ctx
    except Exception as exc:
        if type(exc).__name__ == "Exit":  # --help, --version
            return
        if hasattr(exc, "format_message"):
            raise AssertionError(f"{where}: {' '.join(argv)}: {exc.format_message()}") from None
        raise


# What the shell variables of the examples hold on the machines they are written for.
EXAMPLE_ENV = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_CPUS_PER_TASK": "32", "HEAD": "node01"}


def check_line(line: str, where: str) -> None:
    argv = shlex.split(re.sub(r"\$\{?(\w+)\}?", lambda m: EXAMPLE_ENV.get(m[1], m[0]), line))
    while argv[0] in LAUNCHERS:
        argv = argv[1:]
    if argv[0] in APPS:
        parse(argv, where)
    elif argv[0] == "torchrun":
        module = argv.index("-m")
        assert argv[module + 1] == "vicmae_cli.train", f"{where}: {line}"
        parse(["vicmae", *argv[module + 2 :]], where)
        assert shutil.which("torchrun", path=str(BIN)), "torchrun is not installed"
    elif argv[0] == "make":
        done = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True)
        assert done.returncode == 0, f"{where}: {line}: {done.stderr}"
    else:
        assert Path(argv[0]).name in NOT_CHECKED, f"{where}: cannot check {line!r}"


def test_every_readme_command_line_parses():
    checked, pages = 0, set()
    for block in readme_blocks():
        if block.lang in ("bash", "console", "sh", ""):
            for line in block.commands():
                check_line(line, block.where)
                checked += 1
                pages.add(block.page)
        elif block.lang == "python":
            ast.parse(block.text)
        else:
            raise AssertionError(f"{block.where}: a {block.lang!r} block")
    assert checked >= 15
    assert "README.md" in pages and "docs/data.md" in pages  # the guides are read too


def test_the_check_refuses_a_wrong_line():
    for wrong in (
        "vicmae-data convert kinetics400 --out k.beton --no-such-flag",
        "vicmae-data convertt kinetics400",
        "vicmae train pretrain --beton",
        "torchrun --nproc_per_node 2 -m vicmae_cli.train train pretrian",
        "make no-such-target",
        "curl https://example.com",
    ):
        with pytest.raises(AssertionError):
            check_line(wrong, "test")


def help_examples() -> list[tuple[str, str]]:
    """(command, example line) of every example in every command's help."""
    found = []
    for prog, app in APPS.items():
        root = typer.main.get_command(app)
        stack = [((), root)]
        while stack:
            path, command = stack.pop()
            if hasattr(command, "commands"):
                stack += [((*path, n), c) for n, c in command.commands.items()]
                continue
            joined = re.sub(r"\\\n\s*", "", command.help or "")
            for line in joined.splitlines():
                line = line.strip().removeprefix("Example:").strip()
                if line.startswith(f"{prog} "):
                    found.append((f"{prog} {' '.join(path)}", line))
    return found


def test_every_help_example_parses():
    examples = help_examples()
    assert len(examples) >= 12
    for command, line in examples:
        check_line(line, f"{command} --help")


# --- running what a 2-core machine can run -------------------------------------------------


def run(cmd: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> str:
    full = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}", **(env or {}))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", cmd],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder with small synthetic datasets where the README's commands expect them."""
    work = tmp_path_factory.mktemp("readme")
    synth = f"{BIN / 'vicmae-data'} synth"
    run(f"{synth} --layout kinetics400 --out data/kinetics400 --videos 8 --seed 1", work)
    run(f"{synth} --layout imagenet --out data/imagenet --videos 6 --split train", work)
    run(f"{synth} --layout folder --out data/mydata --videos 20 --split train", work)
    return work


@pytest.fixture(scope="module")
def prepared(work) -> Path:
    """The data preparation and held-out blocks, run as written."""
    block = block_with("vicmae-data convert kinetics400 --root data/kinetics400")
    run(scaled(block.text, block), work)
    for name in ("k400.beton", "in1k.beton", "sample.png"):
        assert (work / name).is_file(), name
    block = block_with("--holdout-out val.beton")
    run(scaled(block.text, block), work)
    return work


@pytest.mark.slow
def test_data_preparation_and_holdout_blocks_run(prepared):
    from vicmae_data import check_same_classes

    check_same_classes(prepared / "train.beton", prepared / "val.beton")
    # The vicmae-data help examples run on what the README made (the conversions find
    # their outputs complete and say so; the Slurm ones run with the README's block).
    ran = 0
    for _, line in help_examples():
        name = line.split()[1]  # the command the line runs (convert's help shows a merge)
        if line.startswith("vicmae-data") and name != "merge" and "SLURM" not in line:
            output = run(line, prepared)
            ran += 1
            if name == "convert":
                assert "already complete" in output
    assert ran >= 6


@pytest.mark.slow
def test_slurm_block_runs_for_every_task(prepared, tmp_path):
    block = block_with("SLURM_ARRAY_TASK_ID")
    text = scaled(block.text, block)
    per_task, _, once = text.partition("# once every task has finished:")
    shards = int(re.search(r"--shard \$\{SLURM_ARRAY_TASK_ID\}/(\d+)", per_task).group(1))
    (tmp_path / "data").symlink_to(prepared / "data")
    for task in range(shards):
        env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_CPUS_PER_TASK": "2"}
        run(per_task, tmp_path, env)
    run(once, tmp_path)
    from vicmae_data.format.beton import BetonFile

    for _, line in help_examples():
        if line.startswith("vicmae-data merge"):
            (tmp_path / "k400.beton").unlink()  # merge leaves an existing OUT alone
            run(line, tmp_path)  # the shards the block wrote, joined again
    whole = BetonFile(prepared / "k400.beton")
    merged = BetonFile(tmp_path / "k400.beton")
    sources = sorted(merged.meta(i)["source"] for i in range(len(merged)))
    assert sources == sorted(whole.meta(i)["source"] for i in range(len(whole)))


@pytest.mark.slow
def test_loading_snippet_runs(prepared):
    block = block_with("from vicmae_data import make_loader")
    code = scaled(block.text, block)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=prepared, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr


# The sample block, smaller: the same commands on 12 clips a split, 2 epochs of batch 8.
SAMPLE_SCALE = (("--videos 64", "--videos 12"), ("--epochs 40", "--epochs 2"),
                ("--batch-size 32", "--batch-size 8"))  # fmt: skip


def sample_block() -> Block:
    block = block_with("vicmae-data synth --layout kinetics400 --out data/kinetics400")
    assert block.page == "README.md"
    return block


def test_the_sample_block_is_in_pretrain_help():
    """`vicmae train pretrain --help` shows the README's sample block, line for line."""
    command = typer.main.get_command(train_app).commands["train"].commands["pretrain"]
    helped = [" ".join(ln.split()) for ln in re.sub(r"\\\n", "", command.help).splitlines()]
    sample = [" ".join(line.split()) for line in sample_block().commands()]
    assert [ln.split()[0] for ln in sample] == ["vicmae-data"] * 3 + ["vicmae"] * 3
    missing = [line for line in sample if line not in helped]
    assert not missing, f"pretrain --help lacks the README's sample lines {missing}"


@pytest.mark.slow
def test_the_sample_block_runs_from_synth_to_export(tmp_path):
    """A newcomer's first commands: synth, convert, pretrain, probe, export, with no error,
    refusal or traceback (on fewer clips and steps than written, to stay fast)."""
    block = sample_block()
    text = block.text
    for old, new in SAMPLE_SCALE:
        assert old in text, f"{block.where}: {old!r} is not in the sample block"
        text = text.replace(old, new)
    output = run(text, tmp_path)
    assert "Traceback" not in output and "error" not in output.lower(), output
    assert "next, convert it" in output and "--split val --out val.beton" in output
    assert (tmp_path / "runs/sample/linprobe/result.json").is_file()
    assert "timm.create_model(" in output and (tmp_path / "vit.pth").is_file()


# --- the pages' links and the files they name -----------------------------------------------


def _generated(name: str) -> bool:
    """A folder the project writes and git ignores (`benchmarks/out/`): named by the guides,
    absent from a fresh clone until its command runs."""
    ignored = subprocess.run(["git", "check-ignore", "-q", name], cwd=REPO, check=False)
    return ignored.returncode == 0


def test_every_link_and_named_file_exists():
    """A newcomer follows the README's map into docs/: every relative link must land on a
    page (and heading) that exists, and every repository file a page names in backticks
    must be in the repository (no notes only the developers have)."""
    tops = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    checked = 0
    for page in PAGES:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"\w+://", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            assert dest.is_file(), f"{page.name}: link to {target}, no such file"
            if anchor:
                heads = re.findall(r"^#+ (.*)$", dest.read_text(), re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in heads}
                assert anchor in slugs, f"{page.name}: link to {target}, no such heading"
            checked += 1
        # A file of another repository is linked to it, so it is not looked for here.
        own = re.sub(r"\[[^\]]*\]\(\w+://[^)]*\)", "", text)
        for name in re.findall(r"`([\w.\-]+(?:/[\w.\-*]+)+/?)`", own):
            if name.split("/")[0] in tops and "*" not in name and not name.startswith("runs/"):
                assert (REPO / name).exists() or _generated(name), (
                    f"{page.name}: names {name}, not in the repo"
                )
                checked += 1
        assert "DESIGN.md" not in text, f"{page.name}: cites DESIGN.md, which users do not have"
    assert checked >= 20
