"""Parameter dataclasses refuse bad values themselves (one line naming the field, the value and the
rule); the command line derives its flags from them and turns a refusal into one error line."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from seg_suite.cli import main
from seg_suite.params import ParamError
from seg_suite.pseudo.kmeans import KMeansParams
from seg_suite.pseudo.maskcut import MaskCutParams
from seg_suite.pseudo.motion.grouping import GroupingParams
from seg_suite.pseudo.motion.pipeline import MotionMaskParams
from seg_suite.pseudo.motion.rcf_segmenter import RCFConfig
from seg_suite.pseudo.sam import SAM_ARCHS, SamArch, SamGeneratorParams
from seg_suite.pseudo.sam_refine import RefineParams

# class, bad field values, the line the refusal must be
REFUSED = [
    (MaskCutParams, {"tau": 1.0}, "MaskCutParams.tau must be in (0, 1), got 1.0"),
    (MaskCutParams, {"tau": 0}, "MaskCutParams.tau must be in (0, 1), got 0"),
    (MaskCutParams, {"num_masks": 0}, "MaskCutParams.num_masks must be at least 1, got 0"),
    (MaskCutParams, {"facet": "x"}, "MaskCutParams.facet must be one of k, q, v, token, got 'x'"),
    (MaskCutParams, {"solver": "qr"}, "MaskCutParams.solver must be one of auto, eigsh, lobpcg, dense, got 'qr'"),
    (SamGeneratorParams, {"pred_iou_thresh": 1.5}, "SamGeneratorParams.pred_iou_thresh must be in [0, 1], got 1.5"),
    (SamGeneratorParams, {"crop_overlap_ratio": 1.0},
     "SamGeneratorParams.crop_overlap_ratio must be in [0, 1), got 1.0"),
    (SamGeneratorParams, {"points_per_side": 0}, "SamGeneratorParams.points_per_side must be at least 1, got 0"),
    (RefineParams, {"num_negative": -1}, "RefineParams.num_negative must be at least 0, got -1"),
    (RefineParams, {"ring_inner": 0.2}, "RefineParams.ring_inner must be at most ring_outer (0.1), got 0.2"),
    (RefineParams, {"iou_thresh": -0.1}, "RefineParams.iou_thresh must be in [0, 1], got -0.1"),
    (GroupingParams, {"num_models": 1}, "GroupingParams.num_models must be at least 2, got 1"),
    (GroupingParams, {"model": "rigid"}, "GroupingParams.model must be one of affine, quadratic, got 'rigid'"),
    (GroupingParams, {"temporal_alpha": 1.0}, "GroupingParams.temporal_alpha must be in [0, 1), got 1.0"),
    (GroupingParams, {"min_motion": -1.0}, "GroupingParams.min_motion must be at least 0, got -1.0"),
    (MotionMaskParams, {"gaps": (2,)}, "MotionMaskParams.gaps must be positive integers including 1, got (2,)"),
    (MotionMaskParams, {"flow_preset": "slow"},
     "MotionMaskParams.flow_preset must be one of ultrafast, fast, medium, got 'slow'"),
    (RCFConfig, {"size": (30, 32)}, "RCFConfig.size must be two sides, multiples of 4 and at least 32, got (30, 32)"),
    (RCFConfig, {"size": ("a", "b")},
     "RCFConfig.size must be two sides, multiples of 4 and at least 32, got ('a', 'b')"),
    (RCFConfig, {"lr": 0.0}, "RCFConfig.lr must be positive, got 0.0"),
    (RCFConfig, {"stage2_steps": -1}, "RCFConfig.stage2_steps must be at least 0, got -1"),
    (KMeansParams, {"n_clusters": 0}, "KMeansParams.n_clusters must be at least 1, got 0"),
    (KMeansParams, {"backend": "cuml"}, "KMeansParams.backend must be one of torch, sklearn, faiss, got 'cuml'"),
]


@pytest.mark.parametrize("cls, values, line", REFUSED, ids=[f"{c.__name__}-{next(iter(v))}" for c, v, _ in REFUSED])
def test_each_params_class_refuses_bad_values_in_one_line(cls, values, line):
    with pytest.raises(ParamError) as refused:
        cls(**values)
    assert str(refused.value) == line
    assert refused.value.name == next(iter(values))
    assert isinstance(refused.value, ValueError)  # callers that catch ValueError keep working


@pytest.mark.parametrize("cls", [MaskCutParams, SamGeneratorParams, RefineParams, GroupingParams, MotionMaskParams,
                                 RCFConfig, KMeansParams])
def test_defaults_are_valid_frozen_and_round_trip_through_json(cls):
    params = cls()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.seed = 1  # every class is frozen, whatever the field
    assert cls.from_dict(json.loads(json.dumps(params.to_dict()))) == params


def test_to_dict_records_tuples_as_lists_and_nests():
    d = MotionMaskParams(gaps=(1, 2), grouping=GroupingParams(num_models=3)).to_dict()
    assert d["gaps"] == [1, 2] and d["grouping"]["num_models"] == 3
    assert RCFConfig().to_dict()["size"] == [128, 160]
    assert SamArch.from_dict(SAM_ARCHS["vit_b"].to_dict()).encoder_global_attn_indexes == (2, 5, 8, 11)


def test_a_cross_field_rule_holds_for_replace_too():
    with pytest.raises(ParamError, match="ring_inner must be at most ring_outer"):
        dataclasses.replace(RefineParams(), ring_outer=0.01)


# command, bad flags, the one error line
CLI_REFUSALS = [
    ("maskcut", ["--input", "IN", "--output", "O.json", "--tau", "1.5"], "error: --tau must be in (0, 1), got 1.5"),
    ("maskcut", ["--input", "IN", "--output", "O.json", "--num-masks", "0"],
     "error: --num-masks must be at least 1, got 0"),
    ("sam-masks", ["--input", "IN", "--output", "O.json", "--random-init", "--stability-score-thresh", "2"],
     "error: --stability-score-thresh must be in [0, 1], got 2"),
    ("refine", ["--input", "P.json", "--images", "I", "--output", "O.json", "--ring-inner", "0.5"],
     "error: --ring-inner must be at most ring_outer (0.1), got 0.5"),
    ("motion-masks", ["--input", "IN", "--output", "O.json", "--gaps", "2"],
     "error: --gaps must be positive integers including 1, got 2"),
    ("motion-masks", ["--input", "IN", "--output", "O.json", "--gaps", "1,x"],
     "error: --gaps must be comma-separated integers, got '1,x'"),
    ("motion-masks", ["--input", "IN", "--output", "O.json", "--num-models", "1"],
     "error: --num-models must be at least 2, got 1"),
    ("train-motion", ["--input", "IN", "--output", "O.pth", "--size", "100x30"],
     "error: --size must be two sides, multiples of 4 and at least 32, got 100x30"),
    ("train-motion", ["--input", "IN", "--output", "O.pth", "--size", "64"], "error: --size must be HxW, got '64'"),
    ("cluster", ["--input", "P.json", "--images", "I", "--output", "O.json", "--k", "0"],
     "error: --k must be at least 1, got 0"),
    ("semantic-pseudo", ["--input", "IN", "--output", "O", "--kmeans-batch-size", "0"],
     "error: --kmeans-batch-size must be at least 1, got 0"),
]


@pytest.mark.parametrize("command, argv, line", CLI_REFUSALS, ids=[f"{c}-{a[-2]}" for c, a, _ in CLI_REFUSALS])
def test_a_bad_flag_value_is_exit_2_and_one_line(command, argv, line, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the checks come before any input is read or output written
    assert main([command, *argv]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [line]
    assert list(tmp_path.iterdir()) == []


def _help(command: str, capsys) -> str:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    return " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command, phrases", [
    ("maskcut", ["--tau T affinity binarisation threshold (default: 0.15, CutLER's README)",
                 "--crf, --no-crf dense-CRF refinement of each mask (default: on, as CutLER's maskcut.py",
                 "--facet {k,q,v,token}"]),
    ("sam-masks", ["(default: 0.341333, segment-anything's 512/1500)", "--pred-iou-thresh T"]),
    ("motion-masks", ["--gaps 1[,2]", "grouping uses gap 1 (default: 1)", "--motion-model {affine,quadratic}",
                      "(default: 2, measured on seg_suite's synthetic videos)"]),
    ("train-motion", ["--size HxW", "(default: 128x160)", "(default: 4, RCF mask_layer)"]),
    ("cluster", ["--k K number of clusters (default: 300, U2Seg's COCO setting; 800 is its large one)",
                 "(default: 100, scikit-learn's max_iter)"]),
    ("semantic-pseudo", ["--k K number of clusters (default: 27, COCO-Stuff-27 as STEGO and U2Seg)"]),
])
def test_derived_flags_state_their_default_and_its_source(command, phrases, capsys):
    text = _help(command, capsys)
    for phrase in phrases:
        assert phrase in text, phrase
    assert not re.search(r"\(default: \d+\.\d{7,}", text)  # floats are shown short
