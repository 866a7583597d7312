"""The layering of the package, read from the source: which module may import which.

Every ``import`` and ``from ... import`` of every module under ``seg_suite/`` is collected with
``ast``, including imports inside functions (a lazy import is still a dependency), and checked
against the rules of the architecture:

* the pseudo-label generators are peers: none imports another (shared pieces live in
  ``seg_suite.io``, ``seg_suite.features`` or the runner core of ``seg_suite.pseudo``);
* evaluation never imports modeling (it must score outputs without building a model);
* io, features and pseudo never import detectron2 (pseudo-labels need no detection framework);
* nothing but the CLI itself imports ``seg_suite.cli``, and nothing imports ``tools``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "seg_suite"

# The modules behind the pseudo-label commands. Algorithm modules (ncut, maskcut, crf, kmeans, sam,
# sam_refine, motion.grouping, ...) and the runner core (runner, jobs, inputs, shards, feature_job)
# are not generators: generators may import those.
GENERATORS = frozenset({
    "seg_suite.pseudo.cluster",
    "seg_suite.pseudo.semantic",
    "seg_suite.pseudo.panoptic",
    "seg_suite.pseudo.maskcut_job",
    "seg_suite.pseudo.sam_jobs",
    "seg_suite.pseudo.motion.job",
    "seg_suite.pseudo.motion.rcf_train",
})


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([name] if name else []))


def imported_names(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` (the module named ``module``) imports, as dotted names; ``from a import b``
    yields ``a`` and ``a.b`` (``b`` may be a submodule, e.g. ``from seg_suite.pseudo import cluster``)."""
    module = module or _module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, path.name == "__init__.py", node.level, node.module)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def _modules() -> dict[str, set[str]]:
    return {_module_name(p): imported_names(p) for p in sorted(PACKAGE.rglob("*.py"))}


MODULES = _modules()


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _violations(importers: str, forbidden: str, allowed=lambda importer: False) -> list[str]:
    return sorted(f"{mod} imports {name}" for mod, names in MODULES.items()
                  if _within(mod, importers) and not allowed(mod)
                  for name in names if _within(name, forbidden))


def test_the_scan_sees_the_package_and_lazy_imports():
    # A guard on the scanner itself: an empty or blind scan would pass every rule below.
    assert len(MODULES) > 50
    assert set(GENERATORS) <= set(MODULES)
    # cluster.py imports the runner only inside a function
    assert "seg_suite.pseudo.runner" in MODULES["seg_suite.pseudo.cluster"]
    assert "seg_suite.pseudo.maskcut" in MODULES["seg_suite.pseudo.maskcut_job"]


def test_relative_and_from_imports_resolve(tmp_path):
    src = tmp_path / "x.py"
    src.write_text("from . import cluster\nfrom .. import cli\n\ndef f():\n    from .motion import job\n")
    names = imported_names(src, "seg_suite.pseudo.x")
    assert {"seg_suite.pseudo.cluster", "seg_suite.cli", "seg_suite.pseudo.motion.job"} <= names


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_no_generator_imports_another(generator):
    others = GENERATORS - {generator}
    bad = sorted(name for name in MODULES[generator] for other in others if _within(name, other))
    assert bad == [], f"{generator} imports the generator(s) {bad}; move the shared piece to io, features " \
                      f"or the runner core"


def test_evaluation_never_imports_modeling():
    assert _violations("seg_suite.evaluation", "seg_suite.modeling") == []


@pytest.mark.parametrize("package", ["seg_suite.io", "seg_suite.features", "seg_suite.pseudo"])
def test_light_packages_never_import_detectron2(package):
    assert _violations(package, "detectron2") == []


def test_only_the_cli_imports_the_cli():
    assert _violations("seg_suite", "seg_suite.cli", allowed=lambda mod: _within(mod, "seg_suite.cli")) == []


def test_nothing_imports_tools():
    assert _violations("seg_suite", "tools") == []
