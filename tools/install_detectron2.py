#!/usr/bin/env python
"""Install a working pure-Python detectron2 0.6 into the running Python environment.

detectron2 has no official release on PyPI. The only registry copy of its last release (v0.6) is
the sdist ``pb1-detectron2==0.6``, whose Python sources match upstream v0.6 but which lacks the
C++/CUDA sources of the ``detectron2._C`` extension, so it does not build as shipped. This script:

1. skips quickly (well under 2 s) when a usable detectron2 is already importable: our own
   patched build (marker file ``detectron2/_seg_suite_patch.txt`` whose patch fingerprint matches
   this script and ``tools/detectron2_patch/``) or any other build that imports, for example a
   user's source build with compiled ops, which is left alone. A build of ours with another
   fingerprint, or a broken foreign one, is replaced;
2. otherwise downloads the sdist with pip, checks its sha256, unpacks it, applies the
   compatibility fixes that upstream detectron2 made later (plus fallbacks for the missing
   extension), builds a pure-Python wheel without ``ext_modules`` and installs it with pip,
   pinning the installed torch/torchvision so that pip never changes them.

Every source change is an exact text substitution whose expected number of matches is checked,
so a different sdist fails loudly instead of being half patched. No detectron2 source is kept in
seg_suite; the sdist is fetched at install time.

Usage: python tools/install_detectron2.py [--force] [--check] [--sdist PATH] [--wheel-dir DIR]
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

SDIST_REQUIREMENT = "pb1-detectron2==0.6"
SDIST_NAME = "pb1-detectron2-0.6.tar.gz"
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# A readable patch number; the marker also holds a fingerprint of the patches and the compat
# module, so any change to them rebuilds an installed copy even if this number was not bumped.
PATCH_VERSION = 3
MARKER_NAME = "_seg_suite_patch.txt"
COMPAT_MODULE = "_seg_suite_compat.py"
# Our own module added to the package: where patched detectron2 code asks for `_C` and fallbacks.
COMPAT_SOURCE = Path(__file__).resolve().parent / "detectron2_patch" / COMPAT_MODULE
LOG_NAME = "seg_suite-detectron2-install.log"


class InstallError(Exception):
    """A failure the user can act on; main() prints it as one line."""


def say(msg: str) -> None:
    print(f"[install_detectron2] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# What is installed now
# --------------------------------------------------------------------------------------------
def installed_package_dir() -> Path | None:
    """Directory of the importable `detectron2` package, found without importing it."""
    spec = importlib.util.find_spec("detectron2")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def read_marker(pkg_dir: Path) -> dict:
    marker = pkg_dir / MARKER_NAME
    if not marker.is_file():
        return {}
    fields = {}
    for line in marker.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def has_compiled_ops(pkg_dir: Path) -> bool:
    return any(any(pkg_dir.glob(pattern)) for pattern in ("_C.so", "_C.*.so", "_C.*.pyd"))


def imports_cleanly(modules: list[str]) -> tuple[bool, str]:
    """Import modules in a fresh interpreter; returns (ok, last line of the error)."""
    code = "import " + ", ".join(modules)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode == 0:
        return True, ""
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return False, lines[-1] if lines else f"exit status {proc.returncode}"


def owning_distributions() -> list[str]:
    """Names of installed distributions that provide the top-level `detectron2` package."""
    return sorted(set(importlib.metadata.packages_distributions().get("detectron2", [])))


def patch_fingerprint() -> str:
    """Changes whenever PATCH_VERSION, a patch or the compat module changes."""
    h = hashlib.sha256(repr((PATCHES, NUMPY_ALIAS.pattern)).encode())
    h.update(COMPAT_SOURCE.read_bytes())
    return h.hexdigest()[:16]


def missing_requirements() -> list[str]:
    """Distributions that the installed detectron2 requires but that are not installed."""
    try:
        from packaging.requirements import Requirement
        requires = importlib.metadata.requires("detectron2") or []
    except (ImportError, importlib.metadata.PackageNotFoundError):
        return []
    missing = []
    for line in requires:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        try:
            importlib.metadata.version(req.name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(req.name)
    return missing


def decide(force: bool) -> tuple[bool, str]:
    """Returns (install_needed, reason)."""
    pkg_dir = installed_package_dir()
    if pkg_dir is None:
        return True, "detectron2 is not installed"
    if force:
        return True, f"--force given (replacing {pkg_dir})"
    marker = read_marker(pkg_dir)
    if marker:
        found = f"{marker.get('patch_version', '?')}/{marker.get('patch_fingerprint', '?')}"
        wanted = f"{PATCH_VERSION}/{patch_fingerprint()}"
        if found != wanted:
            return True, f"installed seg_suite patch {found} differs from {wanted}; rebuilding"
        missing = missing_requirements()
        if missing:
            return True, f"detectron2's dependencies {missing} are missing; reinstalling"
        return False, (f"seg_suite's patched detectron2 (patch {found}) is already installed "
                       f"at {pkg_dir}; skipping")
    if has_compiled_ops(pkg_dir):
        return False, (f"detectron2 with compiled ops found at {pkg_dir} (e.g. a source build); "
                       "leaving it alone")
    ok, err = imports_cleanly(["detectron2.evaluation", "detectron2.data", "detectron2.modeling"])
    if ok:
        return False, (f"a working detectron2 without compiled ops is installed at {pkg_dir} "
                       "(not built by seg_suite); leaving it alone")
    return True, f"the detectron2 at {pkg_dir} is broken ({err}); replacing it"


# --------------------------------------------------------------------------------------------
# Patches: (path relative to the unpacked sdist, old text, new text, expected match count)
# --------------------------------------------------------------------------------------------
_GUARD = "  # seg_suite: detectron2._C may be absent"

PATCHES: list[tuple[str, str, str, int]] = [
    # Pillow 10 removed Image.LINEAR (an alias of BILINEAR); upstream switched to BILINEAR.
    ("detectron2/data/transforms/transform.py",
     "interp=Image.LINEAR", "interp=Image.BILINEAR", 1),
    # NumPy 2: np.array(x, copy=False) raises when a copy is needed; upstream uses np.asarray.
    ("detectron2/layers/mask_ops.py",
     "mask = np.array(mask, copy=False)", "mask = np.asarray(mask)", 1),
    # setuptools dropped pkg_resources; importlib.resources finds the packaged config files.
    ("detectron2/model_zoo/model_zoo.py",
     "import pkg_resources\n", "import importlib.resources\n", 1),
    ("detectron2/model_zoo/model_zoo.py",
     'cfg_file = pkg_resources.resource_filename(\n'
     '        "detectron2.model_zoo", os.path.join("configs", config_path)\n'
     '    )',
     'cfg_file = str(\n'
     '        importlib.resources.files("detectron2.model_zoo").joinpath("configs", config_path)\n'
     '    )', 1),
    # PyTorch no longer ships caffe2; upstream imports the caffe2 exporter only when present.
    ("detectron2/export/__init__.py",
     "from .api import *\n",
     "try:  # seg_suite: caffe2 is optional, as upstream made it\n"
     "    from caffe2.proto import caffe2_pb2 as _caffe2_pb2  # noqa: F401\n"
     "except ImportError:\n"
     "    pass\n"
     "else:\n"
     "    from .api import *\n", 1),
    # Upstream's fix after 0.6: without it DefaultTrainer's checkpoints lack the optimizer (and AMP
    # scaler) state, so a resumed run restarts SGD/AdamW moments from zero. Checkpoints of an
    # unpatched detectron2 have no "_trainer" entry and still load.
    ("detectron2/engine/defaults.py",
     "    def run_step(self):\n"
     "        self._trainer.iter = self.iter\n"
     "        self._trainer.run_step()\n",
     "    def run_step(self):\n"
     "        self._trainer.iter = self.iter\n"
     "        self._trainer.run_step()\n\n"
     "    def state_dict(self):\n"
     "        ret = super().state_dict()\n"
     '        ret["_trainer"] = self._trainer.state_dict()\n'
     "        return ret\n\n"
     "    def load_state_dict(self, state_dict):\n"
     "        super().load_state_dict(state_dict)\n"
     '        if "_trainer" in state_dict:\n'
     '            self._trainer.load_state_dict(state_dict["_trainer"])\n', 1),
    # --- detectron2._C made optional ---------------------------------------------------------
    # Rotated-box ops: importable, but raise a clear error when called.
    ("detectron2/layers/rotated_boxes.py",
     "from detectron2 import _C\n",
     "from detectron2._seg_suite_compat import require_compiled" + _GUARD + "\n", 1),
    ("detectron2/layers/rotated_boxes.py",
     "return _C.box_iou_rotated(boxes1, boxes2)",
     'return require_compiled("box_iou_rotated").box_iou_rotated(boxes1, boxes2)', 1),
    ("detectron2/layers/roi_align_rotated.py",
     "from detectron2 import _C\n",
     "from detectron2._seg_suite_compat import require_compiled" + _GUARD + "\n", 1),
    ("detectron2/layers/roi_align_rotated.py",
     "output = _C.roi_align_rotated_forward(",
     'output = require_compiled("ROIAlignRotated").roi_align_rotated_forward(', 1),
    ("detectron2/layers/roi_align_rotated.py",
     "grad_input = _C.roi_align_rotated_backward(",
     'grad_input = require_compiled("ROIAlignRotated").roi_align_rotated_backward(', 1),
    ("detectron2/layers/nms.py",
     "from torchvision.ops import nms  # BC-compat\n",
     "from torchvision.ops import nms  # BC-compat\n\n"
     "from detectron2._seg_suite_compat import require_compiled" + _GUARD + "\n", 1),
    ("detectron2/layers/nms.py",
     "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)",
     '    require_compiled("nms_rotated")\n'
     "    return torch.ops.detectron2.nms_rotated(boxes, scores, iou_threshold)", 1),
    # Deformable convolution: torchvision.ops.deform_conv2d when the extension is missing.
    ("detectron2/layers/deform_conv.py",
     "from detectron2 import _C\n",
     "from detectron2._seg_suite_compat import _C" + _GUARD + "\n", 1),
    ("detectron2/layers/deform_conv.py",
     "deform_conv = _DeformConv.apply\nmodulated_deform_conv = _ModulatedDeformConv.apply\n",
     "if _C is not None:\n"
     "    deform_conv = _DeformConv.apply\n"
     "    modulated_deform_conv = _ModulatedDeformConv.apply\n"
     "else:  # seg_suite: pure-Python build, torchvision implements both (forward and backward)\n"
     "    from detectron2._seg_suite_compat import deform_conv, modulated_deform_conv\n", 1),
    # Fast COCO evaluation: without the extension, fall back to the official pycocotools COCOeval.
    ("detectron2/evaluation/fast_eval_api.py",
     "from detectron2 import _C\n",
     "from detectron2._seg_suite_compat import _C" + _GUARD + "\n\n"
     "if _C is None:\n"
     '    raise ImportError("detectron2 compiled op unavailable: COCOeval_opt needs detectron2._C")\n',
     1),
    ("detectron2/evaluation/coco_evaluation.py",
     "from detectron2.evaluation.fast_eval_api import COCOeval_opt\n",
     "try:\n"
     "    from detectron2.evaluation.fast_eval_api import COCOeval_opt\n"
     "except ImportError:  # seg_suite: no detectron2._C, use pycocotools' COCOeval\n"
     "    COCOeval_opt = None\n", 1),
    ("detectron2/evaluation/coco_evaluation.py",
     "        self._use_fast_impl = use_fast_impl\n",
     "        self._use_fast_impl = use_fast_impl and COCOeval_opt is not None\n"
     "        if use_fast_impl and COCOeval_opt is None:\n"
     "            self._logger.info(\n"
     '                "detectron2._C is not built: using pycocotools COCOeval instead of COCOeval_opt"\n'
     "            )\n", 1),
    ("detectron2/evaluation/coco_evaluation.py",
     "coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)",
     "use_fast_impl = use_fast_impl and COCOeval_opt is not None\n"
     "    coco_eval = (COCOeval_opt if use_fast_impl else COCOeval)(coco_gt, coco_dt, iou_type)", 1),
    # --- setup.py: pure-Python wheel --------------------------------------------------------
    ("setup.py", '    name="pb1-detectron2",\n', '    name="detectron2",\n', 1),
    ("setup.py", "    ext_modules=get_extensions(),\n", "", 1),
    ("setup.py", '    cmdclass={"build_ext": torch.utils.cpp_extension.BuildExtension},\n', "", 1),
    # The sdist has no top-level configs/ to glob from: ship the copy inside the package, and
    # our marker file.
    ("setup.py",
     'package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
     'package_data={\n'
     f'        "detectron2": ["{MARKER_NAME}"],\n'
     '        "detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"],\n'
     '    },', 1),
    # Dependencies as upstream has them now: black unpinned (21.4b2 breaks with current click),
    # omegaconf < 2.4, packaging added; future/pydot (caffe2 only) dropped; the panopticapi
    # extra points at a URL, which PyPI-hosted metadata may not declare.
    ("setup.py", '"black==21.4b2",', '"black",\n        "packaging",', 1),
    ("setup.py", '"omegaconf>=2.1",', '"omegaconf>=2.1,<2.4",', 1),
    ("setup.py", '        "future",  # used by caffe2\n', "", 1),
    ("setup.py", '        "pydot",  # used to save caffe2 SVGs\n', "", 1),
    ("setup.py",
     '            "panopticapi @ https://github.com/cocodataset/panopticapi/archive/master.zip",\n',
     "", 1),
]

# NumPy 1.24 removed these aliases of builtins; they are replaced in every file that uses them.
NUMPY_ALIAS = re.compile(r"\bnp\.(int|float|bool|str)\b")
# Files the field notes list as using them; finding fewer means the sdist is not the expected one.
NUMPY_ALIAS_EXPECTED = {
    "detectron2/evaluation/sem_seg_evaluation.py",
    "detectron2/data/build.py",
    "detectron2/structures/masks.py",
    "detectron2/utils/visualizer.py",
    "detectron2/utils/video_visualizer.py",
}


def apply_patch(text: str, old: str, new: str, expected: int, where: str) -> str:
    """Replace `old` by `new`, insisting that `old` occurs exactly `expected` times."""
    found = text.count(old)
    if found != expected:
        first = old.strip().splitlines()[0] if old.strip() else repr(old)
        raise InstallError(
            f"patch pattern found {found} time(s) instead of {expected} in {where}: {first!r}; "
            "the sdist is not the expected pb1-detectron2 0.6"
        )
    return text.replace(old, new)


def replace_numpy_aliases(root: Path) -> list[str]:
    """np.int/np.float/np.bool/np.str -> builtins in every .py file; returns the files changed."""
    changed = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        new = NUMPY_ALIAS.sub(lambda m: m.group(1), text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path.relative_to(root).as_posix())
    missing = NUMPY_ALIAS_EXPECTED - set(changed)
    if missing:
        raise InstallError(f"expected NumPy aliases in {sorted(missing)} were not found; "
                           "the sdist is not the expected pb1-detectron2 0.6")
    return changed


def patch_tree(root: Path) -> None:
    """Apply every fix to the unpacked sdist at `root`, then audit the result."""
    by_file: dict[str, list[tuple[str, str, int]]] = {}
    for rel, old, new, count in PATCHES:
        by_file.setdefault(rel, []).append((old, new, count))
    for rel, edits in by_file.items():
        path = root / rel
        if not path.is_file():
            raise InstallError(f"{rel} missing from the sdist; not the expected pb1-detectron2 0.6")
        text = path.read_text(encoding="utf-8")
        for old, new, count in edits:
            text = apply_patch(text, old, new, count, rel)
        path.write_text(text, encoding="utf-8")
    changed = replace_numpy_aliases(root)
    shutil.copyfile(COMPAT_SOURCE, root / "detectron2" / COMPAT_MODULE)
    (root / "detectron2" / MARKER_NAME).write_text(
        f"patch_version={PATCH_VERSION}\npatch_fingerprint={patch_fingerprint()}\n"
        f"sdist={SDIST_REQUIREMENT}\nsdist_sha256={SDIST_SHA256}\n"
        f"installer=seg_suite tools/install_detectron2.py\n"
        f"compiled_ops=none (pure-Python build; see detectron2/{COMPAT_MODULE})\n",
        encoding="utf-8",
    )
    # Stale metadata from the sdist would name the old distribution.
    shutil.rmtree(root / "pb1_detectron2.egg-info", ignore_errors=True)
    problems = audit_tree(root)
    if problems:
        raise InstallError("patched sources still have problems: " + "; ".join(problems))
    say(f"patched {len(by_file)} files by substitution and NumPy aliases in {len(changed)} files")


# Anything below left in the patched sources means a fix is missing.
_AUDIT = [
    (re.compile(r"\bImage\.LINEAR\b"), "Image.LINEAR"),
    (NUMPY_ALIAS, "NumPy alias"),
    (re.compile(r"np\.array\([^)]*copy=False"), "np.array(copy=False)"),
    (re.compile(r"^\s*(import|from)\s+pkg_resources\b", re.M), "pkg_resources import"),
    (re.compile(r"^\s*(from\s+detectron2\s+import\s+_C\b|import\s+detectron2\._C\b)", re.M),
     "unguarded detectron2._C import"),
    (re.compile(r"(?<!require_compiled\(\"nms_rotated\"\)\n    return )torch\.ops\.detectron2\."),
     "unguarded torch.ops.detectron2 call"),
]
# Files allowed to import _C directly: ours (inside try) and collect_env (inside try upstream).
_AUDIT_ALLOWED = {
    "unguarded detectron2._C import": {
        f"detectron2/{COMPAT_MODULE}", "detectron2/utils/collect_env.py",
    },
}


def audit_tree(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("tools/"):  # upstream's scripts are not installed
            continue
        text = path.read_text(encoding="utf-8")
        for pattern, what in _AUDIT:
            if pattern.search(text) and rel not in _AUDIT_ALLOWED.get(what, ()):
                problems.append(f"{what} in {rel}")
    return problems


# --------------------------------------------------------------------------------------------
# Download, build, install
# --------------------------------------------------------------------------------------------
def run_pip(args: list[str], log, *, disable_direct_url_check: bool = False, env=None) -> None:
    """Runs pip in a subprocess of this interpreter, appending its output to `log`."""
    if disable_direct_url_check:
        # pip >= 26 refuses to even download an sdist from PyPI whose metadata declares a direct
        # URL dependency; pb1-detectron2's optional "all" extra names panopticapi by URL. We
        # download with --no-deps and a pinned hash, and that extra is removed before building,
        # so the check is switched off for this one call.
        code = textwrap.dedent(f"""\
            import sys
            try:
                from pip._internal.operations import prepare
                prepare.check_pypi_direct_references = lambda *a, **k: None
            except ImportError:
                pass
            from pip._internal.cli.main import main
            sys.exit(main({args!r}))
            """)
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, "-m", "pip", *args]
    log.write(f"\n$ pip {' '.join(args)}\n")
    log.flush()
    proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def _log_tail(log_path: Path, n: int = 400) -> str:
    try:
        return log_path.read_text(errors="replace")[-n * 20:]
    except OSError:
        return ""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist(dest: Path, log, log_path: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    req = dest / "requirements.txt"
    req.write_text(f"{SDIST_REQUIREMENT} --hash=sha256:{SDIST_SHA256}\n")
    say(f"downloading {SDIST_REQUIREMENT} from the package index with pip")
    try:
        run_pip(["download", "--no-deps", "--no-binary", ":all:", "--no-build-isolation",
                 "--require-hashes", "-r", str(req), "-d", str(dest)],
                log, disable_direct_url_check=True)
    except subprocess.CalledProcessError:
        tail = _log_tail(log_path)
        if re.search(r"THESE PACKAGES DO NOT MATCH THE HASHES", tail):
            raise InstallError(f"the downloaded {SDIST_NAME} does not have sha256 {SDIST_SHA256}; "
                               "refusing to install it") from None
        if re.search(r"NewConnectionError|Failed to establish|Name or service not known|"
                     r"Temporary failure in name resolution|Network is unreachable|ProxyError|"
                     r"No matching distribution found", tail):
            raise InstallError(f"pip could not fetch {SDIST_REQUIREMENT} (no network or no "
                               "access to PyPI?); connect and retry, or pass --sdist PATH to a "
                               f"downloaded {SDIST_NAME}; pip's output is in {log_path}") from None
        raise InstallError(f"pip download of {SDIST_REQUIREMENT} failed; see {log_path}") from None
    found = sorted(dest.glob("pb1*detectron2-0.6.tar.gz"))
    if not found:
        raise InstallError(f"pip reported success but no {SDIST_NAME} appeared; see {log_path}")
    return found[0]


def unpack(sdist: Path, dest: Path) -> Path:
    with tarfile.open(sdist, "r:gz") as tar:
        if hasattr(tarfile, "data_filter"):  # refuses links/paths that escape dest
            tar.extractall(dest, filter="data")
        else:
            for member in tar.getmembers():
                if member.name.startswith("/") or ".." in Path(member.name).parts:
                    raise InstallError(f"unsafe path {member.name!r} in {sdist.name}")
            tar.extractall(dest)
    roots = [p for p in dest.iterdir() if p.is_dir() and (p / "setup.py").is_file()]
    if len(roots) != 1:
        raise InstallError(f"{sdist.name} does not unpack to a single source tree with setup.py")
    return roots[0]


def torch_pins() -> list[str]:
    pins = []
    for name in ("torch", "torchvision"):
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return pins


def build_and_install(src: Path, work: Path, log, log_path: Path, wheel_dir: Path | None) -> None:
    if importlib.util.find_spec("torch") is None:
        raise InstallError("torch is not installed in this environment; install torch first "
                           "(detectron2's setup.py imports it)")
    wheels = work / "wheels"
    env = dict(os.environ, D2_VERSION_SUFFIX=f"+segsuite{PATCH_VERSION}")
    env.pop("BUILD_NIGHTLY", None)
    say("building a pure-Python wheel (no detectron2._C extension)")
    try:
        run_pip(["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                log, env=env)
    except subprocess.CalledProcessError:
        raise InstallError(f"building the detectron2 wheel failed; see {log_path}") from None
    built = sorted(wheels.glob("detectron2-*.whl"))
    if len(built) != 1:
        raise InstallError(f"expected one detectron2 wheel, found {[p.name for p in built]}")
    wheel = built[0]
    if wheel_dir is not None:
        wheel_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(wheel, wheel_dir / wheel.name)
        say(f"kept a copy of {wheel.name} in {wheel_dir}")

    # Another distribution owning the package (e.g. a plain pb1-detectron2) must go first; our
    # own "detectron2" is replaced in place below, so importers never see it missing for long.
    for dist in owning_distributions():
        if dist.lower() == "detectron2":
            continue
        say(f"uninstalling the previous distribution {dist}")
        try:
            run_pip(["uninstall", "-y", dist], log)
        except subprocess.CalledProcessError:
            raise InstallError(f"pip uninstall {dist} failed; see {log_path}") from None

    constraints = work / "constraints.txt"
    pins = torch_pins()
    constraints.write_text("".join(p + "\n" for p in pins))
    say(f"installing {wheel.name} and its dependencies (keeping {', '.join(pins) or 'no torch'})")
    try:
        # Dependencies (and the wheel, unless this version is already there), then the wheel's
        # files again, because pip treats a same-version wheel as already satisfied.
        run_pip(["install", "-c", str(constraints), str(wheel)], log)
        run_pip(["install", "--force-reinstall", "--no-deps", str(wheel)], log)
    except subprocess.CalledProcessError:
        raise InstallError(f"pip install of {wheel.name} or its dependencies failed; "
                           f"see {log_path}") from None
    after = torch_pins()
    if after != pins:
        raise InstallError(f"torch/torchvision changed during install: {pins} -> {after}")


def verify() -> None:
    importlib.invalidate_caches()
    pkg_dir = installed_package_dir()
    if pkg_dir is None or read_marker(pkg_dir).get("patch_fingerprint") != patch_fingerprint():
        raise InstallError(f"after installing, `import detectron2` finds {pkg_dir}, not the new "
                           "build (is another copy on PYTHONPATH?)")
    modules = ["detectron2.engine", "detectron2.evaluation", "detectron2.data",
               "detectron2.modeling", "detectron2.layers", "detectron2.model_zoo"]
    ok, err = imports_cleanly(modules)
    if not ok:
        raise InstallError(f"the installed detectron2 does not import: {err}")


def log_path_for_env() -> Path:
    return Path(sys.prefix) / LOG_NAME


def install(sdist: Path | None, wheel_dir: Path | None) -> None:
    log_path = log_path_for_env()
    with open(log_path, "w") as log, tempfile.TemporaryDirectory(prefix="seg_suite_d2_") as tmp:
        work = Path(tmp)
        if sdist is None:
            sdist = download_sdist(work / "download", log, log_path)
        elif not sdist.is_file():
            raise InstallError(f"--sdist {sdist}: no such file")
        digest = sha256_of(sdist)
        if digest != SDIST_SHA256:
            raise InstallError(f"{sdist} has sha256 {digest}, expected {SDIST_SHA256}; refusing it")
        say(f"sha256 verified: {SDIST_SHA256[:16]}...")
        src = unpack(sdist, work / "src")
        patch_tree(src)
        build_and_install(src, work, log, log_path, wheel_dir)
    verify()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Install seg_suite's pure-Python build of detectron2 0.6 from the "
                    f"{SDIST_REQUIREMENT} sdist, unless a usable detectron2 is already installed.")
    parser.add_argument("--force", action="store_true",
                        help="rebuild and reinstall even if a usable detectron2 is installed")
    parser.add_argument("--check", action="store_true",
                        help="only report what would be done; exit 1 if an install is needed")
    parser.add_argument("--sdist", type=Path, default=None,
                        help=f"use this local {SDIST_NAME} instead of downloading it "
                             "(its sha256 is still checked)")
    parser.add_argument("--wheel-dir", type=Path, default=None,
                        help="also keep the built wheel in this directory")
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        needed, reason = decide(args.force)
        say(reason)
        if args.check or not needed:
            return 1 if (args.check and needed) else 0
        install(args.sdist, args.wheel_dir)
    except InstallError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    elapsed = time.monotonic() - start
    say(f"detectron2 installed (seg_suite patch {PATCH_VERSION}) in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
