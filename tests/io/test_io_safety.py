"""The boundary checks of seg_suite.io: paths from data files, masks before decoding, COCO structure,
safe YAML, atomic writes under the umask, and children that die with their parent."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from seg_suite.errors import UserError
from seg_suite.io.coco import check_results, read_coco
from seg_suite.io.files import atomic_write, atomic_write_json, check_writable_dir
from seg_suite.io.masks import MaskFormatError, _rle_counts_total, check_segmentation, mask_to_rle, rle_to_mask
from seg_suite.io.paths import PathEscapeError, output_path_under, resolve_under, safe_relative
from seg_suite.io.safe_yaml import load_config_chain, load_yaml


# ------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("name", ["../x.png", "a/../../x.png", "/etc/passwd", "\\\\server\\x", "C:\\x.png",
                                  "C:x.png", "", ".", "a/..", "x\x00.png"])
def test_safe_relative_refuses_escapes(name):
    with pytest.raises(PathEscapeError):
        safe_relative(name)


@pytest.mark.parametrize("name,expected", [("a/b.png", "a/b.png"), ("./a//b.png", "a/b.png"),
                                           ("a/../b.png", "b.png"), ("a\\b.png", "a/b.png")])
def test_safe_relative_normalises(name, expected):
    assert safe_relative(name).as_posix() == expected


def test_resolve_under_stays_in_root(tmp_path):
    assert resolve_under(tmp_path, "sub/x.png") == tmp_path / "sub" / "x.png"
    with pytest.raises(PathEscapeError, match="climbs out"):
        resolve_under(tmp_path, "sub/../../x.png", "file_name")


def test_output_path_under_refuses_a_link_leading_out(tmp_path):
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "link").symlink_to(elsewhere, target_is_directory=True)
    assert output_path_under(out, "a/b.png") == out / "a" / "b.png"
    with pytest.raises(PathEscapeError, match="through a link"):
        output_path_under(out, "link/x.png")


# ------------------------------------------------------------------------------------ masks
def test_counts_total_matches_pycocotools_on_random_masks():
    rng = np.random.default_rng(0)
    for trial in range(200):
        h, w = (int(v) for v in rng.integers(1, 70, 2))
        mask = rng.random((h, w)) < rng.random()
        if trial % 7 == 0:
            mask[:] = trial % 2 == 0
        rle = mask_to_rle(mask)
        assert _rle_counts_total(rle["counts"]) == h * w
        assert np.array_equal(rle_to_mask(rle, h, w), mask)
    big = np.zeros((2000, 3000), bool)
    big[10:1990, 1:2999] = True  # runs of millions: multi-digit groups
    assert _rle_counts_total(mask_to_rle(big)["counts"]) == 6_000_000


def test_oversized_rle_is_refused_before_allocation():
    rle = {"size": [60000, 60000], "counts": "PPYo1"}
    with pytest.raises(MaskFormatError, match="differs from its image"):
        rle_to_mask(rle, 100, 100)
    with pytest.raises(MaskFormatError, match="MP limit"):
        rle_to_mask(rle)  # no image size given: the RLE's own size is checked against the limit


def test_corrupt_counts_are_refused():
    good = mask_to_rle(np.eye(8, dtype=bool))
    for counts, reason in [("~~~~", "alphabet"), (good["counts"][:-1] + "o", "middle of a number"),
                           ("3", "cover"), (good["counts"] + "3", "cover")]:
        with pytest.raises(MaskFormatError, match=reason):
            rle_to_mask({"size": [8, 8], "counts": counts}, 8, 8)
    # runs that add up to the size but include a negative one (corrupt, not just truncated)
    with pytest.raises(MaskFormatError, match="negative run"):
        rle_to_mask({"size": [8, 8], "counts": _encode_counts([10, 30, -5, 29])}, 8, 8)


def _encode_counts(runs: list[int]) -> str:
    """COCO's compressed counts, written from its format description (to build corrupt ones)."""
    out = []
    for i, run in enumerate(runs):
        x = run - runs[i - 2] if i > 2 else run
        more = True
        while more:
            c = x & 0x1F
            x >>= 5
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
    return "".join(out)


def test_encoder_agrees_with_pycocotools():
    mask = np.zeros((8, 8), bool)
    mask[2:5, 1:7] = True
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    runs = [len(r) for r in _runs(mask.T.ravel())]
    assert _encode_counts(runs) == rle["counts"].decode()


def _runs(flat: np.ndarray) -> list[np.ndarray]:
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    parts = np.split(flat, edges)
    return ([np.array([], bool)] if flat[0] else []) + parts


@pytest.mark.parametrize("segmentation", [[[1, 2, 3, 4]], [[1, 2, 3]], [[0, 0, 5, float("nan"), 1, 1]], [],
                                          "abc", {"size": [4, 4], "counts": 5},
                                          {"size": [4, 4], "counts": [3, -1, 14]}, {"size": [4], "counts": ""}])
def test_malformed_segmentations_are_refused(segmentation):
    with pytest.raises(MaskFormatError):
        check_segmentation(segmentation, 4, 4)


# ------------------------------------------------------------------------------------- COCO
def _coco(**changes):
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": 4, "width": 4},
                       {"id": 2, "file_name": "b.png", "height": 4, "width": 4}],
            "annotations": [{"id": 1, "image_id": 1, "segmentation": mask_to_rle(np.eye(4, dtype=bool))}],
            "categories": [{"id": 1, "name": "object"}]}
    coco.update(changes)
    return coco


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "expected an object with 'images'"),
    ('{"images": [], "annot', "cannot read"),
    (json.dumps(_coco(images=[{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}])),
     "image id 1 appears more than once"),
    (json.dumps(_coco(annotations=[{"id": 1, "image_id": 9}])), "points to image id 9"),
    (json.dumps(_coco(annotations=[{"id": 3, "image_id": 1}, {"id": 3, "image_id": 2}])),
     "annotation id 3 appears more than once"),
    (json.dumps(_coco(images=[{"id": 1, "file_name": "a.png", "height": 60000, "width": 60000}])), "MP limit"),
    (json.dumps(_coco(images=[{"id": "1", "file_name": "a.png"}])), "integer 'id'"),
    (json.dumps(_coco(annotations=[{"id": 1, "image_id": 1, "category_id": 7}])), "category_id 7"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_read_coco_refuses_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        read_coco(path)


def test_read_coco_checks_masks_and_names_when_asked(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps(_coco()))
    assert len(read_coco(path, check_masks=True)["annotations"]) == 1
    bad_mask = _coco(annotations=[{"id": 1, "image_id": 1, "segmentation": {"size": [60000, 60000], "counts": "PP"}}])
    path.write_text(json.dumps(bad_mask))
    assert read_coco(path)["annotations"]  # structure only: a per-item consumer refuses it at decode
    with pytest.raises(UserError, match="annotation 1 of image 1: RLE size"):
        read_coco(path, check_masks=True)
    path.write_text(json.dumps(_coco(images=[{"id": 1, "file_name": "../up.png", "height": 4, "width": 4}],
                                     annotations=[])))
    with pytest.raises(UserError, match="climbs out"):
        read_coco(path, check_masks=True)


def test_check_results():
    ok = [{"image_id": 1, "segmentation": {}, "score": 0.5}]
    assert check_results(ok, "p.json", image_ids=[1]) == ok
    with pytest.raises(UserError, match="expected a list of results"):
        check_results({"annotations": []}, "p.json")
    with pytest.raises(UserError, match="does not list"):
        check_results(ok, "p.json", image_ids=[2])
    with pytest.raises(UserError, match="not a number"):
        check_results([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": "high"}], "p.json")


# ------------------------------------------------------------------------------------- YAML
def test_yaml_python_tags_never_run(tmp_path):
    marker = tmp_path / "PWNED"
    (tmp_path / "base.yaml").write_text(f'SEED: !!python/object/apply:os.system ["touch {marker}"]\nA: 1\n')
    (tmp_path / "child.yaml").write_text("_BASE_: base.yaml\nB: 2\n")
    for name in ("base.yaml", "child.yaml"):
        with pytest.raises(UserError, match=r"base\.yaml, line 1: refused the YAML tag !!python/object/apply"):
            load_config_chain(tmp_path / name)
    assert not marker.exists()


def test_config_chain_merges_and_refuses_loops(tmp_path):
    (tmp_path / "base.yaml").write_text("A: {X: 1, Y: 2}\nB: 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nA: {Y: 5}\n")
    assert load_config_chain(tmp_path / "sub" / "child.yaml") == {"A": {"X": 1, "Y": 5}, "B": 1}
    (tmp_path / "loop.yaml").write_text("_BASE_: loop.yaml\n")
    with pytest.raises(UserError, match="loops"):
        load_config_chain(tmp_path / "loop.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(UserError, match="not a mapping"):
        load_config_chain(tmp_path / "list.yaml")
    bomb = ["d0: &d0 {x: 1, y: 2}"] + [f"d{i}: &d{i} {{" + ", ".join(f"k{j}: *d{i - 1}" for j in range(9)) + "}"
                                       for i in range(1, 10)]
    (tmp_path / "bomb.yaml").write_text("\n".join(bomb) + "\n")
    with pytest.raises(UserError, match="expands to more than"):  # 9**9 dicts if expanded
        load_config_chain(tmp_path / "bomb.yaml")
    (tmp_path / "syntax.yaml").write_text("A: [1, 2\n")
    with pytest.raises(UserError, match=r"syntax\.yaml, line \d+: not valid YAML"):
        load_yaml(tmp_path / "syntax.yaml")


# ---------------------------------------------------------------------------- atomic writes
def _in_subprocess(code: str, umask: int) -> None:
    subprocess.run([sys.executable, "-c", f"import os; os.umask({umask}); " + code], check=True)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_honour_the_umask(tmp_path, umask, mode):
    out = tmp_path / "out.json"
    _in_subprocess(f"from seg_suite.io.files import atomic_write_json; atomic_write_json({str(out)!r}, [1])", umask)
    assert stat.S_IMODE(out.stat().st_mode) == mode
    plain = tmp_path / "plain"
    _in_subprocess(f"open({str(plain)!r}, 'w').close()", umask)
    assert stat.S_IMODE(plain.stat().st_mode) == mode  # exactly what open() gives


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    out = tmp_path / "out.json"
    atomic_write_json(out, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(out) as fh:
            fh.write('{"v": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(out.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]  # no temporary left behind


@pytest.mark.parametrize("where", ["file", "proc"])
def test_unwritable_destinations_are_one_line_errors(tmp_path, where):
    (tmp_path / "regular").write_text("x")
    folder = tmp_path / "regular" / "sub" if where == "file" else Path("/proc/seg_suite_test")
    with pytest.raises(UserError, match="cannot write") as err:
        atomic_write_json(folder / "out.json", [1])
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="cannot write to the output folder"):
        check_writable_dir(folder)
    assert check_writable_dir(tmp_path / "new" / "deep") == tmp_path / "new" / "deep"


# ------------------------------------------------------------------------------ children
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_forked_children_die_with_their_parent_and_ignore_sigterm(tmp_path):
    import psutil
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(f"""
        import os, signal, time
        from seg_suite import signals
        signals.install()
        pid = os.fork()
        if pid == 0:
            time.sleep(120)
            os._exit(0)
        open({str(pid_file)!r}, "w").write(str(pid))
        time.sleep(120)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not (pid_file.exists() and pid_file.read_text()) and time.time() < deadline:
            time.sleep(0.1)
        child = psutil.Process(int(pid_file.read_text()))
        time.sleep(0.5)  # let the child finish its at-fork set-up
        os.kill(child.pid, signal.SIGTERM)  # ignored: the parent decides when children stop
        time.sleep(0.5)
        assert child.is_running() and child.status() != psutil.STATUS_ZOMBIE
        parent.kill()  # SIGKILL: no Python code runs in the parent
        parent.wait()
        gone, alive = psutil.wait_procs([child], timeout=5)
        assert not alive, "the forked child outlived its SIGKILLed parent"
    finally:
        parent.kill()


def test_sigterm_raises_terminated_in_the_main_thread():
    script = textwrap.dedent("""
        import os, signal, sys, time
        from seg_suite import signals
        signals.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
        except signals.Terminated as err:
            sys.exit(signals.exit_code(err))
        sys.exit(0)
    """)
    assert subprocess.run([sys.executable, "-c", script]).returncode == 143


def test_a_stop_waits_for_the_item_being_fetched():
    script = textwrap.dedent("""
        import os, signal, sys
        from seg_suite import signals
        signals.install()
        log = []

        class Source:
            def __init__(self, kills):
                self.kills = kills
            def __iter__(self):
                return self
            def __next__(self):
                for _ in range(self.kills):
                    os.kill(os.getpid(), signal.SIGTERM)
                log.append("received")  # the item arrived whole
                return 1

        try:
            for _ in signals.fetching(Source(1)):
                log.append("yielded")
        except signals.Terminated:
            log.append("stopped")
        try:
            for _ in signals.fetching(Source(2)):  # a second signal does not wait
                log.append("yielded")
        except signals.Terminated:
            log.append("stopped")
        print(" ".join(log))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["received", "stopped", "stopped"], res.stderr
