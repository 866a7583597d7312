"""The CUDA tier (``pytest -m cuda``): every test in tests/cuda carries the ``cuda`` mark.

A test marked ``cuda`` is skipped when, and only when, ``torch.cuda.is_available()`` is false.
TF32 is turned off for these tests, so float32 results on the GPU can be compared with the CPU's
at float32 tolerances.
"""

from __future__ import annotations

import pytest
import torch

SKIP_REASON = "CUDA not available (torch.cuda.is_available() is false)"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def full_float32():
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
