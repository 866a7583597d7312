"""The commands around the report: generators' summary lines (masks per image, images without any)
and their closing line, which is a `seg-suite report` command that works as printed."""

from __future__ import annotations

import shlex
from pathlib import Path

from chromium_check import check_page
from seg_suite.cli import main
from seg_suite.cli._common import print_summary
from seg_suite.errors import EXIT_USER_ERROR
from seg_suite.pseudo.jobs import coco_mask_counts
from seg_suite.pseudo.runner import RunSummary


def test_coco_mask_counts():
    coco = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
            "annotations": [{"id": 1, "image_id": 1}, {"id": 2, "image_id": 1}, {"id": 3, "image_id": 3}]}
    assert coco_mask_counts(coco) == {"images": 3, "masks": 3, "empty": 1}


def test_summary_line_says_masks_per_image_and_images_without(capsys, tmp_path):
    summary = RunSummary(tmp_path / "o.json", 4, 0, 4, 1.0, failures=tmp_path / "o.failures.jsonl",
                         masks={"images": 4, "masks": 10, "empty": 1})
    assert print_summary(summary) == 0
    assert "4 of 4 items done; 2.50 masks per image, 1 of 4 images got none" in capsys.readouterr().err


def test_maskcut_then_the_printed_report_command(synthetic_dataset, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    images = synthetic_dataset / "images" / "val"
    code = main(["maskcut", "--input", str(images), "--output", "pseudo.json", "--backbone", "handcrafted",
                 "--max-images", "2", "--fixed-size", "240", "--no-crf", "--workers", "0", "--no-progress"])
    assert code == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert "masks per image" in err[-2] and "images got none" in err[-2]
    assert err[-1].startswith("to look at it: seg-suite report --input pseudo.json")
    command = shlex.split(err[-1].split(": ", 1)[1])
    assert main(command[1:]) == 0
    index = Path(command[command.index("--output") + 1]) / "index.html"
    assert index.is_file()
    check_page(index.resolve(), tmp_path, ["zero-masks", "overlays", "per-image", "histograms", "failures"])


def test_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["report", "--input", str(tmp_path / "notes.txt"), "--output", str(tmp_path / "r")]) == EXIT_USER_ERROR
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "notes.txt" in err[0]
    assert not (tmp_path / "r").exists()
