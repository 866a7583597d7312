"""--precision: bf16 features agree with fp32, refusals are one line, and the precision is part of params."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_suite.errors import UserError
from seg_suite.features import build_extractor
from seg_suite.features import precision as P

UNITS = P.cpu_bf16_units()
needs_cpu_bf16 = pytest.mark.skipif(
    not UNITS, reason="this CPU has no bfloat16 unit (AMX-BF16, AVX512-BF16 or Arm BF16 in /proc/cpuinfo)"
    if UNITS is not None else "/proc/cpuinfo cannot be read, so the CPU's bfloat16 unit cannot be found")


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    """A smooth random image (uint8 [1,3,H,W]): blobs, so neighbouring patches resemble each other."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand((1, 3, size // 16, size // 16), generator=g)
    return (F.interpolate(low, size=(size, size), mode="bilinear") * 255).to(torch.uint8)


def _features(precision: str, facets=("k", "token", "cls")) -> dict[str, torch.Tensor]:
    ext = build_extractor("dino_vits8", random_init=True, depth=2, precision=precision)
    with torch.inference_mode():
        return ext(ext.normalize(_image()), facets=facets)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), dim=-1)


# ------------------------------------------------------------------ agreement
@needs_cpu_bf16
def test_bf16_features_close_to_fp32_and_float32():
    ref, low = _features("fp32"), _features("bf16")
    for facet in ("k", "token", "cls"):
        assert low[facet].dtype == torch.float32  # what reads the features gets float32
        assert low[facet].shape == ref[facet].shape
        assert _cosine(ref[facet], low[facet]).min() > 0.99, facet
        assert not torch.equal(ref[facet], low[facet])  # the forward did run in bfloat16


def test_fp32_forward_is_the_plain_forward():
    ext = build_extractor("dino_vits8", random_init=True, depth=2)
    assert ext.precision == "fp32"
    x = ext.normalize(_image())
    with torch.inference_mode():
        assert torch.equal(ext(x, facets=("k",))["k"], ext.extract(x, facets=("k",))["k"])


# ------------------------------------------------------------------ refusals
def test_fp16_on_cpu_is_refused_in_one_line():
    with pytest.raises(UserError, match="fp16 runs on CUDA only") as err:
        build_extractor("dino_vits8", random_init=True, depth=1, precision="fp16")
    assert "\n" not in str(err.value)


def test_bf16_without_a_unit_names_the_missing_unit(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512vl\n")
    monkeypatch.setattr(P, "CPUINFO", cpuinfo)
    with pytest.raises(UserError, match="AMX-BF16 or AVX512-BF16") as err:
        build_extractor("dino_vits8", random_init=True, depth=1, precision="bf16")
    assert "\n" not in str(err.value)
    monkeypatch.setattr(P, "CPUINFO", tmp_path / "missing")
    with pytest.raises(UserError, match="cannot be read"):
        P.check_precision("bf16", torch.device("cpu"))


def test_cpu_units_are_read_from_cpuinfo(tmp_path):
    x86 = tmp_path / "x86"
    x86.write_text("flags\t\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\n\nflags\t\t: fpu avx512f avx512_bf16\n")
    arm = tmp_path / "arm"
    arm.write_text("Features\t: fp asimd sve bf16 i8mm\n")
    old = tmp_path / "old"
    old.write_text("flags\t\t: fpu sse2 avx2\n")
    assert P.cpu_bf16_units(x86) == ("amx_bf16", "avx512_bf16")
    assert P.cpu_bf16_units(arm) == ("bf16",)
    assert P.cpu_bf16_units(old) == ()
    assert P.cpu_bf16_units(tmp_path / "absent") is None


def test_unknown_precision_and_handcrafted_are_refused():
    with pytest.raises(UserError, match="unknown precision 'fp8'"):
        build_extractor("dino_vits8", random_init=True, depth=1, precision="fp8")
    with pytest.raises(UserError, match="fp32 only"):
        build_extractor("handcrafted", precision="bf16")


def test_sam_fp16_on_cpu_is_refused():
    pytest.importorskip("segment_anything")
    from seg_suite.pseudo.sam import load_sam

    with pytest.raises(UserError, match="fp16 runs on CUDA only"):
        load_sam("vit_b", random_init=True, precision="fp16")


# ------------------------------------------------------------------ the params record
def test_precision_is_part_of_params_and_a_resume_with_another_is_refused(tmp_path, write_image):
    from seg_suite.pseudo.inputs import discover_inputs
    from seg_suite.pseudo.maskcut import MaskCutParams
    from seg_suite.pseudo.maskcut_job import MaskCutJob
    from seg_suite.pseudo.runner import run_job

    params = MaskCutParams(fixed_size=64, crf=False, num_masks=1)

    def job(precision):
        return MaskCutJob(params, backbone="dino_vits8", random_init=True, precision=precision)

    fp32, bf16 = job("fp32").params(), job("bf16").params()
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16")
    assert fp32 != bf16 and {k: v for k, v in fp32.items() if k != "precision"} == \
        {k: v for k, v in bf16.items() if k != "precision"}
    assert MaskCutJob.from_params(bf16).params() == bf16  # a merge keeps it

    write_image(tmp_path / "in" / "a.png", np.asarray(_image(1, 64)[0].permute(1, 2, 0)))
    items, out = discover_inputs(tmp_path / "in"), tmp_path / "out.json"
    run_job(job("fp32"), items, out, progress=False)
    run_job(job("fp32"), items, out, resume=True, progress=False)  # same params: nothing to do
    with pytest.raises(UserError, match="different params"):
        run_job(job("bf16"), items, out, resume=True, progress=False)


def test_sam_params_record_the_precision():
    pytest.importorskip("segment_anything")
    from seg_suite.pseudo.sam_jobs import SamMasksJob

    a = SamMasksJob(random_init=True).params()
    b = SamMasksJob(random_init=True, precision="bf16").params()
    assert (a["sam"]["precision"], b["sam"]["precision"]) == ("fp32", "bf16") and a != b
    assert SamMasksJob.from_params(b).params() == b
