"""SOLVER.AMP.ENABLED on the CPU (seg_suite.engine.cpu_autocast): bfloat16 autocast where the CPU has
bfloat16 units, a one-line refusal where not, off when only a _BASE_ file (the official GPU
schedules) enables it."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs/synthetic/maskformer2_R50_tiny_cpu.yaml"


def _bf16_missing() -> str:
    from seg_suite.engine.cpu_autocast import check_cpu_bf16
    from seg_suite.errors import UserError

    try:
        check_cpu_bf16()
    except UserError as err:
        return str(err)
    return ""


needs_bf16 = pytest.mark.skipif(bool(_bf16_missing()), reason=f"this CPU lacks bfloat16 units: {_bf16_missing()}")


def test_cpu_without_bfloat16_units_is_refused_in_one_line(monkeypatch):
    from seg_suite.engine import cpu_autocast
    from seg_suite.engine.launch import build_config
    from seg_suite.errors import UserError

    monkeypatch.setattr(cpu_autocast, "cpu_flags", lambda: {"sse2", "avx2", "avx512f", "avx512bw"})
    with pytest.raises(UserError, match="no bfloat16 unit") as err:
        build_config(str(CONFIG), ["SOLVER.AMP.ENABLED", "True"], num_gpus=0)
    assert "\n" not in str(err.value) and "SOLVER.AMP.ENABLED False" in str(err.value)
    # Off, nothing to refuse; the flags of the units that do count.
    assert build_config(str(CONFIG), [], num_gpus=0).SOLVER.AMP.ENABLED is False
    for unit in ("amx_bf16", "avx512_bf16", "bf16"):
        cpu_autocast.check_cpu_bf16(flags={"avx2", unit})


@needs_bf16
def test_amp_is_on_when_asked_and_off_when_only_a_base_file_enables_it(tmp_path):
    from seg_suite.engine.launch import build_config

    own = tmp_path / "own.yaml"
    own.write_text(f"_BASE_: {CONFIG}\nSOLVER:\n  AMP:\n    ENABLED: True\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"_BASE_: {own}\nSOLVER:\n  MAX_ITER: 5\n")
    assert build_config(str(own), [], num_gpus=0).SOLVER.AMP.ENABLED is True
    assert build_config(str(CONFIG), ["SOLVER.AMP.ENABLED", "True"], num_gpus=0).SOLVER.AMP.ENABLED is True
    # Enabled by a _BASE_ file only, as the official configs enable float16 AMP for GPUs: off.
    assert build_config(str(child), [], num_gpus=0).SOLVER.AMP.ENABLED is False
    assert build_config(str(child), ["SOLVER.AMP.ENABLED", "True"], num_gpus=0).SOLVER.AMP.ENABLED is True


@needs_bf16
def test_autocast_step_runs_the_forward_in_bfloat16_and_keeps_float32_parameters():
    import torch
    from torch import nn

    from seg_suite.engine.cpu_autocast import CPUAutocastTrainer

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(8, 4)
            self.seen = []

        def forward(self, batch):
            out = self.linear(batch)
            self.seen.append(out.dtype)
            return {"loss_a": out.square().mean(), "loss_b": out.abs().mean()}

    torch.manual_seed(0)
    model = Model()
    reference = Model()
    reference.load_state_dict(model.state_dict())
    data = [torch.randn(16, 8) for _ in range(2)]
    trainer = CPUAutocastTrainer(model, data, torch.optim.SGD(model.parameters(), lr=0.1))
    trainer.train(0, 2)
    assert model.seen == [torch.bfloat16, torch.bfloat16]
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in model.parameters())
    losses = trainer.storage.history("total_loss").values()
    assert len(losses) == 2 and all(isinstance(v, float) for v, _ in losses)
    # The same two steps in float32: close, not equal (bfloat16 keeps 8 bits of mantissa).
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.1)
    for batch in data:
        loss = sum(reference(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=0.05, atol=0.02)
        assert not torch.equal(ours, theirs)
