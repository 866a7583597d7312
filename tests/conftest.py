"""Shared fixtures.

``synthetic_dataset``  a small synthetic set (seg_suite.data.synthetic), made once per session:
                       8 train + 6 val images of 256x320 (the generator's default size), 2 videos of 6 frames.
``write_image``        helper writing an RGB uint8 array as a PNG (any subfolder created).
``bright_images``      a folder of tiny PNGs with bright rectangles at known places (the runner
                       tests' oracle), nested one level, plus their expected masks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    from seg_suite.data.synthetic import make_synthetic_dataset

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_train=8, num_val=6, height=256, width=320, seed=0,
                           num_videos=2, video_frames=6, progress=False)
    return root


def _write_png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def write_image():
    return _write_png


def bright_rectangles(index: int, height: int = 20, width: int = 30) -> tuple[np.ndarray, list[np.ndarray]]:
    """A dark image with one or two bright rectangles whose place depends on ``index``."""
    image = np.full((height, width, 3), 20, np.uint8)
    masks = []
    boxes = [(2 + index % 5, 3, 4, 6 + index % 3)] + ([(11, 15 + index % 4, 5, 8)] if index % 2 else [])
    for y, x, h, w in boxes:
        image[y : y + h, x : x + w] = 180 + 10 * (index % 6)
        mask = np.zeros((height, width), bool)
        mask[y : y + h, x : x + w] = True
        masks.append(mask)
    return image, masks


@pytest.fixture
def bright_images(tmp_path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """``(root, {key: expected masks})`` for 10 images, half of them in ``sub/``."""
    root = tmp_path / "images"
    expected = {}
    for i in range(10):
        key = f"sub/{i:02d}.png" if i % 2 else f"{i:02d}.png"
        image, masks = bright_rectangles(i)
        _write_png(root / key, image)
        expected[key] = masks
    return root, expected


@pytest.fixture
def one_thread():
    """One torch thread for in-process training: on a busy 2-core machine OpenMP's spinning threads
    cost several times the CPU time (tests/engine/test_train_net.py measured ~5x)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# The CUDA tier (``pytest -m cuda``, tests/cuda): a test marked ``cuda`` is skipped when, and only
# when, ``torch.cuda.is_available()`` is false. TF32 is off inside it, so float32 results on the GPU
# compare with the CPU's at float32 tolerances. (One conftest for the whole suite: a second one would
# shadow this module for the tests that import helpers from it.)
CUDA_SKIP_REASON = "CUDA not available (torch.cuda.is_available() is false)"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _full_float32_on_cuda(request):
    if request.node.get_closest_marker("cuda") is None:
        yield
        return
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
