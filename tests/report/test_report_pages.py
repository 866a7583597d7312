"""seg-suite report: every input kind, opened in headless Chromium (no console output, every <img>
on disk, a screenshot that is not blank, the sections its inputs call for)."""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chromium_check import CHROMIUM, check_page
from seg_suite.errors import UserError
from seg_suite.report import build_report

COCO_SECTIONS = ["zero-masks", "overlays", "per-image", "histograms", "failures"]


@pytest.fixture(scope="module", autouse=True)
def _chromium():
    assert Path(CHROMIUM).exists(), "headless Chromium is missing: `make setup` installs Debian's chromium package"


@pytest.fixture(scope="module")
def predictions(synthetic_dataset, tmp_path_factory) -> Path:
    """The val ground truth as scored predictions, with the first image's masks removed (an image
    without masks) and a failures file beside it."""
    gt = json.loads((synthetic_dataset / "annotations" / "instances_val.json").read_text())
    pred = copy.deepcopy(gt)
    first = pred["images"][0]["id"]
    pred["annotations"] = [dict(a, score=0.5 + 0.05 * i) for i, a in enumerate(pred["annotations"])
                           if a["image_id"] != first]
    folder = tmp_path_factory.mktemp("pred")
    (folder / "pred.json").write_text(json.dumps(pred))
    (folder / "pred.failures.jsonl").write_text(json.dumps({"key": "broken.png", "path": "x/broken.png",
                                                            "reason": "cannot read image: truncated file"}) + "\n")
    return folder / "pred.json"


def _html(index: Path) -> str:
    return index.read_text(encoding="utf-8")


def _tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_predictions_with_ground_truth(synthetic_dataset, predictions, tmp_path):
    gt = synthetic_dataset / "annotations" / "instances_val.json"
    index = build_report(predictions, tmp_path / "r", images=synthetic_dataset / "images" / "val", gt=gt)
    loaded = check_page(index, tmp_path, COCO_SECTIONS)
    html = _html(index)
    empty = json.loads(gt.read_text())["images"][0]["file_name"]
    zero = html.split('id="zero-masks"')[1].split("</section>")[0]
    assert empty in zero and "Images without masks (1)" in zero
    assert "cannot read image: truncated file" in html  # the failures file's entry
    assert len([s for s in loaded.images if ".thumb." in s]) == 6  # one thumbnail per image
    assert "IoU with ground truth" in html
    # the image without masks leads the gallery, and its IoU with the ground truth is 0
    first_caption = re.search(r"<figcaption>([^<]*)</figcaption>", html).group(1)
    assert first_caption.startswith(empty) and "IoU with ground truth 0.00" in first_caption


def test_max_images_keeps_empty_worst_and_best(synthetic_dataset, predictions, tmp_path):
    gt = synthetic_dataset / "annotations" / "instances_val.json"
    index = build_report(predictions, tmp_path / "r", images=synthetic_dataset / "images" / "val", gt=gt,
                         max_images=3)
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", _html(index))
    assert len(captions) == 3
    assert "0 masks" in captions[0]
    assert "IoU with ground truth 1.00" in captions[-1]  # the best image is kept


def test_build_is_deterministic_and_replaces_only_reports(predictions, synthetic_dataset, tmp_path):
    images = synthetic_dataset / "images" / "val"
    build_report(predictions, tmp_path / "a", images=images)
    build_report(predictions, tmp_path / "b", images=images)
    assert _tree_digest(tmp_path / "a") == _tree_digest(tmp_path / "b")
    build_report(predictions, tmp_path / "a", images=images, max_images=2)  # an earlier report is replaced
    assert len(list((tmp_path / "a" / "assets").glob("overlay_*.thumb.jpg"))) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="holds other files"):
        build_report(predictions, other)
    assert sorted(p.name for p in other.iterdir()) == ["keep.txt"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_clusters_with_purity(synthetic_dataset, tmp_path):
    from seg_suite.pseudo.cluster import assign_clusters

    gt_path = synthetic_dataset / "annotations" / "instances_val.json"
    gt = json.loads(gt_path.read_text())
    ids = [a["id"] for a in gt["annotations"]]
    labels = np.array([a["category_id"] - 1 for a in gt["annotations"]])  # each class its own cluster
    clustered = assign_clusters(gt, ids, labels, int(labels.max()) + 2)  # one cluster stays empty
    (tmp_path / "clusters.json").write_text(json.dumps(clustered))
    index = build_report(tmp_path / "clusters.json", tmp_path / "r", images=synthetic_dataset / "images" / "val",
                         gt=gt_path)
    check_page(index, tmp_path, COCO_SECTIONS + ["cluster-sizes", "purity", "clusters"])
    purity = _html(index).split('id="purity"')[1].split("</section>")[0]
    names = {c["id"]: c["name"] for c in gt["categories"]}
    for cls in {names[a["category_id"]] for a in gt["annotations"]}:
        assert f"<td>{cls}</td>" in purity
    non_empty = len(set(labels.tolist()))
    assert purity.count('data-sort="1.0">1.000<') == non_empty  # every non-empty cluster is pure


def test_evaluation_results(synthetic_dataset, tmp_path):
    from seg_suite.evaluation.fit_split import ScoredSplit
    from seg_suite.evaluation.unsupervised import evaluate_semantic

    res = evaluate_semantic(synthetic_dataset / "semantic" / "val", synthetic_dataset / "semantic" / "val",
                            fit=ScoredSplit())
    res["task"] = "semantic"
    (tmp_path / "eval.json").write_text(json.dumps(res))
    index = build_report(tmp_path / "eval.json", tmp_path / "r")
    loaded = check_page(index, tmp_path, ["protocol", "metrics", "per-class", "confusion", "mapping"])
    html = _html(index)
    assert res["fit"] in html and "hungarian" in html
    assert "assets/confusion.png" in loaded.images and "assets/per_class_0.png" in loaded.images


def test_video_masks_with_davis_ground_truth(synthetic_dataset, tmp_path):
    gt_root = synthetic_dataset / "videos" / "Annotations"
    masks = tmp_path / "masks"
    shutil.copytree(gt_root, masks)
    seq = sorted(p.name for p in masks.iterdir())[0]
    Image.fromarray(np.zeros((256, 320), np.uint8)).save(masks / seq / "00002.png")  # J falls to 0 there
    index = build_report(masks, tmp_path / "r", images=synthetic_dataset / "videos" / "JPEGImages", gt=gt_root)
    check_page(index, tmp_path, ["sequences", "strips", "worst-frames"])
    worst = _html(index).split('id="worst-frames"')[1].split("</section>")[0]
    first = re.search(r"<figcaption>([^<]*)</figcaption>", worst).group(1)
    assert first.startswith(f"{seq}/00002: J 0.00 (fell 1.00)")


def test_training_folder(tmp_path):
    run = tmp_path / "train"
    run.mkdir()
    lines = [{"iteration": i, "total_loss": 3.0 / (i + 1), "loss_ce": 1.0 / (i + 1), "lr": 1e-4} for i in range(0, 50, 5)]
    lines.insert(6, {"iteration": 29, "segm/AP": 12.5, "bbox/AP": 10.0})
    lines.append({"iteration": 49, "segm/AP": 17.25, "bbox/AP": 11.0})
    (run / "metrics.json").write_text("\n".join(json.dumps(x) for x in lines) + '\n{"iteration": 5')  # torn last line
    index = build_report(run, tmp_path / "r")
    check_page(index, tmp_path, ["curves", "eval-curves", "last-eval"])
    last = _html(index).split('id="last-eval"')[1].split("</section>")[0]
    assert "iteration 49" in last and "17.25" in last and "12.50" not in last


def test_recipe_run_front_page(predictions, tmp_path):
    run = tmp_path / "run"
    for stage in ("maskcut", "train", "export"):
        (run / stage).mkdir(parents=True)
        (run / stage / "stage.json").write_text("{}")
    shutil.copy(predictions, run / "maskcut" / "pseudo.json")
    (run / "predict" / "val" / "semantic").mkdir(parents=True)  # the layout of seg_suite.workflows.predict
    (run / "predict" / "stage.json").write_text("{}")
    (run / "predict" / "val" / "predict.json").write_text('{"info": {}, "counts": {}}')
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(run / "predict" / "val" / "semantic" / "000000.png")
    shutil.copy(predictions, run / "predict" / "val" / "instances.json")
    (run / "train" / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n")
    (run / "recipe.lock.yaml").write_text("recipe: test\n")
    (run / "results.json").write_text(json.dumps({
        "recipe": "test-recipe", "preset": None,
        "evaluation": {"dataset": "synthetic_val", "protocol": "hungarian", "fit": "held-out half"},
        "metrics": {"segm/AP": 12.345},
        "stages": {s: {"kind": s, "key": f"k{s}", "seconds": 1.5} for s in ("maskcut", "train", "predict", "export")}}))
    index = build_report(run, tmp_path / "r")
    loaded = check_page(index, tmp_path, ["results", "stages"])
    assert sorted(loaded.links) == ["stages/maskcut/index.html", "stages/predict/index.html", "stages/train/index.html"]
    assert ">coco report<" in _html(index).split("stages/predict/index.html")[1][:20]
    html = _html(index)
    assert "12.35" in html and "synthetic_val" in html and "export: nothing in it a report can show" in html
    check_page(tmp_path / "r" / "stages" / "maskcut" / "index.html", tmp_path, COCO_SECTIONS)
    check_page(tmp_path / "r" / "stages" / "train" / "index.html", tmp_path, ["curves"])


def test_unknown_input_is_one_line(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    with pytest.raises(UserError, match="cannot show it"):
        build_report(tmp_path / "x.json", tmp_path / "r")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("body, message", [
    ('<h1>x</h1><script>console.error("boom")</script>', "console messages"),
    ('<h1>x</h1><script>notAFunction()</script>', "console messages"),
    ('<h1>x</h1><img src="missing.png">', "does not exist"),
    ("", "blank"),
])
def test_browser_check_can_fail(tmp_path, body, message):
    page = tmp_path / "p" / "index.html"
    page.parent.mkdir()
    page.write_text(f"<!DOCTYPE html><html><body style='font-size:80px'>{body}</body></html>")
    with pytest.raises(AssertionError, match=message):
        check_page(page, tmp_path, [])


def test_detectron2_result_list_needs_and_uses_the_ground_truth(synthetic_dataset, predictions, tmp_path):
    gt = synthetic_dataset / "annotations" / "instances_val.json"
    coco = json.loads(predictions.read_text())
    results = [{k: a[k] for k in ("image_id", "category_id", "segmentation", "score")} for a in coco["annotations"]]
    (tmp_path / "coco_instances_results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match="pass --gt"):
        build_report(tmp_path / "coco_instances_results.json", tmp_path / "r")
    index = build_report(tmp_path / "coco_instances_results.json", tmp_path / "r", gt=gt)
    check_page(index, tmp_path, ["zero-masks", "overlays", "per-image", "histograms"])
    assert "Images without masks (1)" in _html(index)


def test_table_sorts_by_a_clicked_column(predictions, tmp_path):
    from chromium_check import open_page

    index = build_report(predictions, tmp_path / "r")
    html = _html(index)
    row = r'<tr><td>[^<]*</td><td class="num" data-sort="[^"]*">(\d+)</td>'
    before = [int(c) for c in re.findall(row, html.split('id="per-image"')[1])]
    # two clicks on "masks": ascending, then descending
    click = "<script>var th = document.querySelectorAll('#per-image th')[1]; th.click(); th.click();</script></body>"
    (index.parent / "clicked.html").write_text(html.replace("</body>", click))
    shown = open_page(index.parent / "clicked.html", tmp_path)
    assert shown.console == []
    after = [int(c) for c in re.findall(row, shown.dom.split('id="per-image"')[1])]
    assert sorted(after) == sorted(before) and after == sorted(before, reverse=True) and after != before


def test_evaluate_video_result_and_several_inputs(synthetic_dataset, tmp_path):
    from seg_suite.evaluation.davis import evaluate_davis

    gt_root = synthetic_dataset / "videos" / "Annotations"
    (tmp_path / "video_eval.json").write_text(json.dumps(evaluate_davis(gt_root, gt_root)))
    run = tmp_path / "train"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}) + "\n")
    index = build_report([tmp_path / "video_eval.json", run], tmp_path / "r")
    loaded = check_page(index, tmp_path, ["inputs"])
    assert loaded.links == ["part_01/index.html", "part_02/index.html"]
    video = check_page(tmp_path / "r" / "part_01" / "index.html", tmp_path, ["sequences"])
    assert "../index.html" in video.links  # back to the front page
    assert "J&amp;F-Mean 1.000" in _html(tmp_path / "r" / "part_01" / "index.html")
    check_page(tmp_path / "r" / "part_02" / "index.html", tmp_path, ["curves", "last-eval"])
