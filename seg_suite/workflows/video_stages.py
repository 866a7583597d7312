"""The video stage kinds of a recipe (RCF, Lian et al. CVPR 2023, and motion grouping):

- ``motion_masks``: motion grouping of optical flow into one object mask per frame, on the stage's
  videos (:class:`seg_suite.pseudo.motion.job.MotionMasksJob`), as shard tasks;
- ``train_rcf``: the RCF segmenter trained on the videos' flow (:mod:`seg_suite.pseudo.motion.rcf_train`);
- ``evaluate_video``: the trained segmenter's masks (or, without a ``train_rcf`` stage, the motion
  masks') on the evaluation set, scored with the DAVIS-2016 protocol (J and F), and on each ``extra``
  set that is given with RCF's pooled IoU (SegTrackv2, FBMS59).
"""

from __future__ import annotations

import functools
from pathlib import Path

from seg_suite.io.files import atomic_write_json, load_json


def _motion_step(videos: str, output: str, params: dict, device: str, flow_weights: str | None = None,
                 **run_options):
    from seg_suite.pseudo.motion.job import MotionMasksJob, sequence_items
    from seg_suite.pseudo.motion.pipeline import MotionMaskParams
    from seg_suite.pseudo.runner import run_job

    stem = Path(output).with_suffix("")
    job = MotionMasksJob(MotionMaskParams.from_dict(params), masks_dir=f"{stem}_masks",
                         frames_dir=f"{stem}_frames", flow_weights=flow_weights, device=device)
    return run_job(job, sequence_items(videos), output, **run_options)


def _rcf_masks_step(checkpoint: str, videos: str, output: str, min_area: float, device: str, **run_options):
    from seg_suite.pseudo.motion.job import RCFMasksJob, sequence_items
    from seg_suite.pseudo.runner import run_job

    stem = Path(output).with_suffix("")
    job = RCFMasksJob(checkpoint, min_area=min_area, masks_dir=f"{stem}_masks", frames_dir=f"{stem}_frames",
                      device=device)
    return run_job(job, sequence_items(videos), output, **run_options)


def stage_motion_masks(ctx) -> dict:
    from seg_suite.workflows.run import note_failures

    videos = ctx.dataset().need("videos", "motion grouping")
    out = ctx.folder / "motion.json"
    step = functools.partial(_motion_step, str(videos), str(out), ctx.params, ctx.device, ctx.weights_file())
    summary = ctx.generate(step, out)
    doc = load_json(out, "motion masks")
    return {"masks": str(out), "masks_dir": str(ctx.folder / "motion_masks"), "videos": str(videos),
            "num_frames": len(doc["images"]), "num_masks": len(doc["annotations"]),
            "min_area": ctx.params["grouping"]["min_area"], "failed_videos": note_failures(summary, "motion masks")}


def _train_rcf_job(videos: str, params: dict, weights: str | None, device: str, checkpoint: str,
                   progress: bool = False) -> dict:
    import sys

    from seg_suite.pseudo.motion.rcf_segmenter import save_checkpoint
    from seg_suite.pseudo.motion.rcf_train import RCFConfig, load_pairs, train_rcf
    from seg_suite.pseudo.motion.video import discover_sequences

    cfg = RCFConfig.from_dict(params)
    data = load_pairs(discover_sequences(videos), cfg, None, device=device, progress=progress)
    for key, reason in data.failures:
        print(f"skipped {key}: {reason}", file=sys.stderr)
    model, info = train_rcf(data, cfg, device=device, weights=weights, progress=progress, log=sys.stderr)
    save_checkpoint(checkpoint, model, cfg, info)
    return {"num_pairs": len(data.pairs), "failures": data.failures,
            "object_channel": info.get("object_channel")}


def stage_train_rcf(ctx) -> dict:
    checkpoint = ctx.folder / "rcf.pth"
    videos = ctx.dataset().need("videos", "RCF training")
    job = functools.partial(_train_rcf_job, str(videos), ctx.params, ctx.weights_file(), ctx.device, str(checkpoint),
                            progress=ctx.progress and ctx.executor.kind == "local")
    info = ctx.run_single(job)
    atomic_write_json(ctx.folder / "rcf.json", {"config": ctx.params, **info}, indent=1)
    return {"checkpoint": str(checkpoint), **info}


def _masks_for(ctx, videos: Path, label: str) -> Path:
    """The evaluated masks of ``videos``: the RCF segmenter's, or the motion grouping's without one."""
    from seg_suite.workflows.run import note_failures

    stages = ctx.recipe.data["stages"]
    trained = [r for n, r in ctx.records.items() if stages[n]["kind"] == "train_rcf"]
    motion = [r for n, r in ctx.records.items() if stages[n]["kind"] == "motion_masks"]
    out = ctx.folder / "predict" / f"{label}.json"
    min_area = motion[-1]["min_area"] if motion else 0.002
    if trained:
        step = functools.partial(_rcf_masks_step, trained[-1]["checkpoint"], str(videos), str(out), min_area,
                                 ctx.device)
    else:
        name = next(n for n in ctx.records if stages[n]["kind"] == "motion_masks")
        params = {k: v for k, v in stages[name].items() if k not in ("kind", "dataset")}
        step = functools.partial(_motion_step, str(videos), str(out), params, ctx.device)
    note_failures(ctx.generate(step, out), f"masks of {label}")
    return out.with_suffix("").with_name(out.stem + "_masks")


def stage_evaluate_video(ctx) -> dict:
    from seg_suite.evaluation.davis import evaluate_davis, evaluate_pooled

    ev = ctx.evaluation
    scored = ctx.dataset(ev["dataset"])
    pred = _masks_for(ctx, scored.need("videos", "evaluation"), scored.name)
    res = {scored.name: evaluate_davis(scored.need("annotations_dir", "J&F"), pred, progress=ctx.progress)}
    extra = {}
    for name in ev.get("extra") or ():
        ds_entry = ctx.recipe.data["datasets"][name]
        if ds_entry.get("root") is None and ds_entry["kind"] == "davis":
            continue  # scored only when given
        ds = ctx.dataset(name)
        masks = _masks_for(ctx, ds.need("videos", "evaluation"), name)
        res[name] = evaluate_pooled(ds.need("annotations_dir", "pooled IoU"), masks, progress=ctx.progress)
        extra[name] = {k: v for k, v in res[name]["global"].items() if isinstance(v, float)}
    stages = ctx.recipe.data["stages"]
    for name, record in ctx.records.items():  # the motion pseudo-labels themselves, on the same videos
        if stages[name]["kind"] == "motion_masks" and record["videos"] == str(scored.videos):
            res[name] = evaluate_davis(scored.annotations_dir, record["masks_dir"], progress=ctx.progress)
            extra[f"{name} (pseudo-labels)"] = {k: v for k, v in res[name]["global"].items() if isinstance(v, float)}
    atomic_write_json(ctx.folder / "results.json", res, indent=1)
    metrics = {k: v for k, v in res[scored.name]["global"].items() if isinstance(v, float)}
    return {"protocol": ev.get("protocol") or "davis2016", "fit": None, "metrics": metrics, "extra": extra}


VIDEO_STAGES = {"motion_masks": stage_motion_masks, "train_rcf": stage_train_rcf, "evaluate_video": stage_evaluate_video}
