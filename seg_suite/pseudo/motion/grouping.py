"""Weight-free motion grouping: a mixture of K parametric motions fitted to optical flow by EM.

This is the layered-motion model of Wang & Adelson (1994) fitted as a mixture of parametric
motions by EM (Ayer & Sawhney 1995; Weiss 1997), with the spatial prior of the mixing weights
taken as the Gaussian-blurred responsibilities of the previous iteration (a mean-field
smoothness prior). Per frame:

1. The motion field is the forward flow ``t -> t+1`` and, when present, the backward flow
   ``t -> t-1`` (stacked as a 4-vector per pixel: both must be explained by the same segment),
   area-downsampled to a working grid ``work_width`` cells wide.
2. Model 0 starts as a robust (Cauchy-weighted IRLS) global fit, which locks onto the dominant
   camera motion; the other K-1 models start from k-means on the residual outliers.
3. EM: Laplace likelihood of each pixel's residual under each model (L1 like RCF's loss), plus
   two appearance terms that undo the flow's bleeding into the surroundings: brightness
   constancy of frame t against frames t+-1 warped by each segment's *parametric* motion
   (:class:`PhotometricCost`), and a colour histogram per segment learnt from textured pixels
   (GrabCut-style). Mixing weights = blurred responsibilities; IRLS weighted least squares per
   model. Affine motion (3 parameters per flow component) by default, ``quadratic`` (6 per
   component, a superset of the 8-parameter planar motion) as an option.
4. Background = the segment holding most of the image border (``border``, default) or the
   largest one (``largest``). Segments whose motion differs from the background's by less than
   ``min_motion`` pixels on average are merged into it, so a static video or a pure camera pan
   gives an empty foreground.
5. Temporal fusion: the previous frame's foreground probability is warped into this frame along
   the backward flow and averaged in with weight ``temporal_alpha``.
6. The probability is upsampled to full resolution and thresholded; the foreground is split into
   connected components, dropping those under ``min_area`` of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from seg_suite.params import Params, at_least, between, one_of, param


MEASURED = "measured on seg_suite's synthetic videos"  # the figures are in GroupingParams' docstring


@dataclass(frozen=True)
class GroupingParams(Params):
    """Defaults measured on the synthetic moving-object videos (make_synthetic_dataset seed 0, DIS
    fast, forward+backward flow): mean J 0.791 with these values, 0.748 with num_models=3 (the third
    model tends to capture the halo of flow that DIS bleeds around objects), 0.673 with
    num_models=3 and photometric/appearance weights 1. Use ``num_models`` 3-4 for scenes with several
    independently moving objects."""

    num_models: int = param(2, "K, parametric motions per frame incl. the background", MEASURED, at_least(2),
                            metavar="K")
    model: str = param("affine", "parametric motion per segment", MEASURED, one_of("affine", "quadratic"))
    iterations: int = param(6, "EM iterations per frame", MEASURED, at_least(1))
    work_width: int = param(128, "width of the working grid the mixture is fitted on", MEASURED, at_least(1))
    smooth_sigma: float = param(1.5, "Gaussian sigma of the spatial smoothness prior, in working-grid cells", MEASURED,
                                at_least(0))
    background: str = param("border", "which segment is the camera motion: the one holding most of the image "
                                      "border, or the largest", MEASURED, one_of("border", "largest"))
    min_motion: float = param(0.5, "segments moving less than this (pixels/frame) relative to the background are "
                                   "background", MEASURED, at_least(0), metavar="PX")
    fg_threshold: float = param(0.5, "foreground probability above which a pixel is foreground", MEASURED,
                                between(0, 1))
    min_area: float = param(0.002, "drop foreground components smaller than this fraction of the frame", MEASURED,
                            between(0, 1, open_high=True), metavar="FRAC")
    temporal_alpha: float = param(0.3, "weight of the previous frame's mask warped along the flow (0 = off)",
                                  MEASURED, between(0, 1, open_high=True), metavar="A")
    appearance_weight: float = param(3.0, "weight of the per-segment colour likelihood (0 = motion only)", MEASURED,
                                     at_least(0))
    photometric_weight: float = param(3.0, "weight of the brightness-constancy likelihood (0 = flow only)",
                                      MEASURED, at_least(0))
    photo_width: int = param(320, "grid on which frames are warped by each segment's motion", MEASURED,
                             at_least(1))
    colour_bins: int = param(8, "colour histogram bins per RGB channel", MEASURED, at_least(1))
    colour_confidence: bool = param(True, "weight colour histograms by texture confidence", MEASURED)
    seed: int = param(0, "seed of the EM initialisation")


@dataclass
class FrameSegmentation:
    """``mask``: HxW bool foreground; ``instances``: list of (HxW bool, score) components;
    ``prob``: h x w foreground probability on the working grid; ``labels``: h x w segment ids
    (0 = background after merging)."""

    mask: np.ndarray
    instances: list[tuple[np.ndarray, float]]
    prob: np.ndarray
    labels: np.ndarray
    info: dict = field(default_factory=dict)


def design_matrix(h: int, w: int, model: str = "affine") -> np.ndarray:
    """(h*w, P) basis over normalised coordinates in [-1, 1]: [1, x, y] (+ x^2, xy, y^2)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    x = (xs.ravel() + 0.5) / w * 2 - 1
    y = (ys.ravel() + 0.5) / h * 2 - 1
    cols = [np.ones_like(x), x, y]
    if model == "quadratic":
        cols += [x * x, x * y, y * y]
    return np.stack(cols, axis=1)


def _wls(A: np.ndarray, Y: np.ndarray, w: np.ndarray, ridge: float = 1e-4) -> np.ndarray:
    """Weighted least squares: argmin_T sum_i w_i ||Y_i - A_i T||^2 -> (P, D)."""
    Aw = A * w[:, None]
    G = A.T @ Aw + ridge * np.eye(A.shape[1], dtype=A.dtype)
    return np.linalg.solve(G, Aw.T @ Y)


def _robust_global(A: np.ndarray, Y: np.ndarray, iters: int = 4) -> np.ndarray:
    w = np.ones(len(A), np.float32)
    theta = _wls(A, Y, w)
    for _ in range(iters):
        r = np.linalg.norm(Y - A @ theta, axis=1)
        c = 2.385 * max(np.median(r), 0.1)  # Cauchy scale from the median residual (MAD-style)
        w = 1.0 / (1.0 + (r / c) ** 2)
        theta = _wls(A, Y, w)
    return theta


def _init_models(A, Y, h, w, K, rng) -> list[np.ndarray]:
    import cv2

    theta0 = _robust_global(A, Y)
    resid = Y - A @ theta0
    r = np.linalg.norm(resid, axis=1)
    thetas = [theta0]
    out_idx = np.flatnonzero(r > max(0.5, 3.0 * np.median(r)))
    if len(out_idx) >= K * 4:
        # k-means on (residual motion, position) of the outliers: objects are compact and coherent.
        feats = np.concatenate([resid[out_idx], A[out_idx, 1:3] * 4.0], axis=1).astype(np.float32)
        crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.01)
        cv2.setRNGSeed(int(rng.integers(1 << 30)))
        _, lab, _ = cv2.kmeans(feats, K - 1, None, crit, 2, cv2.KMEANS_PP_CENTERS)
        for k in range(K - 1):
            idx = out_idx[lab.ravel() == k]
            if len(idx) >= A.shape[1]:
                thetas.append(_wls(A[idx], Y[idx], np.ones(len(idx), np.float32)))
            else:
                thetas.append(theta0 + rng.normal(0, 0.5, theta0.shape).astype(np.float32))
    else:
        for _ in range(K - 1):  # nothing moves differently: perturbed copies, merged later
            thetas.append(theta0 + rng.normal(0, 0.5, theta0.shape).astype(np.float32))
    return thetas


def _blur(maps: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0:
        return maps
    return np.stack([cv2.GaussianBlur(m, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for m in maps])


def _texture_confidence(image: np.ndarray) -> np.ndarray:
    """Per-pixel weight in [0, 1): high where the image has texture, i.e. where flow is trustworthy."""
    import cv2

    g = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3)
    mag = cv2.GaussianBlur(np.sqrt(gx * gx + gy * gy), (0, 0), 1.0)
    ref = max(float(np.median(mag)), 1.0)
    return (mag / (mag + ref)).ravel()


def _colour_loglik(bins: np.ndarray, resp: np.ndarray, nbins: int, conf: np.ndarray | None = None) -> np.ndarray:
    """log p(colour | segment) from histograms weighted by responsibility (and texture confidence:
    textureless pixels, whose flow is borrowed from their neighbours, do not teach a segment its
    colours) -> (K, N); add-one smoothing."""
    K = resp.shape[0]
    wts = resp if conf is None else resp * conf[None]
    hist = np.stack([np.bincount(bins, weights=wts[k], minlength=nbins) for k in range(K)])
    hist = (hist + 1.0) / (hist.sum(axis=1, keepdims=True) + nbins)
    return np.log(hist[:, bins])


class PhotometricCost:
    """Brightness-constancy error of every pixel of frame t under each segment's parametric motion.

    The flow field (DIS) is smooth across object boundaries and bleeds into the surroundings, but
    the parametric motions themselves are sharp: warping frame t+1 (and t-1) by a segment's motion
    and comparing with frame t tells, per pixel, which motion really carries its texture. The
    smaller of the forward and backward errors is used, so a pixel occluded on one side is judged
    on the other (the classic layered-motion occlusion rule). Frames are compared in grey levels
    after a small blur (sigma 1 on the comparison grid) so sub-pixel model error costs little.
    """

    def __init__(self, image, next_image, prev_image, work_hw: tuple[int, int], photo_width: int,
                 model: str = "affine", cache: list | None = None):
        import cv2

        H, W = image.shape[:2]
        pw = min(photo_width, W)
        ph = max(2, int(round(H * pw / W)))
        self.work_hw, self.photo_hw = work_hw, (ph, pw)
        self.scale = np.array([pw / W, ph / H], np.float32)
        # Normalised coordinates make a model's parameters resolution-independent: its flow on this
        # grid is basis @ theta directly (no resizing of the working-grid predictions).
        # (BLAS is avoided here: a (N, 3) @ (3, 4) product is slower than 3 axpys under load.)
        self.basis = [np.ascontiguousarray(c.reshape(ph, pw)) for c in design_matrix(ph, pw, model).T]

        def prep(im):
            # Each frame serves as next, current and previous frame in turn: ``cache`` (owned by
            # the caller, newest last) keeps the last few prepared frames, matched by identity.
            for src, ready in cache or ():
                if src is im and ready.shape == (ph, pw):
                    return ready
            g = cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) if im.ndim == 3 else im
            g = cv2.resize(g, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32)
            g = cv2.GaussianBlur(g, (0, 0), 1.0)
            if cache is not None:
                cache.append((im, g))
                del cache[:-4]
            return g

        self.cur = prep(image)
        self.others = [None if o is None else prep(o) for o in (next_image, prev_image)]
        ys, xs = np.mgrid[0:ph, 0:pw].astype(np.float32)
        self.xs, self.ys = xs, ys

    def __call__(self, thetas: list[np.ndarray]) -> np.ndarray:
        """thetas: K parameter matrices (P, D), D = 2 per available field, forward first -> K x (h*w)."""
        import cv2

        (h, w), (ph, pw) = self.work_hw, self.photo_hw
        K = len(thetas)
        out = np.empty((K, h * w), np.float32)
        for k in range(K):
            theta = thetas[k].astype(np.float32) * np.tile(self.scale, thetas[k].shape[1] // 2)
            errs, f = [], 0
            for other in self.others:
                if other is None:
                    continue
                fx = self.xs + sum(b * theta[p, 2 * f] for p, b in enumerate(self.basis))
                fy = self.ys + sum(b * theta[p, 2 * f + 1] for p, b in enumerate(self.basis))
                warped = cv2.remap(other, fx, fy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                errs.append(cv2.absdiff(warped, self.cur))
                f += 1
            err = cv2.min(errs[0], errs[1]) if len(errs) == 2 else errs[0]
            out[k] = cv2.resize(err, (w, h), interpolation=cv2.INTER_AREA).ravel()
        return out


def fit_motion_mixture(motion: np.ndarray, params: GroupingParams, rng: np.random.Generator,
                       image: np.ndarray | None = None, photo: PhotometricCost | None = None):
    """EM on an h x w x D motion field -> (responsibilities K x h x w, per-model predictions K x h x w x D).

    ``image`` (h x w x 3 uint8, same grid) adds a colour histogram per segment to the likelihood,
    as GrabCut-style appearance models: flow bleeds into textureless surroundings (DIS smooths
    across them), colour pulls those pixels back to the segment they look like.
    """
    h, w, D = motion.shape
    K = params.num_models
    A = design_matrix(h, w, params.model)
    Y = motion.reshape(-1, D).astype(np.float32)
    thetas = _init_models(A, Y, h, w, K, rng)
    prior = np.full((K, h * w), 1.0 / K, np.float32)
    bins = conf = None
    if image is not None and params.appearance_weight > 0:
        q = (image.reshape(-1, 3).astype(np.int64) * params.colour_bins) // 256
        bins = (q[:, 0] * params.colour_bins + q[:, 1]) * params.colour_bins + q[:, 2]
        conf = _texture_confidence(image)
    resp = None
    for _ in range(params.iterations):
        preds = np.stack([A @ t for t in thetas])  # K, N, D
        l1 = np.abs(Y[None] - preds).sum(axis=2)  # K, N
        scale = np.maximum(np.median(l1, axis=1, keepdims=True), 0.05)  # per-model Laplace scale
        loglik = -l1 / scale - D * np.log(scale) + np.log(prior + 1e-6)
        if bins is not None and resp is not None:
            conf_w = conf if params.colour_confidence else None
            loglik = loglik + params.appearance_weight * _colour_loglik(bins, resp, params.colour_bins ** 3, conf_w)
        if photo is not None and params.photometric_weight > 0:
            e = photo(thetas)
            pscale = max(float(np.median(e.min(axis=0))), 2.0)  # grey levels
            loglik = loglik - params.photometric_weight * e / pscale
        loglik -= loglik.max(axis=0, keepdims=True)
        resp = np.exp(loglik)
        resp /= resp.sum(axis=0, keepdims=True)
        prior = _blur(resp.reshape(K, h, w), params.smooth_sigma).reshape(K, -1)
        prior /= prior.sum(axis=0, keepdims=True)
        # L1 likelihood -> reweighted least squares (IRLS) weights resp / |residual|.
        for k in range(K):
            wk = resp[k] / np.maximum(l1[k], 0.05)
            if wk.sum() > 1e-3:
                thetas[k] = _wls(A, Y, wk.astype(np.float32))
    preds = np.stack([A @ t for t in thetas]).reshape(K, h, w, D)
    return resp.reshape(K, h, w), preds


def _border_share(labels: np.ndarray, K: int) -> np.ndarray:
    border = np.concatenate([labels[0], labels[-1], labels[1:-1, 0], labels[1:-1, -1]])
    return np.bincount(border, minlength=K).astype(np.float64)


def background_probability(resp: np.ndarray, preds: np.ndarray, params: GroupingParams):
    """Pick the background segment, merge segments moving like it -> (p_bg h x w, labels h x w)."""
    K, h, w = resp.shape
    labels = resp.argmax(axis=0)
    if params.background == "border":
        score = _border_share(labels, K) + 1e-3 * np.bincount(labels.ravel(), minlength=K)
    else:
        score = np.bincount(labels.ravel(), minlength=K).astype(np.float64)
    bg = int(score.argmax())
    is_bg = np.zeros(K, bool)
    is_bg[bg] = True
    for k in range(K):
        support = labels == k
        if k == bg or not support.any():
            is_bg[k] |= not support.any()
            continue
        # Mean difference of the two models' flows over the segment's own pixels (per flow field).
        diff = np.linalg.norm((preds[k] - preds[bg])[support].reshape(-1, preds.shape[-1] // 2, 2), axis=2)
        if diff.mean() < params.min_motion:
            is_bg[k] = True
    p_bg = resp[is_bg].sum(axis=0)
    remap = np.cumsum(~is_bg) * (~is_bg)  # background -> 0, objects -> 1..
    return p_bg, remap[labels]


def warp_backward(prev: np.ndarray, backward_flow: np.ndarray) -> np.ndarray:
    """Bring a map of frame t-1 into frame t: out(x) = prev(x + b(x)), b = flow t -> t-1 (same grid)."""
    import cv2

    h, w = prev.shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(prev.astype(np.float32), xs + backward_flow[..., 0], ys + backward_flow[..., 1],
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _resize_flow(flow: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-resize an HxWx2 flow to (h, w) and rescale its vectors to the new grid's pixels."""
    import cv2

    h, w = size
    H, W = flow.shape[:2]
    small = cv2.resize(flow, (w, h), interpolation=cv2.INTER_AREA)
    return small * np.array([w / W, h / H], np.float32)


class MotionGrouper:
    """Stateful per-sequence segmenter (keeps the previous frame for temporal fusion).

    ``segment(forward, backward)`` takes full-resolution HxWx2 flows of one frame (either may be
    None, not both) and returns a :class:`FrameSegmentation`. Call :meth:`reset` between videos.
    """

    def __init__(self, params: GroupingParams | None = None):
        self.params = params or GroupingParams()
        self.reset()

    def reset(self):
        self._prev_prob = None
        self._photo_cache: list = []
        self._rng = np.random.default_rng(self.params.seed)

    def segment(self, forward: np.ndarray | None, backward: np.ndarray | None,
                image: np.ndarray | None = None, next_image: np.ndarray | None = None,
                prev_image: np.ndarray | None = None) -> FrameSegmentation:
        import cv2

        p = self.params
        ref = forward if forward is not None else backward
        if ref is None:
            raise ValueError("a frame needs a forward or a backward flow")
        H, W = ref.shape[:2]
        w = min(p.work_width, W)
        h = max(2, int(round(H * w / W)))
        # Vectors stay in full-resolution pixels: thresholds (min_motion) are in image pixels.
        fields = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in (forward, backward) if f is not None]
        motion = np.concatenate(fields, axis=2)
        small = None if image is None else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        photo = None
        if image is not None and p.photometric_weight > 0 and (next_image is not None or prev_image is not None):
            photo = PhotometricCost(image, next_image if forward is not None else None,
                                    prev_image if backward is not None else None, (h, w), p.photo_width, p.model,
                                    self._photo_cache)
        resp, preds = fit_motion_mixture(motion, p, self._rng, small, photo)
        p_bg, labels = background_probability(resp, preds, p)
        prob = 1.0 - p_bg
        if self._prev_prob is not None and backward is not None and p.temporal_alpha > 0:
            warped = warp_backward(self._prev_prob, _resize_flow(backward, (h, w)))
            prob = (1 - p.temporal_alpha) * prob + p.temporal_alpha * warped
        self._prev_prob = prob.astype(np.float32)
        full = cv2.resize(prob.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
        mask, instances = split_components(full > p.fg_threshold, full, p.min_area)
        return FrameSegmentation(mask=mask, instances=instances, prob=prob, labels=labels,
                                 info={"num_segments": int(labels.max())})


def split_components(mask: np.ndarray, score_map: np.ndarray, min_area: float):
    """8-connected components of ``mask`` (HxW bool) -> (cleaned mask, [(component, mean score)]).

    Components smaller than ``min_area`` (fraction of the image) are dropped from both.
    """
    import cv2

    mask = mask.copy()
    instances = []
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask, instances
    cols = np.flatnonzero(mask.any(axis=0))
    # Label only the foreground's bounding box: the frame is mostly background.
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    n, comp, stats, _ = cv2.connectedComponentsWithStats(mask[box].astype(np.uint8), connectivity=8)
    min_px = min_area * mask.size
    for i in range(1, n):
        inst_box = comp == i
        if stats[i, cv2.CC_STAT_AREA] < min_px:
            mask[box][inst_box] = False
            continue
        inst = np.zeros_like(mask)
        inst[box] = inst_box
        instances.append((inst, float(score_map[box][inst_box].mean())))
    return mask, instances
