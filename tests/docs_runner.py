"""Runs the code blocks of README.md and docs/ (tests/test_docs.py).

Each fenced block of a page runs in order, in one scratch folder per page (with ``examples/``,
``benchmarks/`` and ``../shared`` reachable as from the project root, and ``scans/``: three
PNG films to predict):

- ``python``: executed in one namespace per page, so later blocks use earlier names;
- ``bash``: run by bash with ``-e -o pipefail``; ``sagan-ad`` (and ``.venv/bin/sagan-ad``) runs
  the command line in the test process, where sagan_ad is already imported; ``pip install``
  checks that the named extras exist instead of installing (the package under test is the
  installed one); ``python3 -m venv`` makes a folder whose ``bin/`` holds the same commands.
  Exported variables carry over to the page's next bash block;
- ``json`` and ``yaml``: parsed;
- ``text`` and ``bibtex`` blocks are shown output and citations, not code.

An HTML comment on the line above a block changes how it runs (``<!-- docs-test: ... -->``,
actions separated by ``;``):

- ``skip: <why>``: not run; the test is reported as skipped with the reason;
- ``needs <path>``: skipped, with the reason, when ``<path>`` (from the project root) is absent;
- ``tiny``: every ``sagan-ad fit`` of the block trains at a tiny size (`TINY_FIT`);
- ``parse-only: <why>``: ``sagan-ad`` commands are parsed (``--print_config``), not run;
- ``replace "<text>" "<by>"``: the block's text is changed before it runs (each ``<text>`` must
  occur in the block);
- ``config-after <name>``: a YAML block is a config given after ``--config <name>``; it must
  parse with it;
- ``setup <command>``: a shell command run first, unseen by readers (for example the training
  whose checkpoint the block uses), with the block's other actions.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.metadata import metadata
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_CODE = {"text", "bibtex"}
RUNS = {"python", "bash", "json", "yaml"}

TINY_FIT = [
    "--model.max_iterations=4",
    "--trainer.val_check_interval=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--val_samples=2",
]
"""What ``tiny`` appends to ``sagan-ad fit``."""
TINY_SYNTHETIC = ["--data.num_known_normal=16", "--data.num_test=8", "--data.batch_size=4"]
"""What ``tiny`` also appends when the command trains the quickstart's synthetic phantoms."""

MARKER = re.compile(r"^<!--\s*docs-test:\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,})(\w*)\s*$")


@dataclass
class Block:
    page: Path
    line: int
    language: str
    code: str
    actions: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    def action(self, kind: str) -> str | None:
        return next((value for name, value in self.actions if name == kind), None)


ACTIONS = ("skip", "needs", "tiny", "parse-only", "replace", "config-after", "setup")


def parse_actions(text: str) -> list[tuple[str, str]]:
    actions = []
    # A ";" inside a reason is not a separator: only one before the next action's name is.
    parts = re.split(rf";\s*(?=(?:{'|'.join(ACTIONS)})\b)", text)
    for part in (p.strip() for p in parts):
        kind, _, value = part.partition(" ")
        kind = kind.rstrip(":")
        if kind not in ACTIONS:
            raise ValueError(f"unknown docs-test action {part!r}")
        if kind in ("skip", "parse-only") and not value.strip():
            raise ValueError(f"docs-test {kind} needs a reason: {part!r}")
        actions.append((kind, value.strip()))
    return actions


def page_blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` with the actions of the marker above each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        indent, ticks, language = fence.groups()
        end = i + 1
        while not lines[end].strip().startswith(ticks):
            end += 1
        body = "\n".join(line[len(indent) :] for line in lines[i + 1 : end]) + "\n"
        marker = MARKER.match(lines[i - 1].strip()) if i else None
        actions = parse_actions(marker.group(1)) if marker else []
        blocks.append(Block(page, i + 1, language or "text", body, actions))
        i = end + 1
    return blocks


def prepared_code(block: Block) -> str:
    code = block.code
    for kind, value in block.actions:
        if kind != "replace":
            continue
        old, new = shlex.split(value)
        assert old in code, f"{block.name}: the replaced text {old!r} is not in the block"
        code = code.replace(old, new)
    return code


def skip_reason(block: Block) -> str | None:
    """Why ``block`` does not run here, or None."""
    if block.language in NOT_CODE:
        return f"{block.language} block: shown output, not code"
    if block.language not in RUNS:
        return None
    reason = block.action("skip")
    if reason is not None:
        return reason
    needed = block.action("needs")
    if needed and not (ROOT / needed).exists():
        return f"needs {needed} (the developers' data, absent here)"
    return None


class Page:
    """One page's scratch folder, Python namespace and shell environment."""

    def __init__(self, folder: Path, bin_dir: Path) -> None:
        self.work = folder / "work"
        self.work.mkdir(parents=True)
        for name in ("examples", "benchmarks"):
            (self.work / name).symlink_to(ROOT / name)
        shared = ROOT.parent / "shared"
        if shared.exists():
            (folder / "shared").symlink_to(shared)
        # A folder of films to score, for the blocks that predict "/path/to/scans".
        (self.work / "scans").mkdir()
        for i in range(3):
            film = np.random.default_rng(i).integers(0, 256, (80, 64), dtype=np.uint8)
            Image.fromarray(film).save(self.work / "scans" / f"film{i}.png")
        self.namespace: dict[str, Any] = {"__name__": "docs_page"}
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.env.update(WANDB_MODE="offline", WANDB_SILENT="true")
        self.bin_dir = bin_dir

    def run(self, block: Block) -> None:
        code = prepared_code(block)
        if block.language == "python":
            exec(compile(code, block.name, "exec"), self.namespace)
        elif block.language == "json":
            json.loads(code)
        elif block.language == "yaml":
            self.check_yaml(block, code)
        elif block.language == "bash":
            setup = block.action("setup")
            self.run_bash(block, f"{setup}\n{code}" if setup else code)

    def check_yaml(self, block: Block, code: str) -> None:
        yaml.safe_load(code)
        base = block.action("config-after")
        if base:
            snippet = self.work / "snippet.yaml"
            snippet.write_text(code)
            status = run_cli(["fit", "--config", base, "--config", str(snippet), "--print_config"])
            assert status == 0, f"{block.name}: the config does not parse after {base}"

    def run_bash(self, block: Block, code: str) -> None:
        request_r, request_w = os.pipe()
        answer_r, answer_w = os.pipe()
        state = self.work.parent / "shell_env"
        save_env = f"env -0 > {shlex.quote(str(state))}"
        script = f"exec 3>&{request_w} 4<&{answer_r}\nset -a\n{code}\n{save_env}\n"
        process = subprocess.Popen(
            ["bash", "-e", "-o", "pipefail", "-c", script],
            cwd=self.work,
            env=self.env,
            pass_fds=(request_w, answer_r),
        )
        os.close(request_w)
        os.close(answer_r)
        requests = os.fdopen(request_r, "rb")
        answers = os.fdopen(answer_w, "wb", buffering=0)
        try:
            while (request := read_request(requests)) is not None:
                args, env = request
                status = self.command(block, args, env)
                answers.write(f"{status}\n".encode())
        finally:
            requests.close()
            answers.close()
            returncode = process.wait(timeout=600)
        assert returncode == 0, f"{block.name}: the block exited with status {returncode}"
        if state.is_file():
            pairs = (item.split("=", 1) for item in state.read_text().split("\0") if "=" in item)
            self.env = dict(pairs)

    def command(self, block: Block, args: list[str], env: dict[str, str]) -> int:
        """Run one command the block's shell handed over; its exit status."""
        program, *args = args
        if program == "pip":
            return check_pip(args)
        if program != "sagan-ad":
            raise AssertionError(f"{block.name}: no handler for {program}")
        parse_only = block.action("parse-only") is not None
        if parse_only and args[:1] in (["fit"], ["validate"], ["test"], ["predict"]):
            args = [*args, "--print_config"]
        elif block.action("tiny") is not None and args[:1] == ["fit"]:
            synthetic = any("quickstart" in arg for arg in args)
            args = [*args, *TINY_FIT, *(TINY_SYNTHETIC if synthetic else [])]
        shell_only = ("PATH", "PWD", "OLDPWD", "SHLVL", "_", "SHIM_CWD")
        changed = {k: v for k, v in env.items() if os.environ.get(k) != v and k not in shell_only}
        with patched_environ(changed), working_folder(env["SHIM_CWD"]):
            if parse_only:
                with contextlib.redirect_stdout(io.StringIO()):
                    return run_cli(args)
            return run_cli(args)


def read_request(stream: Any) -> tuple[list[str], dict[str, str]] | None:
    data = b""
    while not data.endswith(b"\x01\n"):
        chunk = stream.read(1)
        if not chunk:
            return None
        data += chunk
    args, _, env = data[:-2].partition(b"\x02")
    words = [w.decode() for w in args.split(b"\0")[:-1]]
    pairs = (w.decode().split("=", 1) for w in env.split(b"\0") if b"=" in w)
    return words, dict(pairs)


def run_cli(args: list[str]) -> int:
    from sagan_ad.cli import main

    try:
        main(args)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def check_pip(args: list[str]) -> int:
    """``pip install``: every ``sagan-ad[...]`` / ``.[...]`` extra named must exist."""
    assert args[:1] == ["install"], f"pip {' '.join(args)}: only pip install is documented"
    known = set(metadata("sagan-ad").get_all("Provides-Extra") or [])
    for arg in args[1:]:
        match = re.fullmatch(r"(sagan-ad|\.)\[([\w,-]+)\]", arg)
        if match:
            unknown = set(match.group(2).split(",")) - known
            assert not unknown, f"pip install {arg}: no such extra {sorted(unknown)}"
    return 0


@contextlib.contextmanager
def patched_environ(changed: dict[str, str]):
    before = {k: os.environ.get(k) for k in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def working_folder(folder: str):
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


SHIM = """#!/usr/bin/env bash
{ printf '%s\\0' NAME "$@"; printf '\\2'; env -0
  printf 'SHIM_CWD=%s\\0' "$(pwd)"; printf '\\1\\n'; } >&3
IFS= read -r status <&4
exit "$status"
"""

PYTHON_SHIM = """#!/usr/bin/env bash
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    for name in sagan-ad pip python python3; do ln -sf "BIN/$name" "$3/bin/$name"; done
    exit 0
fi
exec "PYTHON" "$@"
"""


def make_bin(folder: Path) -> Path:
    """The commands the blocks' shell finds first: ``sagan-ad``, ``pip`` and ``python``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("sagan-ad", "pip"):
        (folder / name).write_text(SHIM.replace("NAME", name))
    python = PYTHON_SHIM.replace("BIN", str(folder)).replace("PYTHON", sys.executable)
    for name in ("python", "python3"):
        (folder / name).write_text(python)
    for path in folder.iterdir():
        path.chmod(0o755)
    return folder
