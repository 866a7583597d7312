"""Open a report page in headless Chromium (Debian's ``chromium``, installed by ``make setup``).

:func:`open_page` loads a page from disk once, taking a screenshot and dumping the document as
the browser built it (after its scripts ran, ``--dump-dom``), with Chromium's log on stderr,
where every console message and uncaught exception appears as a ``CONSOLE`` line (the report's
pages log nothing, so any such line counts as an error).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
         "--allow-file-access-from-files", "--disable-extensions", "--disable-background-networking"]
CONSOLE = re.compile(r":CONSOLE[^\]]*\] (.*)")


@dataclass
class Loaded:
    console: list[str]  # console messages and uncaught exceptions
    images: list[str]  # src of every <img>
    section_ids: list[str]
    links: list[str]  # href of every <a>
    screenshot: np.ndarray  # HxWx3 uint8
    dom: str  # the document after its scripts ran


class _Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.sections, self.links = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "section" and a.get("id"):
            self.sections.append(a["id"])
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(profile))
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def open_page(page: Path, workdir: Path, width: int = 1280, height: int = 1400) -> Loaded:
    page = Path(page).resolve()
    shot = workdir / f"{page.parent.name}_screenshot.png"
    url = page.as_uri()
    if shot.exists():
        shot.unlink()
    run = _run(["--enable-logging=stderr", "--v=0", f"--screenshot={shot}", "--dump-dom",
                f"--window-size={width},{height}", "--virtual-time-budget=3000", url], workdir / "profile")
    assert shot.is_file(), f"no screenshot of {page}: {run.stderr[-2000:]}"
    assert run.returncode == 0 and "<html" in run.stdout, f"no DOM for {page}: {run.stderr[-2000:]}"
    collector = _Collector()
    collector.feed(run.stdout)
    from PIL import Image

    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"))
    return Loaded(console=[m.group(1) for m in CONSOLE.finditer(run.stderr)], images=collector.images,
                  section_ids=collector.sections, links=collector.links, screenshot=pixels,
                  dom=run.stdout)


def check_page(page: Path, workdir: Path, sections: list[str]) -> Loaded:
    """Open ``page``; assert no console output, every <img> on disk, a screenshot that is not blank,
    and ``sections`` present."""
    loaded = open_page(page, workdir)
    assert loaded.console == [], f"{page}: console messages {loaded.console}"
    for src in loaded.images:
        assert not src.startswith(("http:", "https:", "//", "data:")), f"{page}: image {src} is not a local file"
        assert (page.parent / src).is_file(), f"{page}: <img src={src!r}> does not exist"
    assert loaded.screenshot.std() > 10, f"{page}: the screenshot is blank (pixel std {loaded.screenshot.std():.1f})"
    missing = [s for s in sections if s not in loaded.section_ids]
    assert not missing, f"{page}: sections {missing} missing (has {loaded.section_ids})"
    return loaded
