"""Video input, flow backends, the flow cache and the streaming window."""

import numpy as np
import pytest
from PIL import Image

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.pseudo.motion.flow import DISFlow, FarnebackFlow, RAFTFlow, build_flow
from seg_suite.pseudo.motion.flow_cache import FlowCache, read_flo, stream_motion, write_flo
from seg_suite.pseudo.motion.video import Sequence, VideoReadError, discover_sequences


def textured(h=96, w=128, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur((rng.random((h, w)) * 255).astype(np.float32), (0, 0), 2.0)
    g = (g - g.min()) / (g.max() - g.min()) * 255
    return np.repeat(g[..., None], 3, axis=2).astype(np.uint8)


def shifted_pair(dx=3, dy=2):
    big = textured(136, 168)
    a = big[20:116, 20:148]
    b = big[20 - dy : 116 - dy, 20 - dx : 148 - dx]  # content moves by (+dx, +dy)
    return a, b


@pytest.mark.parametrize("backend", [DISFlow("fast"), DISFlow("medium"), FarnebackFlow()])
def test_classic_flow_recovers_a_translation(backend):
    a, b = shifted_pair(3, 2)
    flow = backend(a, b)
    assert flow.shape == (96, 128, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16].reshape(-1, 2)
    # measured median error: DIS fast/medium < 0.05 px, Farneback < 0.1 px on this pattern
    assert np.allclose(np.median(inner, axis=0), [3, 2], atol=0.25)


def test_raft_random_init_and_missing_weights(tmp_path):
    raft = RAFTFlow("raft_small", random_init=True, num_flow_updates=2)
    a, b = shifted_pair()
    flow = raft(a[:60, :90], b[:60, :90])  # not a multiple of 8: padded then cropped back
    assert flow.shape == (60, 90, 2) and np.isfinite(flow).all()
    with pytest.raises(MissingWeightsError, match="raft_small"):
        RAFTFlow("raft_small", weights=tmp_path / "nope.pth")
    with pytest.raises(MissingWeightsError, match="--flow-weights"):
        build_flow("raft_small")
    # A local state dict (weights_only load) round-trips into the same predictions.
    import torch

    torch.save(raft.model.state_dict(), tmp_path / "r.pth")
    again = RAFTFlow("raft_small", weights=tmp_path / "r.pth", num_flow_updates=2)
    assert np.allclose(again(a[:64, :64], b[:64, :64]), raft(a[:64, :64], b[:64, :64]), atol=1e-5)
    with pytest.raises(UserError, match="preset"):
        build_flow("dis", preset="slowest")


def test_flo_and_npz_cache_roundtrip_and_resume(tmp_path):
    flow = np.random.default_rng(0).normal(size=(7, 9, 2)).astype(np.float32)
    write_flo(tmp_path / "a.flo", flow)
    assert np.array_equal(read_flo(tmp_path / "a.flo"), flow)
    for fmt in ("npz", "flo"):
        cache = FlowCache(tmp_path / fmt, fmt)
        calls = []
        compute = lambda: calls.append(1) or flow  # noqa: E731
        assert np.array_equal(cache.get_or_compute("s", "00000", "00001", compute), flow)
        assert np.array_equal(cache.get_or_compute("s", "00000", "00001", compute), flow)
        assert len(calls) == 1 and cache.hits == 1
        # A torn cache file is recomputed, not trusted.
        cache.path("s", "00000", "00001").write_bytes(b"garbage")
        assert np.array_equal(cache.get_or_compute("s", "00000", "00001", compute), flow)
        assert len(calls) == 2


def test_stream_motion_window_matches_direct_flows():
    frames = [(f"{i:05d}", textured(seed=i)) for i in range(6)]
    calls = []

    def fake_flow(a, b):  # encodes which frames were paired: (mean of a, mean of b)
        calls.append(1)
        out = np.zeros(a.shape[:2] + (2,), np.float32)
        out[..., 0], out[..., 1] = a.mean(), b.mean()
        return out

    means = [f.mean() for _, f in frames]
    got = list(stream_motion(iter(frames), fake_flow, gaps=(1, 2)))
    assert [fm.index for fm in got] == list(range(6))
    for fm in got:
        t = fm.index
        assert sorted(fm.forward) == [g for g in (1, 2) if t + g < 6]
        assert sorted(fm.backward) == [g for g in (1, 2) if t - g >= 0]
        for g, f in fm.forward.items():
            assert np.allclose(f[0, 0], [means[t], means[t + g]], atol=1e-3)
        for g, f in fm.backward.items():
            assert np.allclose(f[0, 0], [means[t], means[t - g]], atol=1e-3)
        assert set(fm.neighbours) == {o for o in (-1, 1) if 0 <= t + o < 6}
    # each ordered pair once: gap 1: 5 pairs, gap 2: 4 pairs, both directions
    assert len(calls) == 2 * (5 + 4)
    with pytest.raises(VideoReadError, match="at least 2"):
        list(stream_motion(iter(frames[:1]), fake_flow))


def test_sequences_from_folders_video_files_and_bad_frames(tmp_path):
    import av

    root = tmp_path / "JPEGImages" / "480p"
    for s in ("b", "a"):
        for i in range(3):
            (root / s).mkdir(parents=True, exist_ok=True)
            Image.fromarray(textured(32, 48, seed=i)).save(root / s / f"{i:05d}.jpg")
    seqs = discover_sequences(tmp_path)  # DAVIS layout found under the root
    assert [s.key for s in seqs] == ["a", "b"]
    names = [n for n, _ in seqs[0].frames()]
    assert names == ["00000", "00001", "00002"] and seqs[0].frame_names() == names

    # A real video file written with PyAV and read back frame by frame.
    video = tmp_path / "clip.mp4"
    with av.open(str(video), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 48, 32, "yuv420p"
        for i in range(4):
            for packet in stream.encode(av.VideoFrame.from_ndarray(textured(32, 48, seed=i), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    seq = discover_sequences(video)[0]
    frames = list(seq.frames())
    assert seq.key == "clip" and len(frames) == 4 and frames[0][1].shape == (32, 48, 3)
    # Lossy, but close to what was written.
    assert np.abs(frames[1][1].astype(int) - textured(32, 48, seed=1)).mean() < 20

    bad = tmp_path / "bad"
    bad.mkdir()
    Image.fromarray(textured(32, 48)).save(bad / "00000.png")
    Image.fromarray(textured(40, 48)).save(bad / "00001.png")
    with pytest.raises(VideoReadError, match="variable-size"):
        list(Sequence("bad", str(bad)).frames())
    (bad / "00001.png").write_bytes(b"not an image")
    with pytest.raises(VideoReadError, match="unreadable frame"):
        list(Sequence("bad", str(bad)).frames())
    with pytest.raises(UserError):
        discover_sequences(tmp_path / "missing")
