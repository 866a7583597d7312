"""The one stage marker (seg_suite.workflows.stages): marks, skips a done stage, reruns on a new config."""

import json

import pytest

from seg_suite.workflows.stages import Stage


def _run(stage: Stage, calls: list) -> dict:
    done = stage.done()
    if done is not None:
        return done
    calls.append(stage.name)
    stage.start()
    return stage.finish({"value": len(calls)})


def test_a_finished_stage_is_marked_and_skipped(tmp_path):
    calls = []
    stage = Stage(tmp_path / "cluster", "cluster", config={"k": 8})
    assert stage.done() is None
    first = _run(stage, calls)
    marker = json.loads((tmp_path / "cluster" / "stage.json").read_text())
    assert marker == first and marker["value"] == 1 and marker["stage"] == "cluster"
    assert marker["config"] == {"k": 8} and isinstance(marker["seconds"], float)
    again = _run(Stage(tmp_path / "cluster", "cluster", config={"k": 8}), calls)
    assert again == first and calls == ["cluster"]


def test_a_stage_reruns_when_its_config_changes(tmp_path):
    calls = []
    _run(Stage(tmp_path / "s", "s", config={"k": 8}), calls)
    changed = _run(Stage(tmp_path / "s", "s", config={"k": 6}), calls)
    assert calls == ["s", "s"] and changed["value"] == 2 and changed["config"] == {"k": 6}
    # ... and the new record is what a later run with that config finds.
    assert Stage(tmp_path / "s", "s", config={"k": 6}).done() == changed
    assert Stage(tmp_path / "s", "s", config={"k": 8}).done() is None


def test_untimed_marker_without_config_holds_the_record_only(tmp_path):
    stage = Stage(tmp_path / "round_1", "round_1", marker="round.json")
    record = {"round": 1, "annotations": 3}
    assert stage.finish(record, timed=False) == record
    assert json.loads((tmp_path / "round_1" / "round.json").read_text()) == record
    assert Stage(tmp_path / "round_1", "round_1", marker="round.json").done() == record
    # Without a config to compare, any finished marker counts as done.
    assert Stage(tmp_path / "round_1", "other", marker="round.json").done() == record


def test_an_interrupted_stage_leaves_no_marker(tmp_path):
    stage = Stage(tmp_path / "train", "train", config={})
    try:
        stage.start()
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert stage.done() is None and not (tmp_path / "train" / "stage.json").exists()


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b"[1, 2]"])
def test_a_damaged_marker_counts_as_not_done(tmp_path, content):
    stage = Stage(tmp_path / "s", "s")
    stage.folder.mkdir()
    stage.marker.write_bytes(content)
    assert stage.done() is None
    assert stage.finish({"n": 1})["n"] == 1
    assert Stage(tmp_path / "s", "s").done()["n"] == 1
