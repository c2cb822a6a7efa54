"""The Makefile installs the torch the user asked for, from the index the user asked for.

Checked with ``make -n`` (commands printed, nothing installed) against a venv
path that does not exist, so every install step is printed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def _dry_run(tmp_path: Path, *args: str) -> list[str]:
    """The commands ``make -n`` prints for ``args``, one per line, with a fresh venv path."""
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "-C", str(ROOT), f"VENV={tmp_path / 'venv'}", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout.splitlines()


def _pip_installs(lines: list[str]) -> list[str]:
    """Every ``pip install`` command in the printed lines (a line's ``||`` alternatives apart)."""
    return [part for line in lines for part in line.split(" || ") if "-m pip install" in part]


def _torch_alone(commands: list[str]) -> list[str]:
    return [c for c in commands if "-e " not in c and "torch" in c and "--upgrade pip" not in c]


def _with_package(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"-e (\.|\"\.\[)", c)]


@pytest.mark.parametrize("target", ["quickstart", "test"])
def test_default_pins_torch_2_13_from_the_configured_index(tmp_path, target):
    commands = _pip_installs(_dry_run(tmp_path, target))
    alone, with_package = _torch_alone(commands), _with_package(commands)
    assert alone and with_package
    for command in commands:
        assert "index-url" not in command, command  # pip's own configuration decides the index
    assert all('"torch==2.13.0"' in c for c in alone), alone
    # the pin sits on the same command line as the package and its extras, so that they do not
    # upgrade torch (the command after `||` is the fallback for a machine without that build)
    first_tries = [line.split(" || ")[0] for line in _dry_run(tmp_path, target) if "-m pip install --quiet -e" in line]
    assert first_tries and all("torch==2.13.0" in c for c in first_tries), first_tries


@pytest.mark.parametrize("target", ["quickstart", "test", "test-fast", "test-quick"])
def test_torch_spec_and_index_reach_every_pip_command(tmp_path, target):
    index = "https://download.example.invalid/whl/cpu"
    lines = _dry_run(tmp_path, target, "TORCH_SPEC=torch==2.99.1", f"TORCH_INDEX={index}")
    commands = _pip_installs(lines)
    alone, with_package = _torch_alone(commands), _with_package(commands)
    assert alone and with_package
    # torch alone: the index replaces the default one (PyTorch's instructions for the CPU build)
    for command in alone:
        assert '"torch==2.99.1"' in command and f"--index-url {index}" in command, command
        assert "--extra-index-url" not in command, command
    # beside other packages: an extra index, so that the other packages still resolve
    for command in with_package:
        assert f"--extra-index-url {index}" in command, command
    first_tries = [line.split(" || ")[0] for line in lines if "-m pip install --quiet -e" in line]
    assert first_tries and all("torch==2.99.1" in c for c in first_tries), first_tries
    assert not any("2.13.0" in c for c in commands), commands


def test_the_older_variable_name_still_sets_the_spec(tmp_path):
    commands = _pip_installs(_dry_run(tmp_path, "quickstart", "TORCH_PIN=torch==2.98.0"))
    assert all('"torch==2.98.0"' in c for c in _torch_alone(commands))


def test_makefile_torch_range_is_the_projects():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch_req,) = [d for d in deps if re.match(r"torch\b", d)]
    (make_range,) = re.findall(r"^TORCH_RANGE := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    assert torch_req == f"torch{make_range.strip()}"


def _installed_torch_probe(tmp_path: Path, *make_args: str) -> str:
    """Run the Makefile's own probe for a torch to keep against this interpreter's environment."""
    venv = Path(sys.prefix)
    proc = subprocess.run(
        ["make", "--no-print-directory", "-n", "-B", "-C", str(ROOT), f"VENV={venv}", "BIN=" + str(Path(sys.executable).parent),
         *make_args, str(venv / ".installed-core")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith('torch="$(')]
    assignment = line[: line.index('"; ') + 1]
    probe = subprocess.run(["bash", "-c", assignment + '; printf %s "$torch"'], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    return probe.stdout


def test_a_torch_already_in_range_is_kept_not_reinstalled(tmp_path):
    from importlib.metadata import version

    assert _installed_torch_probe(tmp_path) == f"torch=={version('torch')}"
    # out of range: nothing to keep, TORCH_SPEC is installed instead
    assert _installed_torch_probe(tmp_path, "TORCH_RANGE=>=99") == ""
