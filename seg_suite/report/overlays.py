"""Images for the galleries: the picture (or a grey stand-in when it cannot be read) with masks drawn
in, side by side with the ground truth, and mask crops for the cluster galleries."""

from __future__ import annotations

import numpy as np

from seg_suite.io.images import ImageReadError, load_image
from seg_suite.io.paths import PathEscapeError, resolve_under
from seg_suite.visualization import overlay_masks

GAP = 6  # px of white between the prediction and the ground-truth panel
BACKGROUND = 96  # grey of the stand-in canvas


class ImageSource:
    """Reads ``root / file_name`` (never outside ``root``); remembers why an image could not be read."""

    def __init__(self, root):
        self.root = root
        self.problems: dict[str, str] = {}

    def read(self, file_name: str, height: int, width: int) -> np.ndarray:
        if self.root is not None:
            try:
                image = load_image(resolve_under(self.root, file_name, "file_name"))
                if image.shape[:2] == (height, width):
                    return image
                self.problems[file_name] = (f"{file_name} is {image.shape[1]}x{image.shape[0]}, the annotations "
                                            f"say {width}x{height}")
            except (ImageReadError, PathEscapeError) as err:
                self.problems[file_name] = str(err)
        return np.full((height, width, 3), BACKGROUND, np.uint8)


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    h = max(left.shape[0], right.shape[0])
    out = np.full((h, left.shape[1] + GAP + right.shape[1], 3), 255, np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + GAP:] = right
    return out


def draw(image: np.ndarray, masks, labels=None) -> np.ndarray:
    return overlay_masks(image, masks, labels=labels) if len(masks) else image


def crop(image: np.ndarray, mask: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """The mask's box (plus ``margin`` of its size on each side) with the mask drawn in."""
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return image
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    my, mx = int((y1 - y0) * margin) + 2, int((x1 - x0) * margin) + 2
    y0, x0 = max(0, y0 - my), max(0, x0 - mx)
    y1, x1 = min(image.shape[0], y1 + my), min(image.shape[1], x1 + mx)
    return overlay_masks(image[y0:y1, x0:x1], [mask[y0:y1, x0:x1]], alpha=0.35)
