"""`seg-suite --help` and each command's --help load no heavy library (checked by module, not by time)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "cv2", "detectron2", "sklearn", "scipy", "matplotlib", "timm", "segment_anything")

# A child that runs `python -m seg_suite.cli ARGS --help` and prints which HEAVY modules it loaded.
CHILD = """
import contextlib, io, json, runpy, sys
args, heavy = json.loads(sys.argv[1]), json.loads(sys.argv[2])
sys.argv = ["seg-suite"] + args + ["--help"]
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        runpy.run_module("seg_suite.cli", run_name="__main__")
    except SystemExit as err:
        code = err.code
print(json.dumps({"code": code, "help": out.getvalue(),
                  "loaded": sorted(m for m in heavy if m in sys.modules)}))
"""


def _help(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(list(args)), json.dumps(HEAVY)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _commands() -> list[str]:
    from seg_suite.cli import command_modules

    return [getattr(m, "COMMAND", m.__name__) for m in command_modules()]


def test_every_command_module_names_its_command_and_help_line():
    from seg_suite.cli import command_modules

    for module in command_modules():  # without them the module is built in full for every command
        assert isinstance(getattr(module, "COMMAND", None), str), module.__name__
        assert isinstance(getattr(module, "HELP", None), str), module.__name__



def test_top_level_help_lists_every_command_and_loads_nothing_heavy():
    result = _help()
    assert result["code"] == 0
    assert result["loaded"] == []
    for command in _commands():
        assert command in result["help"]


@pytest.mark.parametrize("command", _commands())
def test_command_help_loads_nothing_heavy(command):
    result = _help(command)
    assert result["code"] == 0
    assert f"usage: seg-suite {command}" in result["help"]
    assert result["loaded"] == []


def test_maskcut_help_is_the_full_parser():
    text = _help("maskcut")["help"]
    for flag in ("--precision", "--tau", "--solver", "--backbone", "--num-shards"):
        assert flag in text


def test_maskcut_solvers_are_ncut_solvers():
    from seg_suite.pseudo import maskcut_params, ncut

    assert maskcut_params.SOLVERS == ncut.SOLVERS
