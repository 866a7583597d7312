"""Data files written by somebody else: names that leave their roots, masks larger than their images,
broken or foreign files, and outputs that cannot be written, for visualize, cluster, panoptic and the
evaluators (refine's cases are in tests/pseudo/test_sam.py, beside its tiny SAM model).

Every refusal is either one ``error:`` line with exit code 2 (a whole file is wrong) or the one item
listed as failed/skipped with its reason while the rest goes on.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from huge_masks import HUGE, MAX_RSS_KB, _counts_string, huge_rle, run_measured
from seg_suite.cli import main
from seg_suite.io.masks import mask_to_bbox, mask_to_rle

H, W = 20, 30


# ------------------------------------------------------------------------------------ helpers
def _mask(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def _ann(ann_id, image_id, mask, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "segmentation": mask_to_rle(mask),
            "bbox": mask_to_bbox(mask), "area": int(mask.sum()), "iscrowd": 0, "score": 0.9, **extra}


def _write_json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _state(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def _files_under(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def layout(tmp_path, write_image):
    """``images/`` with two good images, and beside it (outside every root) a secret image and a victim PNG.

    The secret is bright yellow, so any overlay or feature made from it would show; the victim sits at
    ``outside/x.png``, which is both ``images/../outside/x.png`` and ``out/../outside/x.png``.
    """
    images = tmp_path / "images"
    for name, value in (("a.png", 60), ("sub/b.png", 90)):
        img = np.full((H, W, 3), value, np.uint8)
        img[4:12, 5:15] = 200
        write_image(images / name, img)
    secret = write_image(tmp_path / "secret.png", np.full((H, W, 3), (255, 255, 0), np.uint8))
    victim = write_image(tmp_path / "outside" / "x.png", np.full((H, W, 3), 7, np.uint8))
    return tmp_path, images, secret, victim


def hostile_coco(secret: Path, victim: Path) -> dict:
    """Two good images, then names that climb out with '..', through a sub-folder, and absolutely."""
    names = ["a.png", "sub/b.png", "../outside/x.png", "sub/../../secret.png", str(secret), str(victim)]
    images = [{"id": i + 1, "file_name": n, "height": H, "width": W} for i, n in enumerate(names)]
    anns = [_ann(10 + i, i + 1, _mask(4, 12, 5, 15)) for i in range(len(names))]
    anns.append(_ann(30, 1, _mask(14, 18, 20, 28)))
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}


BAD_NAMES = {"../outside/x.png": "climbs out", "sub/../../secret.png": "climbs out"}


def _bad_reasons(secret, victim):
    return {**BAD_NAMES, str(secret): "is absolute", str(victim): "is absolute"}


# ------------------------------------------------------------------ 1. names stay inside their roots
def test_visualize_never_reads_or_writes_outside_its_roots(layout, capsys):
    tmp, images, secret, victim = layout
    before = _state(victim)
    ann = _write_json(tmp / "p.json", hostile_coco(secret, victim))
    rc = main(["visualize", "--input", str(ann), "--images", str(images), "--output", str(tmp / "out"),
               "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert _state(victim) == before  # neither overwritten nor touched
    assert _files_under(tmp / "out") == ["a.png", "sub/b.png"]  # no x.png or secret.png made from outside
    assert "wrote 2 overlays" in out and "4 images skipped" in out
    assert "skipped: image 3: file_name '../outside/x.png' climbs out of its root folder" in out
    assert "skipped: image 4: file_name 'sub/../../secret.png' climbs out" in out
    assert f"skipped: image 5: file_name '{secret}' is absolute" in out
    # the secret's colour is in no overlay
    for name in ("a.png", "sub/b.png"):
        vis = np.asarray(Image.open(tmp / "out" / name))
        assert not np.all(vis == (255, 255, 0), axis=-1).any()


def test_visualize_exits_3_when_nothing_could_be_rendered(layout, capsys):
    tmp, images, secret, victim = layout
    coco = hostile_coco(secret, victim)
    coco["images"] = coco["images"][2:]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] > 2]
    ann = _write_json(tmp / "p.json", coco)
    rc = main(["visualize", "--input", str(ann), "--images", str(images), "--output", str(tmp / "out"),
               "--no-progress"])
    assert rc == 3
    assert "wrote 0 overlays" in capsys.readouterr().out
    assert _files_under(tmp / "out") == []


def _cluster_args(ann, images, out, k=1):
    return ["cluster", "--input", str(ann), "--images", str(images), "--output", str(out), "--k", str(k),
            "--backbone", "handcrafted", "--feature", "pooled", "--input-size", "32", "--workers", "0",
            "--no-progress"]


def _failures(path: Path) -> dict[str, str]:
    return {f["key"]: f["reason"] for f in map(json.loads, path.read_text().splitlines())}


def test_cluster_lists_names_outside_the_image_root_as_failures_and_reads_none(layout):
    tmp, images, secret, victim = layout
    ann = _write_json(tmp / "p.json", hostile_coco(secret, victim))
    out = tmp / "c" / "clustered.json"
    assert main(_cluster_args(ann, images, out)) == 0
    failures = _failures(out.with_name("clustered.features.failures.jsonl"))
    expected = _bad_reasons(secret, victim)
    assert sorted(failures) == sorted(expected)
    for key, fragment in expected.items():
        assert fragment in failures[key], failures[key]
    result = json.loads(out.read_text())
    assert sorted(a["id"] for a in result["annotations"]) == [10, 11, 30]  # only the two good images' masks
    assert result["info"]["clustering"]["num_dropped"] == 4


def test_cluster_where_every_image_fails_exits_3_without_an_output(layout, capsys):
    tmp, images, secret, victim = layout
    coco = hostile_coco(secret, victim)
    coco["images"] = coco["images"][2:]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] > 2]
    ann = _write_json(tmp / "p.json", coco)
    out = tmp / "c" / "clustered.json"
    assert main(_cluster_args(ann, images, out)) == 3
    assert "error: " in capsys.readouterr().err and not out.exists()


def test_panoptic_pseudo_labels_keep_names_inside_images_and_output(layout):
    from seg_suite.pseudo.panoptic import make_panoptic_pseudo_labels
    from seg_suite.pseudo.runner import sidecar_path

    tmp, images, secret, victim = layout
    before = _state(victim)
    ann = _write_json(tmp / "p.json", hostile_coco(secret, victim))
    root = tmp / "pan"
    summary = make_panoptic_pseudo_labels(ann, images, root, "train", link=False, workers=0, progress=False)
    assert summary.num_failed == 4 and _state(victim) == before
    failures = _failures(sidecar_path(summary.output, "failures"))
    for key, fragment in _bad_reasons(secret, victim).items():
        assert fragment in failures[key]
    assert _files_under(root / "panoptic") == ["train/a.png", "train/sub/b.png"]
    assert _files_under(root / "semantic") == ["train/a.png", "train/sub/b.png"]
    assert _files_under(tmp / "outside") == ["x.png"]


def test_stuff_maps_of_listed_images_outside_the_list_stay_in_their_folder(layout):
    from seg_suite.features import build_extractor
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.runner import run_job, sidecar_path
    from seg_suite.pseudo.semantic import StuffAssignJob

    tmp, images, _, victim = layout
    before = _state(victim)
    (images / "in.txt").write_text("a.png\n../outside/x.png\n")  # a list may name files beside its folder
    items = discover_inputs(images / "in.txt")
    assert [i.key for i in items] == ["../outside/x.png", "a.png"]
    dim = build_extractor("handcrafted").embed_dim
    centroids = np.random.default_rng(0).normal(size=(3, dim)).astype(np.float32)
    maps = tmp / "maps"  # maps/../outside/x.png would be the victim itself
    job = StuffAssignJob(centroids, maps, "handcrafted", input_size=32).load()
    summary = run_job(job, items, maps / "semantic.json", progress=False)
    assert summary.num_failed == 1 and _state(victim) == before
    assert "climbs out" in _failures(sidecar_path(summary.output, "failures"))["../outside/x.png"]
    assert _files_under(maps) == ["a.png", "semantic.failures.jsonl", "semantic.json", "semantic.log.jsonl"]


# ----------------------------------------------------------------- 2. sizes checked before decoding
def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "seg_suite.cli", *map(str, args)]


@pytest.fixture
def huge_mask_file(layout):
    """The layout's two good images; one annotation of a.png claims a 60000 x 60000 mask."""
    tmp, images, _, _ = layout
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                       {"id": 2, "file_name": "sub/b.png", "height": H, "width": W}],
            "annotations": [_ann(1, 1, _mask(4, 12, 5, 15)), _ann(2, 2, _mask(4, 12, 5, 15)),
                            _ann(3, 2, _mask(14, 18, 20, 28))],
            "categories": [{"id": 1, "name": "object"}]}
    coco["annotations"][0]["segmentation"] = huge_rle()
    path = _write_json(tmp / "huge.json", coco)
    assert path.stat().st_size < 1500
    return tmp, images, path, coco


@pytest.mark.slow
def test_visualize_skips_a_huge_rle_without_allocating_it(huge_mask_file):
    tmp, images, path, _ = huge_mask_file
    res = run_measured(_cli("visualize", "--input", path, "--images", images, "--output", tmp / "vis",
                            "--no-progress"), tmp)
    assert res["rc"] == 0, res["err"]
    assert res["maxrss_kb"] < MAX_RSS_KB
    assert f"skipped: a.png: annotation 1: RLE size [{HUGE}, {HUGE}] differs from its image's {H}x{W}" in res["out"]
    assert _files_under(tmp / "vis") == ["sub/b.png"]


@pytest.mark.slow
def test_cluster_fails_the_image_with_a_huge_rle_without_allocating_it(huge_mask_file):
    tmp, images, path, _ = huge_mask_file
    out = tmp / "clustered.json"
    res = run_measured(_cli(*_cluster_args(path, images, out)), tmp)
    assert res["rc"] == 0, res["err"]
    assert res["maxrss_kb"] < MAX_RSS_KB
    failures = _failures(tmp / "clustered.features.failures.jsonl")
    assert failures == {"a.png": f"annotation 1 of a.png: RLE size [{HUGE}, {HUGE}] differs from its image's {H}x{W}"}
    assert sorted(a["id"] for a in json.loads(out.read_text())["annotations"]) == [2, 3]


@pytest.mark.slow
@pytest.mark.parametrize("command", ["evaluate-masks", "evaluate"])
def test_evaluators_refuse_a_huge_predicted_rle_without_allocating_it(huge_mask_file, command):
    tmp, _, path, coco = huge_mask_file
    gt = dict(coco, annotations=coco["annotations"][1:])
    gt_path = _write_json(tmp / "gt.json", gt)
    argv = ["evaluate-masks"] if command == "evaluate-masks" else ["evaluate", "--task", "instances",
                                                                   "--fit-on-scored-split"]
    res = run_measured(_cli(*argv, "--pred", path, "--gt", gt_path), tmp)
    assert res["rc"] == 2 and res["maxrss_kb"] < MAX_RSS_KB
    line = _one_error_line(res["err"])
    assert f"RLE size [{HUGE}, {HUGE}] differs from its image's {H}x{W}" in line and str(path) in line


def test_corrupt_counts_skip_the_image_in_visualize_and_fail_it_in_cluster(layout, capsys):
    tmp, images, _, _ = layout
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W},
                       {"id": 2, "file_name": "sub/b.png", "height": H, "width": W}],
            "annotations": [_ann(1, 1, _mask(4, 12, 5, 15)), _ann(2, 2, _mask(4, 12, 5, 15))],
            "categories": [{"id": 1, "name": "object"}]}
    coco["annotations"][0]["segmentation"]["counts"] = _counts_string([H * W, 5])  # 605 pixels in a 20x30 mask
    path = _write_json(tmp / "p.json", coco)
    assert main(["visualize", "--input", str(path), "--images", str(images), "--output", str(tmp / "vis"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped: a.png: annotation 1: RLE runs cover 605 pixels" in out and "wrote 1 overlays" in out
    assert main(_cluster_args(path, images, tmp / "c.json")) == 0
    reason = _failures(tmp / "c.features.failures.jsonl")["a.png"]
    assert reason.startswith("annotation 1 of a.png: RLE runs cover 605 pixels, not the 20x30 = 600")


# ---------------------------------------------------------------------------- 3. whole-file checks
def _broken_files(tmp: Path, good: dict) -> dict[str, Path]:
    dup = json.loads(json.dumps(good))
    dup["images"].append(dict(dup["images"][0], file_name="sub/b.png"))
    orphan = json.loads(json.dumps(good))
    orphan["annotations"].append(_ann(77, 42, _mask(0, 4, 0, 4)))
    text = json.dumps(good)
    return {
        "duplicate image id": _write_json(tmp / "dup.json", dup),
        "annotation of a missing image": _write_json(tmp / "orphan.json", orphan),
        "list of image records": _write_json(tmp / "list.json", good["images"]),
        "truncated": (tmp / "trunc.json", (tmp / "trunc.json").write_text(text[: len(text) // 2]))[0],
    }


EXPECTED = {
    "duplicate image id": "image id 1 appears more than once",
    "annotation of a missing image": "points to image id 42, which is not in 'images'",
    "list of image records": "is not a COCO",
    "truncated": "cannot read",
}


@pytest.fixture
def good_coco(layout):
    tmp, images, _, _ = layout
    coco = {"images": [{"id": 1, "file_name": "a.png", "height": H, "width": W}],
            "annotations": [_ann(1, 1, _mask(4, 12, 5, 15))], "categories": [{"id": 1, "name": "object"}]}
    return tmp, images, coco, _write_json(tmp / "gt.json", coco)


@pytest.mark.parametrize("command", ["visualize", "evaluate-masks", "cluster", "refine", "evaluate"])
@pytest.mark.parametrize("case", list(EXPECTED))
def test_broken_whole_files_are_one_line_exit_2(good_coco, capsys, command, case):
    tmp, images, coco, gt = good_coco
    bad = _broken_files(tmp, coco)[case]
    out = tmp / "out" / "o.json"
    argv = {
        "visualize": ["visualize", "--input", bad, "--images", images, "--output", tmp / "out",
                      "--annotations", gt],
        "evaluate-masks": ["evaluate-masks", "--pred", bad, "--gt", gt],
        "cluster": _cluster_args(bad, images, out),
        "refine": ["refine", "--input", bad, "--images", images, "--output", out, "--random-init",
                   "--workers", "0"],
        "evaluate": ["evaluate", "--task", "instances", "--pred", bad, "--gt", gt],
    }[command]
    assert main([str(a) for a in argv]) == 2
    line = _one_error_line(capsys.readouterr().err)
    expected = EXPECTED[case]
    if command == "refine" and case == "annotation of a missing image":
        expected = "names an image_id not in images"
    if case == "list of image records" and command in ("visualize", "evaluate-masks"):
        expected = "each result needs an integer 'image_id'"  # a list is read as results there
    assert expected in line, line
    assert not out.exists()


def test_visualize_keeps_the_first_of_two_images_drawing_to_one_overlay(layout, capsys):
    tmp, images, _, _ = layout
    Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(images / "a.jpg")
    coco = {"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "a.jpg"}],
            "annotations": [_ann(1, 1, _mask(4, 12, 5, 15)), _ann(2, 2, _mask(0, 20, 0, 30))]}
    path = _write_json(tmp / "p.json", coco)
    assert main(["visualize", "--input", str(path), "--images", str(images), "--output", str(tmp / "vis"),
                 "--no-progress"]) == 0
    assert "skipped: image 2: a.jpg would overwrite the overlay of another image" in capsys.readouterr().out
    vis = np.asarray(Image.open(tmp / "vis" / "a.png"))
    assert np.array_equal(vis[0, 0], [60, 60, 60])  # a.png's own background, not a.jpg's full-image mask


def test_ground_truth_without_area_or_bbox_is_scored(good_coco, capsys):
    tmp, _, coco, _ = good_coco
    bare = dict(coco, annotations=[{k: v for k, v in a.items() if k not in ("area", "bbox")}
                                   for a in coco["annotations"]])
    gt = _write_json(tmp / "bare.json", bare)
    pred = _write_json(tmp / "pred.json", coco)
    out = tmp / "m.json"
    assert main(["evaluate-masks", "--pred", str(pred), "--gt", str(gt), "--output", str(out)]) == 0
    assert json.loads(out.read_text())["AP"] == pytest.approx(100)
    assert main(["evaluate", "--task", "instances", "--fit-on-scored-split", "--pred", str(pred), "--gt", str(gt),
                 "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["segm"]["AP"] == pytest.approx(100) and res["bbox"]["AP"] == pytest.approx(100)


# -------------------------------------------------------------- 4. evaluators refuse other kinds
@pytest.mark.parametrize("pred,fragment", [
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "file_name": "a.png",
                                                                    "segments_info": []}], "categories": []},
     "is a COCO panoptic file"),
    ({"images": [{"id": 1, "file_name": "a.png"}]}, "expected an object with 'images' and 'annotations'"),
    ([{"file_name": "a.png", "mask": "x"}], "each result needs an integer 'image_id'"),
    ([{"image_id": 5, "segmentation": mask_to_rle(_mask(0, 4, 0, 4)), "score": 1.0}],
     "no result in"),
    ({"images": [{"id": 1, "file_name": "elsewhere/z.png"}], "annotations": [], "categories": []},
     "no prediction image matches a ground-truth image by file_name"),
    ({"images": [], "annotations": [], "categories": []}, "lists no images"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"id": 1, "image_id": 1, "score": 1}]},
     "has no 'segmentation'"),
], ids=["panoptic", "no-annotations", "non-results", "unknown-ids", "unknown-names", "empty", "no-masks"])
def test_evaluate_masks_refuses_what_it_does_not_score(good_coco, capsys, pred, fragment):
    tmp, _, _, gt = good_coco
    path = _write_json(tmp / "pred.json", pred)
    rc = main(["evaluate-masks", "--pred", str(path), "--gt", str(gt)])
    captured = capsys.readouterr()
    assert rc == 2 and "AP50" not in captured.out  # no all-zero table
    line = _one_error_line(captured.err)
    assert fragment in line and str(path) in line, line


def test_evaluate_masks_refuses_a_result_list_as_ground_truth(good_coco, capsys):
    tmp, _, coco, gt = good_coco
    results = _write_json(tmp / "res.json", [dict(a, score=1.0) for a in coco["annotations"]])
    assert main(["evaluate-masks", "--pred", str(gt), "--gt", str(results)]) == 2
    assert "a result list needs the ground-truth file beside it" in _one_error_line(capsys.readouterr().err)


def _davis_tree(tmp: Path):
    """DAVIS' layout: JPEGImages/480p/<seq>/*.jpg beside Annotations/480p/<seq>/*.png, and predictions."""
    frames, annotations, pred = tmp / "JPEGImages" / "480p", tmp / "Annotations" / "480p", tmp / "pred"
    mask = np.zeros((16, 16), np.uint8)
    mask[2:10, 2:10] = 255
    for root in (frames, annotations, pred):
        (root / "bear").mkdir(parents=True)
    for i in range(4):
        Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(frames / "bear" / f"{i:05d}.jpg")
        for root in (annotations, pred):
            Image.fromarray(mask).save(root / "bear" / f"{i:05d}.png")
    return frames, annotations, pred


@pytest.mark.parametrize("which", ["gt", "pred"])
def test_evaluate_video_refuses_the_frames_folder(tmp_path, capsys, which):
    frames, annotations, pred = _davis_tree(tmp_path)
    assert main(["evaluate-video", "--gt", str(annotations), "--pred", str(pred)]) == 0
    capsys.readouterr()
    gt_arg, pred_arg = (frames, pred) if which == "gt" else (annotations, frames)
    assert main(["evaluate-video", "--gt", str(gt_arg), "--pred", str(pred_arg)]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert f"--{which} {frames} holds JPEG frames" in line and "J-Mean" not in captured.out


def test_evaluate_video_refuses_a_missing_prediction_folder_and_a_sequence_folder(tmp_path, capsys):
    _, annotations, pred = _davis_tree(tmp_path)
    assert main(["evaluate-video", "--gt", str(annotations), "--pred", str(tmp_path / "nope")]) == 2
    assert "prediction folder not found" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate-video", "--gt", str(annotations / "bear"), "--pred", str(pred)]) == 2
    assert "pass its parent folder" in _one_error_line(capsys.readouterr().err)


def test_evaluate_refuses_files_of_another_task(synthetic_dataset, capsys):
    root = synthetic_dataset
    inst = root / "annotations" / "instances_val.json"
    pan = root / "annotations" / "panoptic_val.json"
    sem = root / "semantic" / "val"
    cases = [
        (["--task", "instances", "--pred", pan, "--gt", inst], "is a COCO panoptic file", pan),
        (["--task", "panoptic", "--pred", inst, "--gt", pan, "--pred-folder", root / "panoptic" / "val",
          "--gt-folder", root / "panoptic" / "val"], "is a COCO instance file", inst),
        (["--task", "semantic", "--pred", inst, "--gt", sem], "is a file; --task semantic scores folders", inst),
        (["--task", "semantic", "--pred", root / "videos" / "JPEGImages", "--gt", sem], "holds no PNG label maps",
         root / "videos" / "JPEGImages"),
    ]
    for argv, fragment, named in cases:
        assert main(["evaluate", "--fit-on-scored-split", "--no-progress", *map(str, argv)]) == 2, argv
        line = _one_error_line(capsys.readouterr().err)
        assert fragment in line and (named is None or str(named) in line), line


def test_evaluate_panoptic_refuses_png_names_outside_their_folder(synthetic_dataset, tmp_path, capsys):
    root = synthetic_dataset
    pan = json.loads((root / "annotations" / "panoptic_val.json").read_text())
    pan["annotations"][0]["file_name"] = "../../annotations/../secret.png"
    pred = _write_json(tmp_path / "pan.json", pan)
    folder = str(root / "panoptic" / "val")
    assert main(["evaluate", "--task", "panoptic", "--fit-on-scored-split", "--no-progress", "--pred", str(pred),
                 "--gt", str(root / "annotations" / "panoptic_val.json"), "--pred-folder", folder,
                 "--gt-folder", folder]) == 2
    assert "climbs out of its root folder" in _one_error_line(capsys.readouterr().err)


# -------------------------------------------------------------------------- 5. unwritable outputs
def _unwritable(tmp: Path, where: str) -> Path:
    if where == "under-a-file":
        (tmp / "plain.txt").write_text("a file, not a folder")
        return tmp / "plain.txt" / "sub"
    return Path("/proc") / "seg_suite_no_such_dir" / "sub"  # root may write anywhere, but not here


@pytest.mark.parametrize("where", ["under-a-file", "under-proc"])
@pytest.mark.parametrize("command", ["visualize", "evaluate-masks", "evaluate-video", "evaluate", "cluster",
                                     "refine"])
def test_unwritable_outputs_are_refused_before_any_work(good_coco, tmp_path, capsys, command, where):
    tmp, images, coco, gt = good_coco
    bad = _unwritable(tmp, where)
    _, annotations, pred = _davis_tree(tmp_path / "video")
    argv = {
        "visualize": ["visualize", "--input", gt, "--images", images, "--output", bad],
        "evaluate-masks": ["evaluate-masks", "--pred", gt, "--gt", gt, "--output", bad / "m.json"],
        "evaluate-video": ["evaluate-video", "--gt", annotations, "--pred", pred, "--output", bad / "v.json"],
        "evaluate": ["evaluate", "--task", "instances", "--fit-on-scored-split", "--pred", gt, "--gt", gt,
                     "--output", bad / "r.json"],
        "cluster": _cluster_args(gt, images, bad / "c.json"),
        "refine": ["refine", "--input", gt, "--images", images, "--output", bad / "r.json", "--random-init",
                   "--workers", "0"],
    }[command]
    assert main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "cannot write" in line and str(bad) in line, line
    assert "AP" not in captured.out and "J-Mean" not in captured.out  # refused before scoring
