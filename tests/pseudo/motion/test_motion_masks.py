"""`seg-suite motion-masks` end to end: accuracy on synthetic videos, COCO output, bad inputs."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from seg_suite.cli import main
from seg_suite.evaluation.davis import evaluate_davis
from seg_suite.io.masks import rle_to_mask


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from seg_suite.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic_videos")
    # The default video settings (4 videos x 12 frames, 256x320): the set the defaults were measured on.
    make_synthetic_dataset(root, num_train=1, num_val=1, seed=0, progress=False)
    return root


def _run(videos, out, *extra):
    rc = main(["motion-masks", "--input", str(videos), "--output", str(out), "--workers", "0",
               "--no-progress", *extra])
    assert rc == 0
    return json.loads(out.read_text())


def test_default_pipeline_on_synthetic_videos(videos, tmp_path):
    out = tmp_path / "motion.json"
    coco = _run(videos, out)
    res = evaluate_davis(videos / "videos" / "Annotations", tmp_path / "motion_masks")
    # measured 0.791 (DIS fast, no CRF; see GroupingParams); the CRF variant below clears 0.8
    assert res["global"]["J-Mean"] >= 0.75
    assert len(coco["images"]) == 4 * 12
    img = coco["images"][13]
    assert img["file_name"] == "synth_001/00001.jpg" and (img["width"], img["height"]) == (320, 256)
    # The COCO annotations of a frame are exactly the components of its PNG mask.
    png = np.asarray(Image.open(tmp_path / "motion_masks" / "synth_001" / "00001.png")) > 127
    union = np.zeros_like(png)
    for a in coco["annotations"]:
        if a["image_id"] == img["id"]:
            union |= rle_to_mask(a["segmentation"])
            assert 0 < a["score"] <= 1
    assert np.array_equal(union, png)
    assert coco["info"]["params"]["motion"]["grouping"]["num_models"] == 2


@pytest.mark.slow
def test_crf_pipeline_reaches_08_on_synthetic_videos(videos, tmp_path):
    _run(videos, tmp_path / "crf.json", "--crf")
    res = evaluate_davis(videos / "videos" / "Annotations", tmp_path / "crf_masks")
    assert res["global"]["J-Mean"] >= 0.85  # measured 0.902


def test_bad_sequences_fail_alone_and_resume_is_a_noop(videos, tmp_path):
    src = videos / "videos" / "JPEGImages" / "synth_000"
    root = tmp_path / "in"
    good = root / "good"
    good.mkdir(parents=True)
    for f in sorted(src.iterdir())[:3]:
        shutil.copy(f, good / f.name)
    (root / "single").mkdir()
    shutil.copy(src / "00000.jpg", root / "single" / "00000.jpg")
    (root / "varsize").mkdir()
    shutil.copy(src / "00000.jpg", root / "varsize" / "00000.jpg")
    Image.new("RGB", (100, 80)).save(root / "varsize" / "00001.jpg")
    (root / "corrupt").mkdir()
    shutil.copy(src / "00000.jpg", root / "corrupt" / "00000.jpg")
    (root / "corrupt" / "00001.jpg").write_bytes(b"\xff\xd8 truncated")
    (root / "static").mkdir()
    for i in range(3):
        shutil.copy(src / "00000.jpg", root / "static" / f"{i:05d}.jpg")
    (root / "empty").mkdir()
    out = tmp_path / "o.json"
    coco = _run(root, out)
    fails = {json.loads(line)["key"]: json.loads(line)["reason"] for line in open(tmp_path / "o.failures.jsonl")}
    assert set(fails) == {"single", "varsize", "corrupt", "empty"}
    assert "at least 2" in fails["single"] and "variable-size" in fails["varsize"]
    assert "unreadable frame" in fails["corrupt"] and "no frame images" in fails["empty"]
    names = [i["file_name"] for i in coco["images"]]
    assert names == [f"good/{i:05d}.jpg" for i in range(3)] + [f"static/{i:05d}.jpg" for i in range(3)]
    static_ids = {i["id"] for i in coco["images"] if i["sequence"] == "static"}
    assert not [a for a in coco["annotations"] if a["image_id"] in static_ids]  # nothing moves
    before = out.read_bytes()
    _run(root, out, "--resume")
    assert out.read_bytes() == before


def test_video_file_input_exports_frames(tmp_path, videos):
    import av

    frames = [np.asarray(Image.open(p)) for p in sorted((videos / "videos" / "JPEGImages" / "synth_002").iterdir())[:4]]
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt, s.bit_rate = 320, 256, "yuv420p", 4_000_000
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    coco = _run(video, tmp_path / "v.json")
    assert [i["file_name"] for i in coco["images"]] == [f"clip/{i:05d}.jpg" for i in range(4)]
    assert sorted(p.name for p in (tmp_path / "v_frames" / "clip").iterdir()) == [f"{i:05d}.jpg" for i in range(4)]
    assert len(list((tmp_path / "v_masks" / "clip").iterdir())) == 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["motion-masks", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "o.json")]) == 2
    assert "input not found" in capsys.readouterr().err
    (tmp_path / "seq").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 24)).save(tmp_path / "seq" / f"{i:05d}.png")
    assert main(["motion-masks", "--input", str(tmp_path / "seq"), "--output", str(tmp_path / "o.json"),
                 "--flow", "raft_small"]) == 2
    assert "--flow-weights" in capsys.readouterr().err


def test_shards_merge_to_the_unsharded_output(videos, tmp_path):
    root = tmp_path / "in"
    for name in ("synth_000", "synth_001"):
        (root / name).mkdir(parents=True)
        for f in sorted((videos / "videos" / "JPEGImages" / name).iterdir())[:3]:
            shutil.copy(f, root / name / f.name)
    _run(root, tmp_path / "all.json")
    for i in range(2):
        assert main(["motion-masks", "--input", str(root), "--output", str(tmp_path / "sh.json"), "--workers", "0",
                     "--no-progress", "--num-shards", "2", "--shard-id", str(i)]) == 0
    assert main(["merge", "--output", str(tmp_path / "sh.json")]) == 0
    assert (tmp_path / "sh.json").read_bytes() == (tmp_path / "all.json").read_bytes()
