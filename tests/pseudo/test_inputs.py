"""discover_inputs: folders (flat/nested), globs, .txt lists, keys and the empty-input error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seg_suite.errors import UserError
from seg_suite.pseudo.inputs import WorkItem, discover_inputs


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def tree(tmp_path) -> Path:
    root = tmp_path / "data"
    for rel in ["b.png", "a.jpg", "UPPER.JPG", "nested/deeper/c.webp", "nested/d.png",
                ".hidden.png", ".cache/e.png", "notes.txt", "nested/readme.md"]:
        touch(root / rel)
    os.symlink(root / "missing.png", root / "dangling.png")  # kept: it fails later, with a reason
    return root


def test_folder_recursive_sorted_relative_keys(tree):
    items = discover_inputs(tree)
    assert [i.key for i in items] == ["UPPER.JPG", "a.jpg", "b.png", "dangling.png", "nested/d.png",
                                      "nested/deeper/c.webp"]
    assert all(Path(i.path) == tree / i.key and Path(i.path).is_absolute() for i in items)
    assert items == sorted(items)


def test_same_keys_wherever_the_root_is(tree, tmp_path):
    moved = tmp_path / "elsewhere" / "copy"
    moved.parent.mkdir()
    os.rename(tree, moved)
    assert [i.key for i in discover_inputs(moved)][:3] == ["UPPER.JPG", "a.jpg", "b.png"]


def test_glob(tree):
    items = discover_inputs(str(tree / "**" / "*.png"))
    assert [i.key for i in items] == ["b.png", "dangling.png", "nested/d.png"]
    sub = discover_inputs(str(tree / "nested" / "*"))
    assert [i.key for i in sub] == ["d.png"]  # root is the non-wildcard prefix; readme.md is no image


def test_list_file(tree, tmp_path):
    listing = tree / "lists" / "todo.txt"
    listing.parent.mkdir()
    listing.write_text(
        "# images to label\n"
        "\n"
        "../b.png\n"
        f"{tree / 'nested' / 'd.png'}\n"
        "  ../missing-on-purpose.png  \n"
        "../$(touch pwned).png\n"
    )
    items = discover_inputs(listing)
    root = listing.parent
    assert [i.key for i in items] == ["../$(touch pwned).png", "../b.png", "../missing-on-purpose.png",
                                      "../nested/d.png"]
    assert Path(items[2].path) == (tree / "missing-on-purpose.png")  # missing files are kept
    assert not list(root.parent.glob("pwned")) and not Path("pwned").exists()  # never executed


def test_single_file(tree):
    assert discover_inputs(tree / "b.png") == [WorkItem("b.png", str(tree / "b.png"))]


def test_empty_inputs_are_clear_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    touch(empty / "notes.txt")
    with pytest.raises(UserError, match=f"no input images found in folder {empty}"):
        discover_inputs(empty)
    with pytest.raises(UserError, match="no input images found in glob pattern"):
        discover_inputs(str(empty / "*.png"))
    blank = tmp_path / "blank.txt"
    blank.write_text("# nothing\n\n")
    with pytest.raises(UserError, match="no input images found in list file"):
        discover_inputs(blank)
    with pytest.raises(UserError, match="input not found"):
        discover_inputs(tmp_path / "nope")
