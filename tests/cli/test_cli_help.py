"""`seg-suite COMMAND --help` reads the same everywhere: one flag name per idea, defaults stated
once and only for optional flags; older flag spellings still work, unlisted, with one warning line."""

from __future__ import annotations

import argparse
import json
import re

import numpy as np
import pytest
from PIL import Image

from seg_suite.cli import build_parser, main
from seg_suite.io.masks import mask_to_rle


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


COMMANDS = sorted(_subparsers())

# Spellings replaced by --images, --input, --annotations and --output; none may appear in any help.
OLD_SPELLINGS = ("--image-root", "--images-root", "--input-json", "--instances", "--gt-json", "--output-dir",
                 "--output-root", "--train-json", "--inputs")

# The flags of the name families each command has, under their one name.
FAMILY_FLAGS = {
    "cluster": {"--input", "--images", "--output"},
    "evaluate": {"--pred", "--gt", "--output"},
    "evaluate-masks": {"--pred", "--gt", "--images", "--output"},
    "evaluate-video": {"--pred", "--gt", "--output"},
    "make-synthetic": {"--output"},
    "maskcut": {"--input", "--output"},
    "merge": {"--input", "--output"},
    "motion-masks": {"--input", "--output"},
    "panoptic": {"--input", "--images", "--output"},
    "pipeline": {"--output"},
    "predict": {"--input", "--output"},
    "refine": {"--input", "--images", "--output"},
    "report": {"--input", "--annotations", "--images", "--gt", "--output"},
    "run": {"--output"},
    "sam-masks": {"--input", "--output"},
    "self-train": {"--input", "--images", "--output"},
    "semantic-pseudo": {"--input", "--output"},
    "train-motion": {"--input", "--output"},
    "visualize": {"--input", "--images", "--annotations", "--output"},
}

DEFAULT_NOTE = re.compile(r"\((?:no )?default\b", re.IGNORECASE)


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main([command, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict[str, str]:
    """Help entry of each flag (keyed by its first listed spelling), wrapped lines joined."""
    entries: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        start = re.match(r"^  (-[^\s,]+)", line)
        if start:
            key = start.group(1)
            entries[key] = line.strip()
        elif key is not None and line.startswith("   "):
            entries[key] += " " + line.strip()
        else:
            key = None
    return entries


def test_every_command_is_covered():
    assert set(COMMANDS) == set(FAMILY_FLAGS)


@pytest.mark.parametrize("command", COMMANDS)
def test_help_states_each_default_once_and_never_for_a_required_flag(command, capsys):
    text = _help(command, capsys)
    entries = _entries(text)
    assert "(default: None)" not in text
    assert not re.search(r"\bissue\s*#?\d+", text, re.IGNORECASE)
    for action in _subparsers()[command]._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        entry = entries[action.option_strings[0]]
        notes = DEFAULT_NOTE.findall(entry)
        if action.required or "(required)" in entry:
            assert not notes, f"{command}: a required flag shows a default: {entry}"
        else:
            assert len(notes) == 1, f"{command}: an optional flag must state its default once: {entry}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_uses_one_name_per_idea(command, capsys):
    text = _help(command, capsys)
    listed = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    assert not listed & set(OLD_SPELLINGS), f"{command} lists {sorted(listed & set(OLD_SPELLINGS))}"
    flags = set(_entries(text))
    assert FAMILY_FLAGS[command] <= flags, f"{command} lacks {sorted(FAMILY_FLAGS[command] - flags)}"


def test_batch_size_defaults_name_their_own_source(capsys):
    sam = _entries(_help("sam-masks", capsys))["--batch-size"]
    assert "MaskCut" not in sam and "segment-anything" in sam
    assert "the reference MaskCut" in _entries(_help("maskcut", capsys))["--batch-size"]
    for command in ("cluster", "motion-masks", "panoptic", "refine", "semantic-pseudo"):
        entry = _entries(_help(command, capsys))["--batch-size"]
        assert "MaskCut" not in entry and "seg_suite's choice" in entry


# command, older spelling, current spelling, the other required flags
RENAMED = [
    ("cluster", "--input-json", "--input", ["--images", "i", "--output", "o.json"]),
    ("refine", "--input-json", "--input", ["--images", "i", "--output", "o.json"]),
    ("panoptic", "--instances", "--input", ["--images", "i", "--output", "o"]),
    ("panoptic", "--output-root", "--output", ["--input", "c.json", "--images", "i"]),
    ("semantic-pseudo", "--images", "--input", ["--output", "o"]),
    ("semantic-pseudo", "--output-dir", "--output", ["--input", "i"]),
    ("self-train", "--train-json", "--input", ["--config-file", "c.yaml", "--images", "i", "--output", "o"]),
    ("self-train", "--image-root", "--images", ["--config-file", "c.yaml", "--input", "p.json", "--output", "o"]),
    ("evaluate-masks", "--images-root", "--images", ["--pred", "p.json", "--gt", "g.json"]),
    ("merge", "--inputs", "--input", ["--output", "o.json"]),
]


@pytest.mark.parametrize("command, old, new, rest", RENAMED, ids=[f"{c} {o}" for c, o, _, _ in RENAMED])
def test_an_older_spelling_still_works_and_warns_once(command, old, new, rest, capsys):
    parser = build_parser()
    with_old = parser.parse_args([command, old, "VALUE", *rest])
    err = capsys.readouterr().err
    with_new = parser.parse_args([command, new, "VALUE", *rest])
    dest = new.lstrip("-").replace("-", "_")
    expected = ["VALUE"] if command == "merge" else "VALUE"
    assert getattr(with_old, dest) == getattr(with_new, dest) == expected
    assert vars(with_old) == vars(with_new)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and old in lines[0] and f"use {new}" in lines[0], err
    assert capsys.readouterr().err == ""  # the current spelling warns about nothing


def _draw_fixture(tmp_path):
    image = np.zeros((24, 32, 3), np.uint8)
    image[4:14, 6:20] = (200, 120, 40)
    Image.fromarray(image).save(tmp_path / "x.png")
    mask = np.zeros((24, 32), np.uint8)
    mask[4:14, 6:20] = 1
    gt = {"images": [{"id": 3, "file_name": "x.png", "height": 24, "width": 32}],
          "annotations": [{"id": 1, "image_id": 3, "category_id": 1, "segmentation": mask_to_rle(mask),
                           "area": 140, "bbox": [6, 4, 14, 10], "iscrowd": 0}],
          "categories": [{"id": 1, "name": "object"}]}
    results = [{"image_id": 3, "category_id": 1, "segmentation": mask_to_rle(mask), "score": 0.9}]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    return tmp_path / "res.json", tmp_path / "gt.json"


def test_visualize_reads_the_older_command_line_the_same_way(tmp_path, capsys):
    results, gt = _draw_fixture(tmp_path)
    common = ["--images", str(tmp_path), "--no-progress"]
    assert main(["visualize", "--input", str(results), "--annotations", str(gt), "--output",
                 str(tmp_path / "new"), *common]) == 0
    assert capsys.readouterr().err == ""
    # the older spelling: the file to draw was --annotations, the file names came from --gt-json
    assert main(["visualize", "--annotations", str(results), "--gt-json", str(gt), "--output",
                 str(tmp_path / "old"), *common]) == 0
    err = capsys.readouterr().err
    assert "use --annotations" in err and "now given with --input" in err
    new, old = (tmp_path / "new" / "x.png").read_bytes(), (tmp_path / "old" / "x.png").read_bytes()
    assert new == old


def test_visualize_without_a_file_to_draw_is_one_line(tmp_path, capsys):
    assert main(["visualize", "--images", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --input is required: the COCO file or result list to draw"]
    assert not (tmp_path / "o").exists()


def test_visualize_refuses_both_spellings_of_the_annotations(tmp_path, capsys):
    results, gt = _draw_fixture(tmp_path)
    assert main(["visualize", "--input", str(results), "--annotations", str(gt), "--gt-json", str(gt),
                 "--images", str(tmp_path), "--output", str(tmp_path / "o")]) == 2
    assert "give only --annotations" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
