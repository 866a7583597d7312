"""seg_suite.features: fidelity to the official DINO/DINOv2 math, checkpoint keys, lazy blocks,
weights errors and the weight-free stand-in."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from seg_suite.errors import MissingWeightsError, UserError
from seg_suite.features import BACKBONES, build_extractor
from seg_suite.features.handcrafted import HandcraftedExtractor

DEPTH = 2  # tiny-depth variants keep the tests fast; every block has the full width


def _randomize(model: torch.nn.Module, seed: int = 1) -> None:
    """Random values for every parameter (LayerNorm and LayerScale too), so no term hides.

    The large pos_embed makes a wrong interpolation visible in the features."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name == "pos_embed":
                p.copy_(0.5 * r)
            elif p.ndim == 1 and name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
                p.copy_(1 + 0.2 * r)
            elif p.ndim == 1:
                p.copy_(0.1 * r)
            else:
                p.copy_(0.05 * r)


# ---------------------------------------------------------------- an independent oracle
def _layer_norm(x, w, b, eps=1e-6):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _official_pos_embed(pos, img_h, img_w, patch):
    """The official formula, written as in dino/vision_transformer.py interpolate_pos_encoding
    (``B, nc, w, h = x.shape``, so its "w" is the image height)."""
    w, h = img_h, img_w
    n = pos.shape[1] - 1
    npatch = (w // patch) * (h // patch)
    if npatch == n and w == h:
        return pos
    dim = pos.shape[-1]
    w0, h0 = w // patch + 0.1, h // patch + 0.1
    side = int(math.sqrt(n))
    grid = F.interpolate(
        pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(n), h0 / math.sqrt(n)),
        mode="bicubic",
    )
    assert (int(w0), int(h0)) == grid.shape[-2:]
    return torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def _oracle(sd, heads, patch, x, layer_scale):
    """Naive ViT forward from a raw state dict. Returns last-block q, k, v (heads concatenated)
    and final-normed tokens, all with the class token first: [B, 1+h*w, C]."""
    b, _, img_h, img_w = x.shape
    gh, gw = img_h // patch, img_w // patch
    # Patch embedding as an explicit sum over pixels of each patch (no conv).
    tiles = x[:, :, : gh * patch, : gw * patch].reshape(b, 3, gh, patch, gw, patch)
    tokens = torch.einsum("bcyixj,dcij->byxd", tiles, sd["patch_embed.proj.weight"]) + sd["patch_embed.proj.bias"]
    tokens = tokens.reshape(b, gh * gw, -1)
    t = torch.cat([sd["cls_token"].expand(b, -1, -1), tokens], 1)
    t = t + _official_pos_embed(sd["pos_embed"], img_h, img_w, patch)
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    c = t.shape[-1]
    d = c // heads
    for i in range(depth):
        p = lambda n: sd[f"blocks.{i}.{n}"]  # noqa: E731
        y = _layer_norm(t, p("norm1.weight"), p("norm1.bias"))
        qkv = y @ p("attn.qkv.weight").T + p("attn.qkv.bias")
        q, k, v = qkv[..., :c], qkv[..., c : 2 * c], qkv[..., 2 * c :]
        if i == depth - 1:
            last_qkv = (q, k, v)
        qh, kh, vh = (z.reshape(b, -1, heads, d) for z in (q, k, v))
        att = torch.softmax(torch.einsum("bnhd,bmhd->bhnm", qh, kh) / math.sqrt(d), dim=-1)
        o = torch.einsum("bhnm,bmhd->bnhd", att, vh).reshape(b, -1, c)
        o = o @ p("attn.proj.weight").T + p("attn.proj.bias")
        t = t + (o * p("ls1.gamma") if layer_scale else o)
        y = _layer_norm(t, p("norm2.weight"), p("norm2.bias"))
        m = _gelu(y @ p("mlp.fc1.weight").T + p("mlp.fc1.bias")) @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
        t = t + (m * p("ls2.gamma") if layer_scale else m)
    tok = _layer_norm(t, sd["norm.weight"], sd["norm.bias"])
    return {"q": last_qkv[0], "k": last_qkv[1], "v": last_qkv[2], "token": tok}


@pytest.mark.parametrize(
    "name,size",
    [
        ("dino_vits16", (224, 224)),  # trained grid: no interpolation
        ("dino_vits16", (480, 320)),  # non-square, larger: bicubic interpolation
        ("dino_vits8", (232, 168)),
        ("dinov2_vits14", (518, 518)),
        ("dinov2_vits14", (476, 322)),
        ("dinov2_vits14", (230, 200)),  # not a multiple of 14: remainder cropped
    ],
)
def test_facets_match_naive_oracle(name, size):
    cfg = BACKBONES[name]
    b = 2 if size[0] * size[1] < 100_000 else 1
    x = torch.randn(b, 3, *size, generator=torch.Generator().manual_seed(0))
    h, w = size[0] // cfg.patch_size, size[1] // cfg.patch_size
    ref = None
    for attention in ("sdpa", "naive"):
        ext = build_extractor(name, random_init=True, depth=DEPTH, attention=attention)
        _randomize(ext)
        with torch.no_grad():
            ours = ext(x, facets=("k", "q", "v", "token", "cls"))
            if ref is None:
                ref = _oracle(ext.state_dict(), cfg.num_heads, cfg.patch_size, x, cfg.layer_scale)
        for facet in ("k", "q", "v", "token"):
            assert ours[facet].shape == (b, h, w, cfg.embed_dim)
            expected = ref[facet][:, 1:].reshape(b, h, w, -1)
            # measured max |diff| <= 6e-6 with values of magnitude ~5 (sdpa and naive alike)
            torch.testing.assert_close(ours[facet], expected, atol=1e-4, rtol=0)
        torch.testing.assert_close(ours["cls"], ref["token"][:, 0], atol=1e-4, rtol=0)
    # The interpolated position embedding does matter here (so the check above can fail).
    assert ref["k"].abs().max() > 1.0


def _expected_keys(depth: int, dinov2: bool) -> set[str]:
    """The key set of official checkpoints, from dino/vision_transformer.py and dinov2/models + layers."""
    keys = {"cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias", "norm.weight", "norm.bias"}
    if dinov2:
        keys.add("mask_token")
    for i in range(depth):
        for mod in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{mod}.weight", f"blocks.{i}.{mod}.bias"}
        if dinov2:
            keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


@pytest.mark.parametrize("name", ["dino_vitb8", "dinov2_vitb14"])
def test_state_dict_keys_equal_official(name):
    ext = build_extractor(name, random_init=True, depth=DEPTH)
    sd = ext.state_dict()
    assert set(sd) == _expected_keys(DEPTH, name.startswith("dinov2"))
    grid = 224 // 8 if name == "dino_vitb8" else 518 // 14
    assert sd["pos_embed"].shape == (1, 1 + grid * grid, 768)
    assert sd["blocks.0.attn.qkv.weight"].shape == (3 * 768, 768)


def test_official_and_training_checkpoints_load_strictly(tmp_path):
    src = build_extractor("dino_vits16", random_init=True, depth=DEPTH)
    _randomize(src, seed=5)
    sd = src.state_dict()
    official = tmp_path / "dino_deitsmall16_pretrain.pth"
    torch.save(sd, official)
    # A DINO training checkpoint: teacher = MultiCropWrapper (backbone. + head.), student under DDP.
    full = tmp_path / "checkpoint.pth"
    head = {"head.mlp.0.weight": torch.randn(4, 384), "head.last_layer.weight_g": torch.ones(4, 1)}
    torch.save({"teacher": {**{f"backbone.{k}": v for k, v in sd.items()}, **head},
                "student": {f"module.backbone.{k}": torch.zeros_like(v) for k, v in sd.items()}, "epoch": 1}, full)
    for path in (official, full):
        ext = build_extractor("dino_vits16", weights=path, depth=DEPTH)
        assert not any(p.requires_grad for p in ext.parameters())
        for k, v in ext.state_dict().items():
            assert torch.equal(v, sd[k]), k

    # DINOv2 training checkpoints chunk blocks for FSDP: backbone.blocks.<chunk>.<i>.*
    v2 = build_extractor("dinov2_vits14", random_init=True, depth=DEPTH)
    _randomize(v2, seed=6)
    chunked = {("backbone." + k.replace(f"blocks.{k.split('.')[1]}.", f"blocks.0.{k.split('.')[1]}.", 1)
                if k.startswith("blocks.") else "backbone." + k): v for k, v in v2.state_dict().items()}
    torch.save({"teacher": chunked}, tmp_path / "v2.pth")
    loaded = build_extractor("dinov2_vits14", weights=tmp_path / "v2.pth", depth=DEPTH)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, v2.state_dict()[k]), k


def test_bad_checkpoints_name_the_problem(tmp_path):
    sd = build_extractor("dino_vits16", random_init=True, depth=DEPTH).state_dict()
    missing = dict(sd)
    del missing["norm.weight"]
    torch.save({**missing, "extra.bias": torch.zeros(2)}, tmp_path / "partial.pth")
    with pytest.raises(UserError, match=r"missing keys: norm.weight.*unexpected keys: extra.bias"):
        build_extractor("dino_vits16", weights=tmp_path / "partial.pth", depth=DEPTH)
    torch.save(sd, tmp_path / "small.pth")
    with pytest.raises(UserError, match=r"shape mismatch \(file vs model\) cls_token \(1, 1, 384\) vs \(1, 1, 768\)"):
        build_extractor("dino_vitb16", weights=tmp_path / "small.pth", depth=DEPTH)


def _isolate_weight_search(monkeypatch, tmp_path):
    monkeypatch.setenv("SEG_SUITE_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("SEG_SUITE_WEIGHTS", str(tmp_path / "weights"))


def test_missing_weights_error_names_file_url_and_handcrafted(monkeypatch, tmp_path):
    _isolate_weight_search(monkeypatch, tmp_path)
    with pytest.raises(MissingWeightsError) as err:
        build_extractor("dino_vitb8")
    msg = str(err.value)
    assert "dino_vitbase8_pretrain.pth" in msg
    assert "https://dl.fbaipublicfiles.com/dino/dino_vitbase8_pretrain/dino_vitbase8_pretrain.pth" in msg
    assert "--backbone handcrafted" in msg and "--weights PATH" in msg
    assert str(tmp_path / "weights") in msg and "\n" not in msg
    with pytest.raises(MissingWeightsError, match="dinov2_vitl14_pretrain.pth"):
        build_extractor("dinov2_vitl14")


def test_weights_found_in_cache_folder(monkeypatch, tmp_path):
    _isolate_weight_search(monkeypatch, tmp_path)
    src = build_extractor("dino_vits8", random_init=True, depth=1, seed=3)
    (tmp_path / "weights").mkdir()
    torch.save(src.state_dict(), tmp_path / "weights" / "dino_deitsmall8_pretrain.pth")
    ext = build_extractor("dino_vits8", depth=1)
    assert torch.equal(ext.pos_embed, src.pos_embed)
    assert torch.equal(ext.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)


def test_random_init_is_deterministic():
    a = build_extractor("dino_vits16", random_init=True, depth=1, seed=0)
    b = build_extractor("dino_vits16", random_init=True, depth=1, seed=0)
    c = build_extractor("dino_vits16", random_init=True, depth=1, seed=1)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.pos_embed, c.pos_embed)


def _count_calls(ext):
    counts: dict[str, int] = {}

    def hook(name):
        return lambda *_: counts.__setitem__(name, counts.get(name, 0) + 1)

    for i, blk in enumerate(ext.blocks):
        blk.register_forward_hook(hook(f"block{i}"))
        blk.attn.register_forward_hook(hook(f"attn{i}"))
        blk.attn.qkv.register_forward_hook(hook(f"qkv{i}"))
        blk.mlp.register_forward_hook(hook(f"mlp{i}"))
    ext.norm.register_forward_hook(hook("norm"))
    return counts


def test_only_needed_blocks_run():
    ext = build_extractor("dino_vits16", random_init=True, depth=4)
    counts = _count_calls(ext)
    x = torch.randn(1, 3, 64, 64)
    ext(x, facets=("k", "q", "v"))
    # Blocks 0..2 fully; of block 3 only norm1 + qkv (once for all three facets); no final norm.
    assert counts == {**{f"{m}{i}": 1 for i in range(3) for m in ("block", "attn", "qkv", "mlp")}, "qkv3": 1}
    counts.clear()
    ext(x, facets=("token",))
    assert counts == {**{f"{m}{i}": 1 for i in range(4) for m in ("block", "attn", "qkv", "mlp")}, "norm": 1}
    counts.clear()
    outs = ext.forward_layers(x, [1, 0])
    assert set(counts) == {f"{m}{i}" for i in range(2) for m in ("block", "attn", "qkv", "mlp")}
    assert [o.shape for o in outs] == [(1, 384, 4, 4)] * 2


def test_forward_layers_are_raw_block_outputs():
    ext = build_extractor("dinov2_vits14", random_init=True, depth=3)
    _randomize(ext)
    x = torch.randn(1, 3, 70, 56)
    store = []
    for blk in ext.blocks:
        blk.register_forward_hook(lambda m, i, o: store.append(o))
    with torch.no_grad():
        outs = ext.forward_layers(x, [0, -1])
    assert outs[0].shape == (1, 384, 5, 4)
    torch.testing.assert_close(outs[0], store[0][:, 1:].transpose(1, 2).reshape(1, 384, 5, 4), atol=0, rtol=0)
    torch.testing.assert_close(outs[1], store[2][:, 1:].transpose(1, 2).reshape(1, 384, 5, 4), atol=0, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        ext.forward_layers(x, [3])


def test_backbone_table_and_shapes():
    expected = {  # (patch, dim, heads, depth, official file) from the DINO / DINOv2 READMEs and hubconf
        "dino_vits16": (16, 384, 6, 12, "dino_deitsmall16_pretrain.pth"),
        "dino_vits8": (8, 384, 6, 12, "dino_deitsmall8_pretrain.pth"),
        "dino_vitb16": (16, 768, 12, 12, "dino_vitbase16_pretrain.pth"),
        "dino_vitb8": (8, 768, 12, 12, "dino_vitbase8_pretrain.pth"),
        "dinov2_vits14": (14, 384, 6, 12, "dinov2_vits14_pretrain.pth"),
        "dinov2_vitb14": (14, 768, 12, 12, "dinov2_vitb14_pretrain.pth"),
        "dinov2_vitl14": (14, 1024, 16, 24, "dinov2_vitl14_pretrain.pth"),
    }
    assert set(BACKBONES) == set(expected)
    for name, (patch, dim, heads, depth, file) in expected.items():
        cfg = BACKBONES[name]
        assert (cfg.patch_size, cfg.embed_dim, cfg.num_heads, cfg.depth, cfg.checkpoint_file) == (
            patch, dim, heads, depth, file)
        assert cfg.url.endswith("/" + file) and cfg.url.startswith("https://dl.fbaipublicfiles.com/")
        ext = build_extractor(name, random_init=True, depth=1)
        assert (ext.patch_size, ext.embed_dim) == (patch, dim)
        out = ext(torch.randn(2, 3, 3 * patch + 5, 2 * patch), facets=("k", "cls"))
        assert out["k"].shape == (2, 3, 2, dim) and out["cls"].shape == (2, dim)


def test_user_mistakes_are_clear():
    with pytest.raises(UserError, match="unknown backbone 'dino_vitz8'.*handcrafted"):
        build_extractor("dino_vitz8")
    ext = build_extractor("dino_vits16", random_init=True, depth=1)
    with pytest.raises(UserError, match="unknown feature facet"):
        ext(torch.randn(1, 3, 32, 32), facets=("key",))
    with pytest.raises(UserError, match="smaller than one 16-pixel patch"):
        ext(torch.randn(1, 3, 15, 40))
    with pytest.raises(UserError, match="attention"):
        build_extractor("dino_vits16", random_init=True, depth=1, attention="flash")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            build_extractor("handcrafted", device="cuda")


def test_normalize_uses_imagenet_statistics():
    ext = build_extractor("handcrafted")
    img = torch.tensor([[[[255]], [[0]], [[128]]]], dtype=torch.uint8)
    out = ext.normalize(img).flatten()
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    torch.testing.assert_close(out, torch.tensor(expected), atol=1e-6, rtol=0)


# ---------------------------------------------------------------- the weight-free stand-in
def _textured_square(size=128, square=(40, 88)):
    """Fine diagonal checkerboard inside a square, horizontal stripes outside, same mean grey."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    stripes = np.where((yy // 3) % 2 == 0, 90, 170)
    checker = np.where(((xx + yy) // 2) % 2 == 0, 60, 200)
    img = stripes.astype(float)
    a, b = square
    img[a:b, a:b] = checker[a:b, a:b]
    img = img + rng.normal(0, 8, img.shape)
    rgb = np.repeat(np.clip(img, 0, 255)[..., None], 3, axis=2).astype(np.uint8)
    inside = np.zeros((size // 8, size // 8), bool)
    inside[a // 8 : b // 8, a // 8 : b // 8] = True
    return rgb, inside


def _erode(mask: np.ndarray) -> np.ndarray:
    p = np.pad(mask, 1)
    return mask & p[2:, 1:-1] & p[:-2, 1:-1] & p[1:-1, 2:] & p[1:-1, :-2]


def _similarities(ext, rgb, inside):
    x = ext.normalize(torch.from_numpy(rgb).permute(2, 0, 1)[None])
    feats = ext(x, facets=("k", "token", "cls"))
    k = feats["k"][0]
    assert k.shape == (16, 16, ext.embed_dim) and torch.equal(feats["token"], feats["k"])
    assert feats["cls"].shape == (1, ext.embed_dim)
    f = F.normalize(k.reshape(-1, ext.embed_dim), dim=1)
    sim = f @ f.T
    # Patches next to the square's edge mix both textures in their 3x3 context: compare cores.
    obj = torch.from_numpy(_erode(inside).reshape(-1))
    bg = torch.from_numpy(_erode(~inside).reshape(-1))
    return sim[obj][:, obj].mean(), sim[bg][:, bg].mean(), sim[obj][:, bg]


def test_handcrafted_separates_textures():
    rgb, inside = _textured_square()
    within_obj, within_bg, across = _similarities(build_extractor("handcrafted"), rgb, inside)
    # measured: within object 0.983, within background 0.830, across -0.636
    assert within_obj - across.mean() > 1.2
    assert within_bg - across.mean() > 1.0
    # MaskCut binarises the affinity at tau=0.15: object-background pairs fall below it
    # (measured: none of them does).
    assert (across > 0.15).float().mean() < 0.01
    # The border prior is what makes the background cohere (measured 0.405 without it).
    _, within_bg_no_prior, _ = _similarities(HandcraftedExtractor(background_prior_weight=0.0), rgb, inside)
    assert within_bg - within_bg_no_prior > 0.25


def test_handcrafted_is_standardised_and_device_agnostic():
    ext = HandcraftedExtractor()
    x = ext.normalize(torch.randint(0, 256, (2, 3, 64, 48), dtype=torch.uint8))
    feats = ext(x)["k"]
    assert feats.shape == (2, 8, 6, ext.embed_dim)
    # Appearance channels (all but prior, y, x) are standardised per image: zero mean over patches.
    body = feats[..., :-3].reshape(2, -1, ext.embed_dim - 3)
    torch.testing.assert_close(body.mean(1), torch.zeros(2, ext.embed_dim - 3), atol=1e-4, rtol=0)
    prior = feats[..., -3]
    assert prior.abs().max() <= math.sqrt(10) + 1e-5  # 10 groups, weight 1: |prior| <= sqrt(10)
    torch.testing.assert_close(feats[0, :, 0, -2], 0.5 * torch.linspace(-1, 1, 8), atol=1e-6, rtol=0)
    assert ext.device == torch.device("cpu")
    assert [t.shape for t in ext.forward_layers(x, [3, 7])] == [(2, ext.embed_dim, 8, 6)] * 2


def test_hub_is_tried_only_when_online(monkeypatch, tmp_path):
    import seg_suite.features.weights as W

    _isolate_weight_search(monkeypatch, tmp_path)
    probed = []
    monkeypatch.setattr(W, "host_reachable", lambda url, timeout=3.0: probed.append(url) or False)
    with pytest.raises(MissingWeightsError):
        build_extractor("dino_vits16")
    assert probed == []  # SEG_SUITE_OFFLINE=1: no network probe at all
    monkeypatch.delenv("SEG_SUITE_OFFLINE")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MissingWeightsError):
        build_extractor("dino_vits16")
    assert probed == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(MissingWeightsError, match="dino_deitsmall16_pretrain.pth"):
        build_extractor("dino_vits16")
    assert probed == [BACKBONES["dino_vits16"].url]  # probed once, unreachable -> clear error


def test_timm_style_checkpoint_without_mask_token_and_other_grid(tmp_path):
    """timm's DINOv2 copies lack mask_token; a pos_embed for another square grid is adopted."""
    src = build_extractor("dinov2_vits14", random_init=True, depth=1)
    _randomize(src, seed=2)
    sd = {k: v for k, v in src.state_dict().items() if k != "mask_token"}
    sd["pos_embed"] = torch.randn(1, 1 + 16 * 16, 384)
    torch.save(sd, tmp_path / "timm_like.pth")
    ext = build_extractor("dinov2_vits14", weights=tmp_path / "timm_like.pth", depth=1)
    assert torch.equal(ext.pos_embed, sd["pos_embed"])
    x = torch.randn(1, 3, 16 * 14, 20 * 14)
    with torch.no_grad():
        out = ext(x, facets=("token",))["token"]
        ref = _oracle(sd, 6, 14, x, layer_scale=True)["token"][:, 1:].reshape(1, 16, 20, 384)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
