"""Every shell block of README.md and docs/ runs, on small inputs, as a reader would run it.

How a block is run (or, with a reason, not run) is said next to it in the page: see ``blocks.py``.
A page's blocks run in order in one fresh directory holding a copy of ``configs/``, with the MLflow
store there (``sqlite:///mlflow.db``); background processes a block starts (``&``) are stopped when
the block ends; the service's port 8000 becomes a free one.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, SHELL, Block, blocks_of, pages, shell_blocks

BLOCK_TIMEOUT_S = 300
ALL_BLOCKS = [b for p in pages() for b in shell_blocks(p)]
RUN_PAGES = [p for p in pages() if any(b.runs for b in shell_blocks(p))]


def _page_param(path: Path):
    blocks = shell_blocks(path)
    marks = [pytest.mark.slow] if any(b.slow and b.runs for b in blocks) else []
    return pytest.param(path, id=str(path.relative_to(ROOT)), marks=marks)


def test_every_shell_block_is_run_or_skipped_with_a_reason():
    """A new block cannot go untested silently: each is run, or skipped with its reason written down,
    or the very same text is run on the page its ``same-as`` names; and each directive is one the runner knows, with replacements that still match the block."""
    assert ALL_BLOCKS, "no shell blocks found"
    problems = []
    for b in ALL_BLOCKS:
        problems += [f"{b.where}: {p}" for p in b.problems]
        if b.skip is not None and not b.skip.strip():
            problems.append(f"{b.where}: skip without a reason")
        if b.same_as is not None:
            twins = [o for o in shell_blocks(ROOT / b.same_as) if o.runs and o.text == b.text]
            if not twins:
                problems.append(f"{b.where}: same-as {b.same_as}: no block run there has the same text")
        for old, _ in b.replacements:
            if old not in b.text:
                problems.append(f"{b.where}: replace {old!r}: not in the block")
    assert not problems, "\n".join(problems)


def test_commands_are_in_labelled_shell_blocks():
    """An unlabelled block holding a command would escape the runner: commands go in ```bash blocks."""
    bad = [
        b.where
        for p in pages()
        for b in blocks_of(p)
        if b.lang not in SHELL and re.search(r"^\s*(recsys-rl|python|curl|pip) ", b.text, re.M)
    ]
    assert not bad, f"commands outside a shell block: {bad}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop what the block left running in the background (its own process group): TERM, up to 10 s
    to exit, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            continue
        break
    proc.wait()


def _workdir(tmp_path: Path, port: int) -> Path:
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    serve = tmp_path / "configs" / "serve" / "default.yaml"
    serve.write_text(serve.read_text().replace("port: 8000", f"port: {port}"))
    return tmp_path


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RECSYS_RL_CONFIGS")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def run_block(block: Block, cwd: Path, port: int) -> subprocess.CompletedProcess:
    """Run the block with bash -euo pipefail; its output goes to files, not pipes, since a server it
    starts in the background keeps its inherited descriptors open after the block ends."""
    script = block.script().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env=_env(),
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=BLOCK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _stop_group(proc)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out:
        pytest.fail(f"{block.where}: stopped after {BLOCK_TIMEOUT_S} s\n{stdout[-3000:]}\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("page", [_page_param(p) for p in RUN_PAGES])
def test_page_commands_run(page: Path, tmp_path: Path):
    port = _free_port()
    cwd = _workdir(tmp_path, port)
    for block in shell_blocks(page):
        if not block.runs:
            continue
        if block.open_bandit and not (cwd / "all.csv").exists():
            from tests.obd import open_bandit_sample

            shutil.copy(open_bandit_sample(), cwd / "all.csv")
        res = run_block(block, cwd, port)
        shown = f"{block.where}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n{res.stderr[-4000:]}"
        if block.expect_error is not None:
            assert res.returncode != 0, f"expected a refusal:\n{shown}"
            assert block.expect_error in res.stderr, shown
            assert "Traceback" not in res.stderr, shown
        else:
            assert res.returncode == 0, shown
