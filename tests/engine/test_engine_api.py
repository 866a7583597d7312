"""The typed engine API (seg_suite.engine.api): train(cfg, ...) and evaluate(cfg, ...) on CPU write
what tools/train_net.py writes and return the evaluation results as a dict."""

import json

import pytest

CONFIG = "configs/synthetic/maskformer2_R50_tiny_cpu.yaml"


@pytest.fixture
def release_loggers():
    from seg_suite.engine.launch import release_log_handlers

    yield
    release_log_handlers()


def _opts(root, out, *extra):
    return ["DATASETS.SYNTHETIC_ROOT", str(root), "OUTPUT_DIR", str(out), "SOLVER.MAX_ITER", "2",
            "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.IMS_PER_BATCH", "2", "SEED", "0", *extra]


def _written(folder):
    """The files a run wrote, by name (TensorBoard's event file is named by time and process)."""
    return sorted(p.name for p in folder.iterdir() if p.name != "log.txt" and not p.name.startswith("events.out"))


@pytest.mark.slow
def test_train_and_evaluate_through_the_api(synthetic_dataset, tmp_path, one_thread, release_loggers):
    from seg_suite.cli._train_net import run
    from seg_suite.engine.api import build_config, evaluate, train

    api_out, tool_out = tmp_path / "api", tmp_path / "tool"
    cfg = build_config(CONFIG, _opts(synthetic_dataset, api_out, "DATASETS.TEST", "()"), num_gpus=0)
    assert train(cfg, num_gpus=0, config_file=CONFIG) == {}
    assert run(["--config-file", CONFIG, "--num-gpus", "0",
                *_opts(synthetic_dataset, tool_out, "DATASETS.TEST", "()")]) == 0
    # The same files as the tool's run, and the same config apart from the output folder.
    assert _written(api_out) == _written(tool_out)
    assert {"model_final.pth", "last_checkpoint", "metrics.json", "config.yaml"} <= set(_written(api_out))
    assert (api_out / "config.yaml").read_text().replace(str(api_out), "OUT") == \
        (tool_out / "config.yaml").read_text().replace(str(tool_out), "OUT")
    assert (api_out / "last_checkpoint").read_text().strip() == "model_final.pth"

    # Continuing a finished run trains nothing more; evaluating it returns COCO results per task.
    assert train(cfg, resume=True, num_gpus=0) == {}
    eval_cfg = build_config(CONFIG, _opts(synthetic_dataset, tmp_path / "eval"), num_gpus=0)
    saved = tmp_path / "results.json"
    results = evaluate(eval_cfg, api_out / "model_final.pth", num_gpus=0, results_path=saved)
    assert {"bbox", "segm"} == set(results) and "AP" in results["segm"]
    assert json.loads(saved.read_text()) == results
    assert (tmp_path / "eval" / "inference" / "synthetic_val" / "coco_instances_results.json").is_file()


def test_evaluate_without_weights_is_refused(synthetic_dataset, tmp_path, release_loggers):
    from seg_suite.engine.api import build_config, evaluate
    from seg_suite.errors import UserError

    cfg = build_config(CONFIG, _opts(synthetic_dataset, tmp_path / "eval"), num_gpus=0)
    with pytest.raises(UserError, match="needs trained weights"):
        evaluate(cfg, num_gpus=0)
    assert not (tmp_path / "eval").exists()
