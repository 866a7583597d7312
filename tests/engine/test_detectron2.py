"""The detectron2 that tools/install_detectron2.py installs: imports, trains, evaluates, and the
fallbacks for the missing C++ extension behave as promised."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_suite.io.masks import mask_to_bbox, mask_to_rle

REPO = Path(__file__).resolve().parents[2]
INSTALLER = REPO / "tools" / "install_detectron2.py"

# `make test` installs detectron2 first, so its absence is a failure, not a reason to skip.
import detectron2  # noqa: E402


def _is_seg_suite_build() -> bool:
    return (Path(detectron2.__file__).parent / "_seg_suite_patch.txt").is_file()


# The fallbacks exist only in our pure-Python build; a user's source build has the real ops.
pure_python_build = pytest.mark.skipif(
    not _is_seg_suite_build(), reason="detectron2 is not seg_suite's pure-Python build"
)


def _load_installer():
    spec = importlib.util.spec_from_file_location("install_detectron2", INSTALLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------------------------
# Imports
# ----------------------------------------------------------------------------------------------
def test_core_packages_import_without_compiled_extension():
    import detectron2.data  # noqa: F401
    import detectron2.engine  # noqa: F401
    import detectron2.evaluation  # noqa: F401
    import detectron2.layers  # noqa: F401
    import detectron2.modeling  # noqa: F401

    if _is_seg_suite_build():
        assert "detectron2._C" not in sys.modules
        from detectron2 import _seg_suite_compat

        assert _seg_suite_compat._C is None


def test_model_zoo_configs_are_packaged():
    from detectron2 import model_zoo

    path = Path(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml"))
    assert path.is_file()
    assert "_BASE_" in path.read_text()


# ----------------------------------------------------------------------------------------------
# A tiny DefaultTrainer run on generated images
# ----------------------------------------------------------------------------------------------
def _generated_dataset(root: Path, n_images: int = 4, size: int = 64) -> list[dict]:
    """Images with two filled rectangles (class 0 red-ish, class 1 blue-ish) on noise."""
    from PIL import Image
    from detectron2.structures import BoxMode

    rng = np.random.default_rng(0)
    dicts = []
    for i in range(n_images):
        img = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
        annos = []
        for cls, (y0, x0, h, w) in enumerate([(6 + i, 8, 20, 24), (36, 30 - i, 22, 18)]):
            mask = np.zeros((size, size), bool)
            mask[y0 : y0 + h, x0 : x0 + w] = True
            img[mask] = (220, 40, 40) if cls == 0 else (40, 60, 230)
            annos.append({
                "bbox": mask_to_bbox(mask), "bbox_mode": BoxMode.XYWH_ABS,
                "segmentation": mask_to_rle(mask), "category_id": cls, "iscrowd": 0,
            })
        path = root / f"img{i}.png"
        Image.fromarray(img).save(path)
        dicts.append({"file_name": str(path), "image_id": i, "height": size, "width": size,
                      "annotations": annos})
    return dicts


@pytest.fixture
def registered_dataset(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    dicts = _generated_dataset(tmp_path)
    name = f"seg_suite_test_d2_{uuid.uuid4().hex[:8]}"
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(thing_classes=["red", "blue"])
    yield name, dicts
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _tiny_mask_rcnn_cfg(dataset: str, output_dir: Path, max_iter: int):
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("Base-RCNN-FPN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.MASK_ON = True
    cfg.MODEL.RESNETS.DEPTH = 18
    cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64
    cfg.MODEL.RESNETS.STEM_OUT_CHANNELS = 32
    cfg.MODEL.RESNETS.NORM = "GN"  # random-init FrozenBN/BN diverged at this batch size
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[8], [16], [32], [64], [128]]
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN = 200
    cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = 50
    cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_HEADS.NUM_CLASSES = 2
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 32
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = 64
    cfg.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 7
    cfg.MODEL.ROI_MASK_HEAD.NUM_CONV = 1
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = 16
    cfg.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 7
    cfg.INPUT.MIN_SIZE_TRAIN = (64,)
    cfg.INPUT.MAX_SIZE_TRAIN = 64
    cfg.INPUT.MASK_FORMAT = "bitmask"
    cfg.DATASETS.TRAIN = (dataset,)
    cfg.DATASETS.TEST = ()
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.004
    cfg.SOLVER.MAX_ITER = max_iter
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 0
    cfg.SOLVER.CHECKPOINT_PERIOD = 10_000  # only the final checkpoint
    cfg.SOLVER.AMP.ENABLED = False  # detectron2's AMP trainer asserts CUDA
    cfg.OUTPUT_DIR = str(output_dir)
    cfg.SEED = 0
    return cfg


@pytest.mark.slow
def test_default_trainer_trains_on_cpu_checkpoints_and_resumes(registered_dataset, tmp_path):
    from detectron2.engine import DefaultTrainer

    name, _ = registered_dataset
    from detectron2.utils.env import seed_all_rng

    max_iter = 12
    out = tmp_path / "out"
    cfg = _tiny_mask_rcnn_cfg(name, out, max_iter)
    seed_all_rng(0)  # model init and the sampler's shuffling seed
    trainer = DefaultTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()

    assert trainer.iter == max_iter
    losses = np.array([v for v, _ in trainer.storage.history("total_loss").values()])
    assert len(losses) == max_iter
    assert np.isfinite(losses).all()
    print("total_loss per iteration:", np.round(losses, 3))
    # Mean total loss of the last 5 over the first 5 iterations: measured 0.58 with seed 0
    # (2.14 -> 1.24), and 0.88 / 0.79 with seeds 1 / 2.
    assert losses[-5:].mean() < 0.95 * losses[:5].mean()
    for key in ("loss_mask", "loss_cls", "loss_rpn_cls"):
        assert key in trainer.storage.histories()

    ckpt = out / "model_final.pth"
    assert ckpt.is_file()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["iteration"] == max_iter - 1
    model_state = trainer.model.state_dict()
    assert set(state["model"]) == set(model_state)
    for k, v in model_state.items():
        assert torch.equal(state["model"][k], v), k

    # Resuming restores the iteration, the weights and (patched upstream fix) SGD's momentum.
    resumed = DefaultTrainer(cfg)
    resumed.resume_or_load(resume=True)
    assert resumed.start_iter == max_iter
    for k, v in resumed.model.state_dict().items():
        assert torch.equal(model_state[k], v), k
    saved_opt = trainer.optimizer.state_dict()["state"]
    loaded_opt = resumed.optimizer.state_dict()["state"]
    assert len(saved_opt) > 0 and saved_opt.keys() == loaded_opt.keys()
    for k in saved_opt:
        assert torch.equal(saved_opt[k]["momentum_buffer"], loaded_opt[k]["momentum_buffer"])


# ----------------------------------------------------------------------------------------------
# COCO evaluation through pycocotools when COCOeval_opt (C++) is missing
# ----------------------------------------------------------------------------------------------
def _evaluate(name, dicts, out_dir, use_fast_impl, shift=0):
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances
    from seg_suite.io.masks import rle_to_mask

    evaluator = COCOEvaluator(name, tasks=("segm",), distributed=False, output_dir=str(out_dir),
                              use_fast_impl=use_fast_impl)
    evaluator.reset()
    for d in dicts:
        masks = np.stack([rle_to_mask(a["segmentation"]) for a in d["annotations"]])
        masks = np.roll(masks, shift, axis=(1, 2))
        boxes = [mask_to_bbox(m) for m in masks]
        inst = Instances((d["height"], d["width"]))
        inst.pred_boxes = Boxes(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes]))
        inst.scores = torch.tensor([0.9, 0.8])
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        inst.pred_masks = torch.from_numpy(masks)
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": inst}])
    return evaluator.evaluate()["segm"]


@pytest.mark.parametrize("use_fast_impl", [False, True])
def test_coco_evaluator_scores_ground_truth_as_perfect(registered_dataset, tmp_path, use_fast_impl):
    name, dicts = registered_dataset
    result = _evaluate(name, dicts, tmp_path, use_fast_impl)
    assert result["AP"] == pytest.approx(100.0)
    assert result["AP50"] == pytest.approx(100.0)


def test_coco_evaluator_scores_displaced_masks_as_zero(registered_dataset, tmp_path):
    name, dicts = registered_dataset
    # Shifted by 32 px, every mask misses its object (IoU 0): the oracle AP is 0.
    result = _evaluate(name, dicts, tmp_path, use_fast_impl=False, shift=32)
    assert result["AP"] == pytest.approx(0.0)


@pure_python_build
def test_fast_coco_eval_request_falls_back_to_pycocotools(registered_dataset, tmp_path):
    from detectron2.evaluation import coco_evaluation

    name, _ = registered_dataset
    assert coco_evaluation.COCOeval_opt is None
    evaluator = coco_evaluation.COCOEvaluator(name, tasks=("segm",), distributed=False,
                                              output_dir=str(tmp_path), use_fast_impl=True)
    assert evaluator._use_fast_impl is False


# ----------------------------------------------------------------------------------------------
# Deformable convolution without the extension
# ----------------------------------------------------------------------------------------------
@pure_python_build
def test_deform_conv_zero_offset_is_plain_convolution():
    from detectron2.layers import DeformConv, ModulatedDeformConv

    torch.manual_seed(0)
    x = torch.randn(2, 4, 9, 11)
    conv = DeformConv(4, 6, kernel_size=3, padding=1, bias=False)
    offset = torch.zeros(2, 18, 9, 11)
    expected = F.conv2d(x, conv.weight, padding=1)
    np.testing.assert_allclose(conv(x, offset).detach(), expected.detach(), atol=1e-5)

    mconv = ModulatedDeformConv(4, 6, kernel_size=3, padding=1, bias=True)
    torch.nn.init.normal_(mconv.bias)
    half = torch.full((2, 9, 9, 11), 0.5)
    expected = 0.5 * F.conv2d(x, mconv.weight, padding=1) + mconv.bias.view(1, -1, 1, 1)
    np.testing.assert_allclose(mconv(x, offset, half).detach(), expected.detach(), atol=1e-5)


@pure_python_build
def test_deform_conv_integer_offset_shifts_the_sampling_grid():
    from detectron2.layers import DeformConv

    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    conv = DeformConv(3, 5, kernel_size=3, padding=1, bias=False)
    offset = torch.zeros(1, 18, 8, 8)
    offset[:, 1::2] = 1.0  # (dy, dx) pairs: every tap samples one pixel to the right
    # Tap kx of output column c reads column c + kx (instead of c + kx - 1): a plain convolution
    # with no left padding and two columns of right padding.
    shifted = F.pad(x, (0, 2, 1, 1))
    np.testing.assert_allclose(conv(x, offset).detach(),
                               F.conv2d(shifted, conv.weight).detach(), atol=1e-5)


@pure_python_build
def test_deform_conv_matches_torchvision_with_groups_and_gradients():
    from torchvision.ops import deform_conv2d
    from detectron2.layers.deform_conv import deform_conv, modulated_deform_conv

    torch.manual_seed(0)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    w = torch.randn(6, 2, 3, 3, requires_grad=True)  # groups=2
    off = torch.randn(2, 2 * 2 * 9, 7, 7, requires_grad=True)  # deformable_groups=2
    mask = torch.rand(2, 2 * 9, 7, 7, requires_grad=True)
    b = torch.randn(6, requires_grad=True)

    ours = deform_conv(x, off, w, 1, 1, 1, 2, 2)
    ours_m = modulated_deform_conv(x, off, mask, w, b, 1, 1, 1, 2, 2)
    (ours.square().sum() + ours_m.square().sum()).backward()
    grads = [t.grad.clone() for t in (x, w, off, mask, b)]
    for t in (x, w, off, mask, b):
        t.grad = None

    ref = deform_conv2d(x, off, w, padding=(1, 1))
    ref_m = deform_conv2d(x, off, w, bias=b, padding=(1, 1), mask=mask)
    (ref.square().sum() + ref_m.square().sum()).backward()
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ours_m, ref_m)
    for g, t in zip(grads, (x, w, off, mask, b)):
        torch.testing.assert_close(g, t.grad)

    with pytest.raises(ValueError, match="deformable_groups"):
        deform_conv(x, off, w, 1, 1, 1, 2, 1)


# ----------------------------------------------------------------------------------------------
# Rotated-box ops: importable, clear error when called
# ----------------------------------------------------------------------------------------------
@pure_python_build
@pytest.mark.parametrize("op", ["pairwise_iou_rotated", "nms_rotated", "ROIAlignRotated",
                                "RotatedBoxes.pairwise_iou"])
def test_rotated_ops_raise_clear_error_when_called(op):
    from detectron2 import layers
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    boxes = torch.tensor([[10.0, 10.0, 8.0, 4.0, 30.0], [12.0, 10.0, 8.0, 4.0, 0.0]])
    calls = {
        "pairwise_iou_rotated": lambda: layers.rotated_boxes.pairwise_iou_rotated(boxes, boxes),
        "nms_rotated": lambda: layers.nms_rotated(boxes, torch.tensor([0.9, 0.8]), 0.5),
        "ROIAlignRotated": lambda: layers.ROIAlignRotated((4, 4), 1.0, 0)(
            torch.randn(1, 2, 20, 20), torch.cat([torch.zeros(2, 1), boxes], dim=1)),
        "RotatedBoxes.pairwise_iou": lambda: pairwise_iou_rotated(RotatedBoxes(boxes),
                                                                  RotatedBoxes(boxes)),
    }
    with pytest.raises(RuntimeError, match=r"detectron2 compiled op unavailable: .*build "
                                           r"detectron2 from source with CUDA/C\+\+"):
        calls[op]()


# ----------------------------------------------------------------------------------------------
# The installer
# ----------------------------------------------------------------------------------------------
@pure_python_build
def test_installer_second_run_skips_quickly():
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(INSTALLER)], capture_output=True, text=True)
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "already installed" in proc.stdout and "skipping" in proc.stdout
    # Measured 0.19 s on an idle 2-core machine; the brief asks for < 2 s.
    assert elapsed < 2.0

    check = subprocess.run([sys.executable, str(INSTALLER), "--check"], capture_output=True,
                           text=True)
    assert check.returncode == 0


def test_installed_build_matches_installer_patch_version():
    inst = _load_installer()
    marker = inst.read_marker(Path(detectron2.__file__).parent)
    if not marker:
        pytest.skip("detectron2 is not seg_suite's pure-Python build")
    assert marker["patch_version"] == str(inst.PATCH_VERSION)
    assert marker["sdist_sha256"] == inst.SDIST_SHA256


def test_patch_refuses_a_pattern_that_is_missing_or_repeated():
    inst = _load_installer()
    assert inst.apply_patch("a = Image.LINEAR\n", "Image.LINEAR", "Image.BILINEAR", 1, "f.py") == (
        "a = Image.BILINEAR\n")
    with pytest.raises(inst.InstallError, match="found 0 time"):
        inst.apply_patch("a = 1\n", "Image.LINEAR", "Image.BILINEAR", 1, "f.py")
    with pytest.raises(inst.InstallError, match="found 2 time"):
        inst.apply_patch("x = 1\nx = 1\n", "x = 1", "x = 2", 1, "f.py")


def test_audit_finds_unguarded_compiled_imports_and_numpy_aliases(tmp_path):
    inst = _load_installer()
    pkg = tmp_path / "detectron2" / "layers"
    pkg.mkdir(parents=True)
    (pkg / "ok.py").write_text("import numpy as np\nx = np.float32(1) + np.int64(2)\n")
    assert inst.audit_tree(tmp_path) == []
    (pkg / "bad.py").write_text("from detectron2 import _C\ny = np.array(m, copy=False)\n"
                                "z = np.float\n")
    problems = inst.audit_tree(tmp_path)
    assert sorted(problems) == sorted([
        "unguarded detectron2._C import in detectron2/layers/bad.py",
        "np.array(copy=False) in detectron2/layers/bad.py",
        "NumPy alias in detectron2/layers/bad.py",
    ])


def test_numpy_alias_replacement_keeps_sized_types(tmp_path, monkeypatch):
    inst = _load_installer()
    f = tmp_path / "m.py"
    f.write_text("a = np.zeros(3, dtype=np.int)\nb = x.astype(np.bool)\nc = np.float(2)\n"
                 "d = np.float32(1)\ne = np.str_('s')\nf = np.bool_(1)\n")
    monkeypatch.setattr(inst, "NUMPY_ALIAS_EXPECTED", set())
    assert inst.replace_numpy_aliases(tmp_path) == ["m.py"]
    assert f.read_text() == ("a = np.zeros(3, dtype=int)\nb = x.astype(bool)\nc = float(2)\n"
                             "d = np.float32(1)\ne = np.str_('s')\nf = np.bool_(1)\n")


def _installer_env(**extra) -> dict:
    """This environment without pip settings, so the installer's pip sees only `extra`."""
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def test_installer_refuses_an_sdist_with_the_wrong_hash(tmp_path):
    fake = tmp_path / "pb1-detectron2-0.6.tar.gz"
    fake.write_bytes(b"not the real sdist")
    before = (Path(detectron2.__file__).parent / "__init__.py").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(INSTALLER), "--force", "--sdist", str(fake)],
                          capture_output=True, text=True, env=_installer_env())
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "refusing it" in err[0]
    assert "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29" in err[0]
    # Nothing was touched.
    assert (Path(detectron2.__file__).parent / "__init__.py").stat().st_mtime_ns == before


def test_installer_without_network_says_what_to_do():
    env = _installer_env(PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0",
                         PIP_TIMEOUT="2")
    before = (Path(detectron2.__file__).parent / "__init__.py").stat().st_mtime_ns
    proc = subprocess.run([sys.executable, str(INSTALLER), "--force"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: pip could not fetch pb1-detectron2==0.6")
    assert "--sdist PATH" in err[0]
    assert (Path(detectron2.__file__).parent / "__init__.py").stat().st_mtime_ns == before


def test_installer_decisions_for_what_is_installed(tmp_path, monkeypatch):
    inst = _load_installer()
    pkg = tmp_path / "detectron2"
    pkg.mkdir()
    monkeypatch.setattr(inst, "installed_package_dir", lambda: pkg)
    monkeypatch.setattr(inst, "missing_requirements", lambda: [])

    # A source build with compiled ops is left alone.
    (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    needed, reason = inst.decide(force=False)
    assert not needed and "compiled ops" in reason
    assert inst.decide(force=True)[0] is True
    (pkg / "_C.cpython-311-x86_64-linux-gnu.so").unlink()

    # Our build: skipped when the fingerprint matches, rebuilt when the patches changed.
    marker = pkg / inst.MARKER_NAME
    marker.write_text(f"patch_version={inst.PATCH_VERSION}\n"
                      f"patch_fingerprint={inst.patch_fingerprint()}\n")
    needed, reason = inst.decide(force=False)
    assert not needed and "skipping" in reason
    marker.write_text(f"patch_version={inst.PATCH_VERSION}\npatch_fingerprint=0123456789abcdef\n")
    needed, reason = inst.decide(force=False)
    assert needed and "rebuilding" in reason

    # Our build with a dependency uninstalled since: reinstalled.
    marker.write_text(f"patch_version={inst.PATCH_VERSION}\n"
                      f"patch_fingerprint={inst.patch_fingerprint()}\n")
    monkeypatch.setattr(inst, "missing_requirements", lambda: ["fvcore"])
    needed, reason = inst.decide(force=False)
    assert needed and "fvcore" in reason

    # Someone else's pure-Python build: kept if it imports, replaced if it is broken.
    marker.unlink()
    monkeypatch.setattr(inst, "imports_cleanly", lambda modules: (True, ""))
    needed, reason = inst.decide(force=False)
    assert not needed and "leaving it alone" in reason
    monkeypatch.setattr(inst, "imports_cleanly",
                        lambda modules: (False, "ImportError: cannot import name '_C'"))
    needed, reason = inst.decide(force=False)
    assert needed and "broken (ImportError: cannot import name '_C')" in reason

    monkeypatch.setattr(inst, "installed_package_dir", lambda: None)
    assert inst.decide(force=False) == (True, "detectron2 is not installed")
