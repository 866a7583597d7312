"""Mini-batch k-means for millions of feature vectors: the estimator behind clustering.

    km = MaskClusterer(n_clusters=300, random_state=0).fit(features)   # [N, D], ndarray or memmap
    labels = km.predict(features)                                      # [N] int64 in 0..K-1
    km.cluster_centers_                                                # [K, D] float32

Backends:

- ``"torch"`` (default): mini-batch k-means (Sculley, WWW 2010) with the per-centre learning
  rate 1/count and the early stop on the smoothed batch inertia of scikit-learn's
  ``MiniBatchKMeans`` (``sklearn/cluster/_kmeans.py``: ``max_no_improvement=10``), initialised by
  greedy k-means++ (Arthur & Vassilvitskii 2007; ``2 + ln K`` local trials, as scikit-learn) on a
  random subsample of ``init_size`` rows. It reads the data in row batches, so a memory-mapped
  ``.npy`` is never loaded whole, and runs its distances as matrix products on ``device``
  (cpu or cuda). Written here rather than calling scikit-learn because, on the shared 2-core
  machine, scikit-learn's ``kmeans_plusplus`` alone took 263 s on a 12288 x 768 sample with K=300
  (this module's: 11 s) and its ``MiniBatchKMeans`` fit of 200k x 768 rows 235 s, and it needs
  the data in RAM (this one's fit: see tools/benchmark_cluster.py).
- ``"sklearn"``: ``sklearn.cluster.MiniBatchKMeans`` itself (k-means++ init, in RAM), the
  reference implementation, for small data and cross-checks.
- ``"faiss"``: ``faiss.Kmeans`` (needs ``faiss-cpu``/``faiss-gpu``): full-batch Lloyd
  iterations in RAM over every row (faiss's default subsample of 256 rows per centre is lifted),
  seeded with the same k-means++ centres, since faiss alone starts from random rows.

All three are deterministic under ``random_state`` on a fixed machine and thread count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from seg_suite.devices import resolve_device
from seg_suite.errors import UserError
from seg_suite.params import Params, at_least, one_of, param

BACKENDS = ("torch", "sklearn", "faiss")
# U2Seg clusters CutLER masks into 300 classes for its COCO models (800 as the large setting).
DEFAULT_N_CLUSTERS = 300


@dataclass(frozen=True)
class KMeansParams(Params):
    """The :class:`MaskClusterer` settings a command sets; ``MaskClusterer(**p.to_dict())``."""

    n_clusters: int = param(DEFAULT_N_CLUSTERS, "number of clusters", "U2Seg's COCO setting; 800 is its large one",
                            at_least(1))
    backend: str = param("torch", "torch: mini-batch k-means with k-means++ init, streamed from the memory-mapped "
                                  "features; sklearn: scikit-learn's MiniBatchKMeans in RAM; faiss: faiss.Kmeans "
                                  "(random init)", check=one_of(*BACKENDS))
    random_state: int = param(0, "random_state of the clustering")
    batch_size: int = param(4096, "rows per k-means mini-batch", check=at_least(1))
    max_iter: int = param(100, "at most this many passes over the features; mini-batch k-means usually stops "
                               "earlier on scikit-learn's no-improvement rule", "scikit-learn's max_iter", at_least(1))


def _rows(x, index) -> np.ndarray:
    """Rows of an array or memmap as a writable float32 copy (sorted fancy indexing reads only those rows)."""
    return np.array(x[index], dtype=np.float32, order="C")


class MaskClusterer:
    """scikit-learn-style k-means estimator (see the module docstring).

    Args:
        n_clusters: K (default 300, U2Seg's COCO setting).
        random_state: seed of the initialisation and the batch order.
        batch_size: rows per mini-batch (4096: large batches keep the matrix products efficient).
        backend: ``"torch"``, ``"sklearn"`` or ``"faiss"``.
        max_iter: at most this many passes over the data (epochs; faiss: Lloyd iterations,
            where the default 100 is replaced by faiss's own 25).
        max_no_improvement: stop after this many batches without a better smoothed inertia
            (scikit-learn's default 10); None disables the early stop.
        init_size: rows sampled for k-means++ (default 3 * batch_size, scikit-learn's rule,
            and at least 3 * K).
        device: where the torch backend computes (``cpu`` or ``cuda``).
        progress: show a tqdm bar over the mini-batches.
    """

    def __init__(self, n_clusters: int = DEFAULT_N_CLUSTERS, random_state: int = 0, batch_size: int = 4096,
                 backend: str = "torch", max_iter: int = 100, max_no_improvement: int | None = 10,
                 init_size: int | None = None, device: str = "cpu", progress: bool = False):
        self.n_clusters = n_clusters
        self.random_state = random_state
        self.batch_size = batch_size
        self.backend = backend
        self.max_iter = max_iter
        self.max_no_improvement = max_no_improvement
        self.init_size = init_size
        self.device = device
        self.progress = progress

    def get_params(self) -> dict:
        """The settings that determine the result (recorded in outputs)."""
        return {"n_clusters": self.n_clusters, "random_state": self.random_state, "batch_size": self.batch_size,
                "backend": self.backend, "max_iter": self.max_iter, "max_no_improvement": self.max_no_improvement,
                "init_size": self.init_size}

    # --------------------------------------------------------------- fit
    def fit(self, x) -> "MaskClusterer":
        """x: [N, D] float array or memmap, N >= n_clusters. Sets ``cluster_centers_`` [K, D]."""
        if self.backend not in BACKENDS:
            raise UserError(f"unknown clustering backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if x.ndim != 2:
            raise ValueError(f"features must be [N, D], got shape {x.shape}")
        if self.n_clusters < 1 or x.shape[0] < self.n_clusters:
            raise UserError(f"cannot make {self.n_clusters} clusters from {x.shape[0]} feature vectors; "
                            f"lower the number of clusters (--k)")
        getattr(self, f"_fit_{self.backend}")(x)
        self.n_features_in_ = x.shape[1]
        return self

    def _fit_sklearn(self, x) -> None:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(self.n_clusters, batch_size=self.batch_size, random_state=self.random_state,
                             max_iter=self.max_iter, n_init=1, init_size=self.init_size,
                             max_no_improvement=self.max_no_improvement, compute_labels=False)
        km.fit(np.asarray(x, dtype=np.float32))
        self.cluster_centers_ = km.cluster_centers_.astype(np.float32)
        self.n_steps_ = int(km.n_steps_)

    def _fit_faiss(self, x) -> None:
        try:
            import faiss
        except ImportError:
            raise UserError("backend 'faiss' needs faiss: pip install faiss-cpu (or use --backend torch)") from None
        niter = 25 if self.max_iter == 100 else self.max_iter  # faiss's default iteration count
        rng = np.random.default_rng(self.random_state)
        # seeded with k-means++ here: faiss alone starts from random rows
        init = kmeans_plusplus(_rows(x, self._init_rows(x.shape[0], rng)), self.n_clusters, rng)
        km = faiss.Kmeans(x.shape[1], self.n_clusters, niter=niter, seed=self.random_state,
                          max_points_per_centroid=max(256, -(-x.shape[0] // self.n_clusters)), verbose=False)
        km.train(np.ascontiguousarray(x, dtype=np.float32), init_centroids=np.ascontiguousarray(init))
        self.cluster_centers_ = np.asarray(km.centroids, dtype=np.float32).reshape(self.n_clusters, -1)
        self.n_steps_ = niter

    def _init_rows(self, n: int, rng) -> np.ndarray:
        """Sorted indices of the k-means++ sample: ``init_size`` rows (3 x batch, >= 3 K, as scikit-learn)."""
        init_size = min(n, max(self.init_size or 3 * self.batch_size, 3 * self.n_clusters))
        return np.sort(rng.choice(n, init_size, replace=False))

    def _fit_torch(self, x) -> None:
        import torch
        from tqdm import tqdm

        rng = np.random.default_rng(self.random_state)
        n, k = x.shape[0], self.n_clusters
        dev = resolve_device(self.device)
        centers = torch.from_numpy(kmeans_plusplus(_rows(x, self._init_rows(n, rng)), k, rng)).to(dev)
        counts = torch.zeros(k, dtype=torch.float64, device=dev)
        batch = min(self.batch_size, n)
        steps_per_epoch = -(-n // batch)
        best, ewa, since_best, steps = math.inf, None, 0, 0
        alpha = min(1.0, 2.0 * batch / (n + 1))  # scikit-learn's smoothing of the batch inertia
        bar = tqdm(total=self.max_iter * steps_per_epoch, desc="k-means", unit="batch", disable=not self.progress)
        with bar:
            for _epoch in range(self.max_iter):
                order = rng.permutation(n)
                stop = False
                for start in range(0, n, batch):
                    idx = np.sort(order[start:start + batch])
                    xb = torch.from_numpy(_rows(x, idx)).to(dev)
                    dist, labels = _nearest(xb, centers)
                    inertia = float(dist.sum()) / len(idx)
                    _update(centers, counts, xb, labels)
                    steps += 1
                    bar.update(1)
                    ewa = inertia if ewa is None else ewa * (1 - alpha) + inertia * alpha
                    if ewa < best:
                        best, since_best = ewa, 0
                    else:
                        since_best += 1
                    if self.max_no_improvement is not None and since_best >= self.max_no_improvement:
                        stop = True
                        break
                _reseed_empty(centers, counts, x, rng)
                if stop:
                    break
        self.cluster_centers_ = centers.float().cpu().numpy()
        self.n_steps_ = steps

    # ----------------------------------------------------------- predict
    def predict(self, x, chunk: int = 16384) -> np.ndarray:
        """x: [N, D] -> [N] int64 nearest-centre index in 0..K-1 (read in chunks)."""
        import torch

        if not hasattr(self, "cluster_centers_"):
            raise RuntimeError("call fit (or set cluster_centers_) before predict")
        dev = resolve_device(self.device)
        centers = torch.from_numpy(np.asarray(self.cluster_centers_, np.float32)).to(dev)
        out = np.empty(x.shape[0], np.int64)
        for start in range(0, x.shape[0], chunk):
            xb = torch.from_numpy(_rows(x, slice(start, start + chunk))).to(dev)
            out[start:start + chunk] = _nearest(xb, centers)[1].cpu().numpy()
        return out

    def fit_predict(self, x) -> np.ndarray:
        return self.fit(x).predict(x)

    @classmethod
    def from_centers(cls, centers: np.ndarray, **kwargs) -> "MaskClusterer":
        """An estimator that only predicts, with given centres [K, D] (e.g. a saved centroids .npy)."""
        centers = np.asarray(centers, np.float32)
        if centers.ndim != 2:
            raise UserError(f"centroids must be a [K, D] array, got shape {centers.shape}")
        est = cls(n_clusters=centers.shape[0], **kwargs)
        est.cluster_centers_ = centers
        est.n_features_in_ = centers.shape[1]
        return est


def _nearest(xb, centers):
    """Squared distances to and index of the nearest centre: ([B], [B]) for xb [B, D], centers [K, D]."""
    import torch

    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; the argmin needs only the last two terms.
    scores = torch.addmm((centers * centers).sum(1)[None], xb, centers.T, beta=1.0, alpha=-2.0)
    best, labels = scores.min(dim=1)
    return (best + (xb * xb).sum(1)).clamp_min(0), labels


def _update(centers, counts, xb, labels) -> None:
    """Move each centre to the running mean of every row assigned to it so far (rate 1/count)."""
    import torch

    k = centers.shape[0]
    n_b = torch.bincount(labels, minlength=k).to(torch.float64)
    sums = torch.zeros_like(centers).index_add_(0, labels, xb)
    hit = n_b > 0
    new_counts = counts + n_b
    old = (counts / new_counts.clamp_min(1))[hit].to(centers.dtype)[:, None]
    centers[hit] = centers[hit] * old + sums[hit] / new_counts[hit].to(centers.dtype)[:, None]
    counts.copy_(new_counts)


def _reseed_empty(centers, counts, x, rng) -> None:
    """Centres that never received a row restart at random rows (scikit-learn reassigns too)."""
    import torch

    empty = torch.nonzero(counts == 0).flatten().cpu().numpy()
    if len(empty):
        rows = np.sort(rng.choice(x.shape[0], len(empty), replace=False))
        centers[torch.from_numpy(empty).to(centers.device)] = torch.from_numpy(_rows(x, rows)).to(centers.device)


def kmeans_plusplus(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ seeding: ``k`` rows of ``sample`` [n, D] float32 -> [k, D] centres.

    Each new centre is the best (lowest potential) of ``2 + int(ln k)`` candidates drawn with
    probability proportional to the squared distance to the nearest chosen centre. In NumPy: its
    ~15 small operations per centre ran 3x faster than the same in torch on the shared 2-core machine
    (11 s against 33 s for 12288 x 768, K=300), where every small multi-threaded op pays a wake-up.
    """
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n = sample.shape[0]
    trials = 2 + int(math.log(k))
    sq = np.einsum("ij,ij->i", sample, sample)
    centers = np.empty((k, sample.shape[1]), np.float32)
    first = int(rng.integers(n))
    centers[0] = sample[first]
    closest = np.maximum(sq - 2 * (sample @ sample[first]) + sq[first], 0).astype(np.float64)
    for c in range(1, k):
        cum = np.cumsum(closest)
        if cum[-1] <= 0:  # fewer distinct rows than centres: any row will do
            cand = rng.integers(n, size=trials)
        else:
            cand = np.searchsorted(cum, rng.random(trials) * cum[-1]).clip(max=n - 1)
        d = np.maximum(sq[None] - 2 * (sample[cand] @ sample.T) + sq[cand][:, None], 0)
        d = np.minimum(d, closest[None])
        best = int(np.argmin(d.sum(1)))
        centers[c] = sample[cand[best]]
        closest = d[best]
    return centers
