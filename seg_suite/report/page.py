"""A report page as data: sections of notes, plots, one table and thumbnail galleries, rendered
through ``templates/page.html`` (jinja2, autoescaped) with no JavaScript beyond column sorting.

Every page module builds a :class:`Page` and its assets through an :class:`~seg_suite.report.assets.Assets`;
nothing here knows what the numbers mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from seg_suite.io.files import atomic_write

THUMB_WIDTH = 180  # px; the gallery's figure width and the thumbnails' size


@dataclass
class Cell:
    text: str
    num: bool = False
    sort: str = ""
    href: str | None = None


def cell(value, digits: int = 2, href: str | None = None) -> Cell:
    """A table cell: numbers right-aligned with a sort key, None/NaN shown as a dash (sorted as NaN)."""
    if href is not None:
        return Cell(str(value), href=href)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return Cell("–" if value is None else str(value))
    if isinstance(value, float) and not math.isfinite(value):
        return Cell("–", num=True, sort="NaN")
    text = f"{value:d}" if isinstance(value, int) else f"{value:.{digits}f}"
    return Cell(text, num=True, sort=repr(float(value)))


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Cell]]
    sortable: bool = True


@dataclass
class Plot:
    src: str
    alt: str


@dataclass
class GalleryItem:
    src: str
    caption: str
    href: str | None = None
    wide: bool = False


@dataclass
class Gallery:
    items: list[GalleryItem]
    title: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Section:
    id: str
    title: str
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)
    table: Table | None = None
    galleries: list[Gallery] = field(default_factory=list)
    alert: bool = False  # notes in red: something the reader must not miss


@dataclass
class Page:
    title: str
    sections: list[Section] = field(default_factory=list)
    intro: list[str] = field(default_factory=list)
    parent: str | None = None  # link back to the front page, relative to this page

    def add(self, section: Section) -> Section:
        self.sections.append(section)
        return section

    def section_ids(self) -> list[str]:
        return [s.id for s in self.sections]


def _environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("seg_suite.report", "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined)


def render(page: Page) -> str:
    return _environment().get_template("page.html").render(
        title=page.title, intro=page.intro, sections=page.sections, parent=page.parent, thumb=THUMB_WIDTH)


def write_page(page: Page, path: Path) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(render(page))
    return path
