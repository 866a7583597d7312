"""The files a report page refers to: full-size overlays, thumbnails and plots, under one folder.

Names are given by the caller (counters in page order), so two builds from the same inputs write
the same files. Images are JPEG (quality 90) to keep the report small; plots are PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seg_suite.io.files import atomic_write
from seg_suite.report.page import THUMB_WIDTH, GalleryItem, Plot

JPEG_QUALITY = 90
FULL_MAX_SIDE = 1024  # px; larger images are shrunk for the full-size view too


def _resized(image: np.ndarray, max_side: int):
    from PIL import Image

    im = Image.fromarray(image)
    scale = max_side / max(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.BILINEAR)
    return im


class Assets:
    """Writes a page's files under ``root / folder`` and returns their paths relative to the page."""

    def __init__(self, root: Path, folder: str = "assets"):
        self.root, self.folder = Path(root), folder
        (self.root / folder).mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> tuple[Path, str]:
        rel = f"{self.folder}/{name}"
        return self.root / rel, rel

    def image(self, array: np.ndarray, name: str, max_side: int = FULL_MAX_SIDE) -> str:
        """Save an HxWx3 uint8 image as ``name``.jpg; returns its page-relative path."""
        path, rel = self._path(f"{name}.jpg")
        with atomic_write(path, "wb") as fh:
            _resized(array, max_side).save(fh, format="JPEG", quality=JPEG_QUALITY)
        return rel

    def thumbnail(self, array: np.ndarray, name: str, caption: str, wide: bool = False) -> GalleryItem:
        """A full-size image and its thumbnail (a gallery item linking one to the other)."""
        full = self.image(array, name)
        thumb = self.image(array, f"{name}.thumb", max_side=(2 if wide else 1) * THUMB_WIDTH * 2)
        return GalleryItem(src=thumb, caption=caption, href=full, wide=wide)

    def figure(self, fig, name: str, alt: str) -> Plot:
        """Save a matplotlib figure as ``name``.png (no timestamp in the file) and close it."""
        import matplotlib.pyplot as plt

        path, rel = self._path(f"{name}.png")
        with atomic_write(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100, metadata={"Software": None})
        plt.close(fig)
        return Plot(src=rel, alt=alt)
