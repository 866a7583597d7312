"""A synthetic segmentation dataset with exact ground truth, images and moving-object videos.

Every picture is rendered from continuous functions: each layer (the background, then each
object, back to front) maps pixel coordinates to its own local coordinates, where its shape and
its procedural texture are defined. Because the texture lives in the layer's coordinates, it
moves with the layer, so the forward optical flow of a video is known in closed form, and
masks, semantic maps and panoptic maps are all derived from one "which layer is visible here"
map, so they agree exactly.

Categories (COCO form, :data:`SYNTHETIC_CATEGORIES`): four things, each with its own shape,
texture family and hue range (disk/stripes/red-orange, square/checker/purple,
triangle/dots/yellow, star/rings/teal), and two stuff classes split by a wavy horizon
(sky: smooth blue gradient with soft clouds; ground: fine green grain).

Pure numpy/OpenCV/PIL: no torch, no detectron2. Deterministic under a seed; each image and
each video draws from its own ``SeedSequence([seed, split, index])`` so one item does not
depend on how many others were made.
"""

from __future__ import annotations

import colorsys
import io as _io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from seg_suite.errors import UserError
from seg_suite.io.files import atomic_write, atomic_write_json, atomic_write_png
from seg_suite.io.masks import mask_to_bbox, mask_to_rle
from seg_suite.io.panoptic import id_to_rgb

SYNTHETIC_CATEGORIES: list[dict] = [
    {"id": 1, "name": "disk", "supercategory": "shape", "isthing": 1, "color": [220, 70, 40]},
    {"id": 2, "name": "square", "supercategory": "shape", "isthing": 1, "color": [170, 50, 200]},
    {"id": 3, "name": "triangle", "supercategory": "shape", "isthing": 1, "color": [230, 200, 30]},
    {"id": 4, "name": "star", "supercategory": "shape", "isthing": 1, "color": [30, 190, 170]},
    {"id": 5, "name": "sky", "supercategory": "background", "isthing": 0, "color": [110, 160, 230]},
    {"id": 6, "name": "ground", "supercategory": "background", "isthing": 0, "color": [80, 130, 50]},
]
THING_IDS = (1, 2, 3, 4)
STUFF_IDS = (5, 6)
SKY, GROUND = 5, 6
IGNORE_LABEL = 255  # semantic value for unlabelled pixels (never produced here; every pixel is labelled)

# Per thing category: shape, texture family, (hue min, hue max) in degrees.
_THING_STYLE = {
    1: ("disk", "stripes", (0.0, 25.0)),
    2: ("square", "checker", (275.0, 320.0)),
    3: ("triangle", "dots", (45.0, 62.0)),
    4: ("star", "rings", (165.0, 185.0)),
}
# Shape size parameters relative to r, chosen so every shape covers about pi*r^2 pixels, and
# the radius of the circle that bounds it (to keep objects inside the frame).
_SQUARE_HALF = np.sqrt(np.pi) / 2  # half side: (2h)^2 = pi r^2
_TRI_CIRCUM = np.sqrt(4 * np.pi / (3 * np.sqrt(3)))  # equilateral area 3*sqrt(3)/4 R^2
_STAR_INNER = 0.55  # inner/outer radius; polar-linear star has mean rho^2 = 0.6175 R^2
_STAR_OUTER = 1.0 / np.sqrt(_STAR_INNER**2 + _STAR_INNER * (1 - _STAR_INNER) + (1 - _STAR_INNER) ** 2 / 3)
_BOUND = {"disk": 1.0, "square": _SQUARE_HALF * np.sqrt(2), "triangle": _TRI_CIRCUM, "star": _STAR_OUTER}

# Texture periods are at least ~6 px so bilinear warping (flow checks, augmentation) stays accurate.
_OBJECT_PERIOD = (8.0, 14.0)
_GRAIN_PERIOD = (6.0, 12.0)
_CLOUD_PERIOD = (80.0, 220.0)


def semantic_index(category_id: int) -> int:
    """Contiguous semantic index of a category: its rank among the 6 categories ordered by id."""
    return [c["id"] for c in SYNTHETIC_CATEGORIES].index(category_id)


def _hsv(rng: np.random.Generator, hue: tuple[float, float], sat: tuple[float, float], val: tuple[float, float]):
    h = rng.uniform(*hue) % 360.0 / 360.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*val)), np.float32) * 255.0


def _waves(rng: np.random.Generator, count: int, period: tuple[float, float]) -> np.ndarray:
    """Random plane waves as rows (kx, ky, phase), for band-limited procedural noise."""
    freq = 2 * np.pi / rng.uniform(*period, size=count)
    angle = rng.uniform(0, 2 * np.pi, size=count)
    return np.stack([freq * np.cos(angle), freq * np.sin(angle), rng.uniform(0, 2 * np.pi, size=count)], 1)


def _noise(waves: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum of cosines normalised to unit variance: HxW float32."""
    out = np.zeros(u.shape, np.float32)
    for kx, ky, ph in waves:
        out += np.cos(kx * u + ky * v + ph, dtype=np.float32)
    return out * np.float32(np.sqrt(2.0 / len(waves)))


def _blend(a: np.ndarray, b: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Mix two RGB colours with weights p (HxW in [0, 1]) -> HxWx3 float32."""
    p = p[..., None].astype(np.float32)
    return b + (a - b) * p


@dataclass
class _Background:
    """Sky above a wavy horizon, ground below; its content moves by ``motion`` px per frame."""

    horizon: float
    amp: float
    wave_k: float
    wave_phase: float
    sky_light: np.ndarray
    sky_deep: np.ndarray
    clouds: np.ndarray
    ground_a: np.ndarray
    ground_b: np.ndarray
    grain: np.ndarray
    height: int
    motion: np.ndarray = field(default_factory=lambda: np.zeros(2))

    @classmethod
    def sample(cls, rng: np.random.Generator, height: int, width: int) -> "_Background":
        return cls(
            horizon=rng.uniform(0.3, 0.6) * height,
            amp=rng.uniform(0.02, 0.06) * height,
            wave_k=2 * np.pi / (rng.uniform(0.5, 1.5) * width),
            wave_phase=rng.uniform(0, 2 * np.pi),
            sky_light=_hsv(rng, (195, 215), (0.15, 0.35), (0.88, 1.0)),
            sky_deep=_hsv(rng, (205, 225), (0.5, 0.75), (0.6, 0.8)),
            clouds=_waves(rng, 6, _CLOUD_PERIOD),
            ground_a=_hsv(rng, (85, 130), (0.45, 0.8), (0.4, 0.6)),
            ground_b=_hsv(rng, (70, 110), (0.4, 0.8), (0.12, 0.28)),
            grain=_waves(rng, 12, _GRAIN_PERIOD),
            height=height,
        )

    def local(self, xs, ys, t: float):
        return xs - self.motion[0] * t, ys - self.motion[1] * t

    def render(self, xs, ys, t: float):
        """-> (HxWx3 float32 colour, HxW bool sky mask) at frame t."""
        u, v = self.local(xs, ys, t)
        sky = v < self.horizon + self.amp * np.sin(self.wave_k * u + self.wave_phase)
        grad = np.clip(v / self.height * 1.6, 0, 1)
        sky_rgb = _blend(self.sky_deep, self.sky_light, 1 - grad)
        cloud = np.clip(_noise(self.clouds, u, v) * 0.6, 0, 1)[..., None]
        sky_rgb = sky_rgb * (1 - 0.45 * cloud) + 255.0 * 0.45 * cloud
        ground_rgb = _blend(self.ground_a, self.ground_b, 0.5 + 0.5 * np.tanh(0.9 * _noise(self.grain, u, v)))
        return np.where(sky[..., None], sky_rgb, ground_rgb), sky


@dataclass
class _Object:
    """A textured thing: ``category_id``, shape of size ``r`` at angle ``theta``, moving with
    velocity ``velocity`` (px/frame) and growing by ``growth`` (relative, per frame)."""

    category_id: int
    r: float
    theta: float
    center: np.ndarray
    color_a: np.ndarray
    color_b: np.ndarray
    period: float
    tex_angle: float
    phase: np.ndarray
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    growth: float = 0.0

    @property
    def shape(self) -> str:
        return _THING_STYLE[self.category_id][0]

    @property
    def bound(self) -> float:
        return self.r * _BOUND[self.shape]

    @classmethod
    def sample(cls, rng: np.random.Generator, category_id: int, r: float, center) -> "_Object":
        hue = _THING_STYLE[category_id][2]
        ha = rng.uniform(*hue)
        return cls(
            category_id=category_id,
            r=r,
            theta=rng.uniform(0, 2 * np.pi),
            center=np.asarray(center, np.float64),
            color_a=_hsv(rng, (ha, ha), (0.65, 1.0), (0.8, 1.0)),
            color_b=_hsv(rng, (ha - 12, ha + 12), (0.4, 0.9), (0.12, 0.35)),
            period=rng.uniform(*_OBJECT_PERIOD),
            tex_angle=rng.uniform(0, np.pi),
            phase=rng.uniform(0, 2 * np.pi, size=2),
        )

    def center_at(self, t: float) -> np.ndarray:
        return self.center + self.velocity * t

    def scale_at(self, t: float) -> float:
        return (1.0 + self.growth) ** t

    def local(self, xs, ys, t: float):
        c, s = self.center_at(t), self.scale_at(t)
        dx, dy = (xs - c[0]) / s, (ys - c[1]) / s
        ct, st = np.cos(self.theta), np.sin(self.theta)
        return ct * dx + st * dy, -st * dx + ct * dy

    def _inside(self, u, v) -> np.ndarray:
        r, shape = self.r, self.shape
        if shape == "disk":
            return u * u + v * v <= r * r
        if shape == "square":
            h = _SQUARE_HALF * r
            return (np.abs(u) <= h) & (np.abs(v) <= h)
        if shape == "triangle":
            inr = _TRI_CIRCUM * r / 2  # inradius of an equilateral triangle is half its circumradius
            out = np.ones(u.shape, bool)
            for a in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
                out &= u * np.cos(a) + v * np.sin(a) <= inr
            return out
        # star: radius linear in angle between 5 tips and 5 notches
        rho = np.hypot(u, v)
        x = (np.arctan2(v, u) * 5 / (2 * np.pi)) % 1.0
        w = np.abs(2 * x - 1)  # 1 at a tip, 0 at a notch
        outer = _STAR_OUTER * r
        return rho <= outer * (_STAR_INNER + (1 - _STAR_INNER) * w)

    def _pattern(self, u, v) -> np.ndarray:
        k, (p1, p2) = 2 * np.pi / self.period, self.phase
        family = _THING_STYLE[self.category_id][1]
        if family == "stripes":
            # wavy, not straight: straight stripes would hide motion along them (aperture problem)
            d = np.cos(self.tex_angle) * u + np.sin(self.tex_angle) * v
            e = -np.sin(self.tex_angle) * u + np.cos(self.tex_angle) * v
            return 0.5 + 0.5 * np.sin(k * d + 2.0 * np.sin(k * e / 2.5 + p2) + p1)
        if family == "checker":  # smoothed squares, kept band-limited
            return 0.5 + 0.5 * np.tanh(2.5 * np.sin(k * u + p1) * np.sin(k * v + p2))
        if family == "dots":
            # bright round spots where both cosines peak, on a dark field (soft edge, band-limited)
            return 0.5 + 0.5 * np.tanh(2.0 * (np.cos(k * u + p1) + np.cos(k * v + p2) - 0.6))
        return 0.5 + 0.5 * np.cos(k * np.hypot(u, v) + p1)  # rings

    def render(self, xs, ys, t: float):
        """-> (HxWx3 float32 colour, HxW bool full (unoccluded) mask) at frame t."""
        u, v = self.local(xs, ys, t)
        inside = self._inside(u, v)
        return _blend(self.color_a, self.color_b, self._pattern(u, v)), inside

    def flow(self, xs, ys, t: float):
        """Forward displacement (dx, dy) from frame t to t+1 of the point at (xs, ys)."""
        c0, c1 = self.center_at(t), self.center_at(t + 1)
        ratio = self.scale_at(t + 1) / self.scale_at(t)
        return c1[0] + ratio * (xs - c0[0]) - xs, c1[1] + ratio * (ys - c0[1]) - ys


def _grid(height: int, width: int):
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return xs, ys


def _compose(background: _Background, objects: list[_Object], xs, ys, t: float):
    """Paint back to front. Returns (uint8 image, owner map: -1 background else object index,
    sky mask, list of each object's full mask)."""
    rgb, sky = background.render(xs, ys, t)
    owner = np.full(xs.shape, -1, np.int16)
    full = []
    for k, obj in enumerate(objects):
        colour, inside = obj.render(xs, ys, t)
        rgb = np.where(inside[..., None], colour, rgb)
        owner[inside] = k
        full.append(inside)
    image = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return image, owner, sky, full


def _occupancy(objects: list[_Object], xs, ys, t: float):
    """Shapes only (no colours), for placement checks: (owner map, list of full masks)."""
    owner = np.full(xs.shape, -1, np.int16)
    full = []
    for k, obj in enumerate(objects):
        inside = obj._inside(*obj.local(xs, ys, t))
        owner[inside] = k
        full.append(inside)
    return owner, full


def _visible_ok(owner: np.ndarray, full: list[np.ndarray], min_visible: float, min_pixels: int) -> bool:
    """Every object keeps at least ``min_visible`` of its own area and ``min_pixels`` pixels."""
    for k, f in enumerate(full):
        area = np.count_nonzero(f)
        vis = np.count_nonzero(owner == k)
        if area == 0 or vis < min_visible * area or vis < min_pixels:
            return False
    return True


def _sample_objects(rng, height, width, count, area_range, xs, ys):
    """Rejection-sample ``count`` objects (fewer if a placement keeps failing)."""
    objects: list[_Object] = []
    min_pixels = int(0.018 * height * width)
    for _ in range(count):
        for _attempt in range(60):
            cat = int(rng.choice(THING_IDS))
            frac = np.exp(rng.uniform(np.log(area_range[0]), np.log(area_range[1])))
            r = np.sqrt(frac * height * width / np.pi)
            r = min(r, (min(height, width) / 2 - 2) / _BOUND[_THING_STYLE[cat][0]])
            b = r * _BOUND[_THING_STYLE[cat][0]]
            center = (rng.uniform(b, width - b), rng.uniform(b, height - b))
            cand = objects + [_Object.sample(rng, cat, r, center)]
            owner, full = _occupancy(cand, xs, ys, 0)
            if _visible_ok(owner, full, 0.6, min_pixels):
                objects = cand
                break
    return objects


def _panoptic(owner: np.ndarray, sky: np.ndarray, objects: list[_Object]):
    """Segment id map and COCO ``segments_info`` (things first, then sky and ground)."""
    ids = np.zeros(owner.shape, np.int32)
    infos = []
    segs = [(k, obj.category_id, owner == k) for k, obj in enumerate(objects)]
    bg = owner < 0
    segs += [(None, SKY, bg & sky), (None, GROUND, bg & ~sky)]
    for k, cat, m in segs:
        if not m.any():
            continue
        seg_id = cat * 1000 + (k + 1 if k is not None else 0)
        ids[m] = seg_id
        infos.append(
            {"id": seg_id, "category_id": cat, "area": int(m.sum()), "bbox": mask_to_bbox(m), "iscrowd": 0}
        )
    return ids, infos


def generate_image(rng: np.random.Generator, height: int = 256, width: int = 320, max_objects: int = 3) -> dict:
    """Render one image with 1..``max_objects`` things over sky and ground.

    Returns dict:
      image: HxWx3 uint8 RGB;
      instances: list of (mask HxW bool, category_id), back to front; masks are the visible parts,
        each at least 60% of its object and >= 1.8% of the image (objects are 3-25% of the image);
      semantic: HxW uint8, contiguous index 0..5 (category ids 1..6 in order);
      panoptic: {"ids": HxW int32 segment ids (0 = void, unused here), "segments_info": [...]}.
    """
    xs, ys = _grid(height, width)
    background = _Background.sample(rng, height, width)
    count = int(rng.integers(1, max_objects + 1))
    objects = _sample_objects(rng, height, width, count, (0.03, 0.25), xs, ys)
    image, owner, sky, _ = _compose(background, objects, xs, ys, 0)
    semantic = np.where(sky, semantic_index(SKY), semantic_index(GROUND)).astype(np.uint8)
    instances = []
    for k, obj in enumerate(objects):
        m = owner == k
        semantic[m] = semantic_index(obj.category_id)
        instances.append((m, obj.category_id))
    ids, infos = _panoptic(owner, sky, objects)
    return {"image": image, "instances": instances, "semantic": semantic,
            "panoptic": {"ids": ids, "segments_info": infos}}


def _distinct(v: np.ndarray, others: list[np.ndarray], gap: float) -> bool:
    return all(np.linalg.norm(v - o) >= gap for o in others)


def generate_video(rng: np.random.Generator, num_frames: int = 12, height: int = 256, width: int = 320,
                   num_objects: int | None = None) -> dict:
    """Render a short video of 1..2 things moving over a slowly panning background.

    Each object translates at its own constant velocity, 1.5-4 px/frame (below half the shortest
    texture period, so periodic textures stay unambiguous for optical flow) and at least
    1.5 px/frame apart from the others and from the background, and scales by up to +-1% per
    frame; the background content drifts by at most 1 px/frame (a small camera pan). No object
    is ever less than half visible. Note: the flow is exact for the surface seen at each pixel
    of frame t, whether or not that surface is occluded in frame t+1 (as in Sintel/MPI flow).

    Returns dict:
      frames: list of T HxWx3 uint8;
      instance_masks: list of T HxW uint8 (0 background, 1..n objects, back to front);
      flows: list of T-1 HxWx2 float32 forward flow (dx, dy) from frame t to t+1, exact for the
        surface visible at each pixel of frame t;
      category_ids: list of n thing category ids; velocities: n x 2; background_motion: (2,).
    """
    if num_frames < 2:
        raise UserError(f"a video needs at least 2 frames, got {num_frames}")
    if num_objects is None:
        num_objects = int(rng.integers(1, 3))
    xs, ys = _grid(height, width)
    background = _Background.sample(rng, height, width)
    speed, angle = rng.uniform(0, 1.0), rng.uniform(0, 2 * np.pi)
    pan = speed * np.array([np.cos(angle), np.sin(angle)])
    background.motion = pan
    span = num_frames - 1
    for _attempt in range(200):
        objects: list[_Object] = []
        for _ in range(num_objects):
            for _try in range(100):
                cat = int(rng.choice(THING_IDS))
                frac = np.exp(rng.uniform(np.log(0.03), np.log(0.12)))
                r = np.sqrt(frac * height * width / np.pi)
                growth = rng.uniform(-0.01, 0.01)
                b = r * _BOUND[_THING_STYLE[cat][0]] * max(1.0, (1 + growth) ** span) + 1
                if 2 * b >= min(height, width):
                    continue
                start = np.array([rng.uniform(b, width - b), rng.uniform(b, height - b)])
                end = np.array([rng.uniform(b, width - b), rng.uniform(b, height - b)])
                vel = (end - start) / span
                if not (1.5 <= np.linalg.norm(vel) <= 4.0):
                    continue
                if not _distinct(vel, [o.velocity for o in objects] + [pan], 1.5):
                    continue
                obj = _Object.sample(rng, cat, r, start)
                obj.velocity, obj.growth = vel, growth
                objects.append(obj)
                break
        if len(objects) < num_objects:
            continue
        if all(_visible_ok(*_occupancy(objects, xs, ys, t), 0.5, 1) for t in range(num_frames)):
            break
    else:  # pragma: no cover - the sampler succeeds for any sane size
        raise UserError(f"could not place {num_objects} moving objects in a {width}x{height} video")

    frames, masks, flows = [], [], []
    for t in range(num_frames):
        image, owner, _sky, _full = _compose(background, objects, xs, ys, t)
        frames.append(image)
        masks.append((owner + 1).astype(np.uint8))
        if t == num_frames - 1:
            break
        fx = np.full(xs.shape, pan[0], np.float32)
        fy = np.full(xs.shape, pan[1], np.float32)
        for k, obj in enumerate(objects):
            m = owner == k
            ox, oy = obj.flow(xs[m], ys[m], t)
            fx[m], fy[m] = ox, oy
        flows.append(np.stack([fx, fy], axis=-1))
    return {
        "frames": frames,
        "instance_masks": masks,
        "flows": flows,
        "category_ids": [o.category_id for o in objects],
        "velocities": np.array([o.velocity for o in objects]),
        "background_motion": pan,
    }


# ----------------------------------------------------------------------------- dataset writer


def _item_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _write_jpeg(path: Path, image: np.ndarray, quality: int = 95) -> None:
    with atomic_write(path, "wb") as fh:
        Image.fromarray(image).save(fh, format="JPEG", quality=quality)


def _write_npy(path: Path, array: np.ndarray) -> None:
    buf = _io.BytesIO()
    np.save(buf, array)
    with atomic_write(path, "wb") as fh:
        fh.write(buf.getvalue())


def _write_split(root: Path, split: str, count: int, seed: int, stream: int, height: int, width: int,
                 max_objects: int, bar) -> dict:
    images, instances, panoptic = [], [], []
    ann_id = 1
    for i in range(count):
        sample = generate_image(_item_rng(seed, stream, i), height, width, max_objects)
        name = f"{i:06d}.png"
        image_id = i + 1  # COCO ids start at 1 (pycocotools treats id 0 as "unmatched")
        atomic_write_png(root / "images" / split / name, sample["image"])
        atomic_write_png(root / "semantic" / split / name, sample["semantic"])
        atomic_write_png(root / "panoptic" / split / name, id_to_rgb(sample["panoptic"]["ids"]))
        images.append({"id": image_id, "file_name": name, "width": width, "height": height})
        for mask, cat in sample["instances"]:
            instances.append({
                "id": ann_id, "image_id": image_id, "category_id": cat, "segmentation": mask_to_rle(mask),
                "area": int(mask.sum()), "bbox": mask_to_bbox(mask), "iscrowd": 0,
            })
            ann_id += 1
        panoptic.append({"image_id": image_id, "file_name": name, "segments_info": sample["panoptic"]["segments_info"]})
        bar.update(1)
    info = {"description": f"seg_suite synthetic {split} split", "seed": seed}
    things = [{k: c[k] for k in ("id", "name", "supercategory", "isthing", "color")}
              for c in SYNTHETIC_CATEGORIES if c["isthing"]]
    atomic_write_json(root / "annotations" / f"instances_{split}.json",
                      {"info": info, "images": images, "annotations": instances, "categories": things})
    atomic_write_json(root / "annotations" / f"panoptic_{split}.json",
                      {"info": info, "images": images, "annotations": panoptic,
                       "categories": [dict(c) for c in SYNTHETIC_CATEGORIES]})
    return {"images": count, "instances": len(instances)}


def _write_video(root: Path, name: str, video: dict) -> None:
    base = root / "videos"
    for t, (frame, inst) in enumerate(zip(video["frames"], video["instance_masks"])):
        stem = f"{t:05d}"
        _write_jpeg(base / "JPEGImages" / name / f"{stem}.jpg", frame)
        atomic_write_png(base / "Annotations" / name / f"{stem}.png", np.where(inst > 0, 255, 0).astype(np.uint8))
        atomic_write_png(base / "InstanceAnnotations" / name / f"{stem}.png", inst)
        if t < len(video["flows"]):
            _write_npy(base / "Flow" / name / f"{stem}.npy", video["flows"][t])


def make_synthetic_dataset(root: str | os.PathLike, num_train: int = 24, num_val: int = 8, height: int = 256,
                           width: int = 320, seed: int = 0, num_videos: int = 4, video_frames: int = 12,
                           max_objects: int = 3, progress: bool = True) -> dict:
    """Write the synthetic dataset under ``root`` (layout in datasets/README.md, "Synthetic set").

    Every file is written atomically; rerunning overwrites with identical content. Returns the
    dict also saved as ``root/info.json``.
    """
    from seg_suite import __version__

    for label, value, low in (("num_train", num_train, 0), ("num_val", num_val, 0), ("num_videos", num_videos, 0),
                              ("height", height, 64), ("width", width, 64), ("max_objects", max_objects, 1)):
        if int(value) < low:
            raise UserError(f"{label} must be >= {low}, got {value}")
    if num_videos and video_frames < 2:
        raise UserError(f"video_frames must be >= 2, got {video_frames}")
    root = Path(root)
    total = num_train + num_val + num_videos
    counts = {}
    with tqdm(total=total, desc="synthetic", unit="item", disable=not progress) as bar:
        for stream, (split, count) in enumerate((("train", num_train), ("val", num_val))):
            counts[split] = _write_split(root, split, count, seed, stream, height, width, max_objects, bar)
        sequences = []
        for i in range(num_videos):
            name = f"synth_{i:03d}"
            video = generate_video(_item_rng(seed, 2, i), video_frames, height, width)
            _write_video(root, name, video)
            sequences.append({"name": name, "frames": video_frames, "objects": len(video["category_ids"])})
            bar.update(1)
    info = {
        "generator": "seg_suite.data.synthetic.make_synthetic_dataset",
        "seg_suite_version": __version__,
        "seed": seed, "height": height, "width": width, "max_objects": max_objects,
        "num_train": num_train, "num_val": num_val, "num_videos": num_videos, "video_frames": video_frames,
        "counts": counts, "videos": sequences,
        "categories": SYNTHETIC_CATEGORIES,
    }
    atomic_write_json(root / "info.json", info, indent=2)
    return info
