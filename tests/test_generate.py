"""`gan.outputs.generate` (the library behind `python -m gan sample`): drawing, class choice, interpolation strips, the
three output formats and the refusals. Tiny dcgan generators with random weights; the file runs in seconds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gan.core.config import ModelConfig
from gan.core.errors import PipelineError
from gan.core.tensors import to_uint8
from gan.outputs.generate import (
    SampleError,
    draw,
    interpolation_latents,
    interpolation_strip,
    sample,
    slerp,
    write_images,
)
from gan.training.models import build_generator, load_generator, save_generator
from gan.training.sampling import sample_batches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GREY = (1, 28, 28)
RGB = (3, 32, 32)
K = 10
UNCOND = ModelConfig(arch="dcgan", channels=4, z_dim=8)
COND = UNCOND.model_copy(update={"conditional": True})


def _save(path: Path, cfg: ModelConfig, shape: tuple[int, int, int], num_classes: int = 0) -> Path:
    """A tiny G with random weights (std 0.3: images spread over 0..255, classes that differ) saved at `path`."""
    torch.manual_seed(0)
    G = build_generator(cfg, shape, num_classes)
    with torch.no_grad():
        for p in G.parameters():
            p.normal_(0, 0.3)
    save_generator(path, G, cfg, {})
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generators")
    return {
        "grey": _save(root / "grey.pt", UNCOND, GREY),
        "cond": _save(root / "cond.pt", COND, GREY, K),
        "rgb": _save(root / "rgb.pt", UNCOND, RGB),
    }


def _G(files: dict[str, Path], which: str) -> torch.nn.Module:
    return load_generator(files[which])[0]


def _noise(n: int, z_dim: int, seed: int) -> torch.Tensor:
    """The noise sample_batches draws for n <= its batch size."""
    return torch.randn(n, z_dim, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _direct(G: torch.nn.Module, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    return to_uint8((G(z) if y is None else G(z, y)).clamp(-1, 1))


def _png(path: Path) -> tuple[str, tuple[int, int], np.ndarray]:
    with Image.open(path) as im:
        return im.mode, im.size, np.asarray(im)


# --- drawing ---


def test_same_seed_same_bytes_different_seed_differs(files):
    G = _G(files, "grey")
    a, b, c = draw(G, 16, seed=3), draw(G, 16, seed=3), draw(G, 16, seed=4)
    assert a.dtype == torch.uint8 and a.device.type == "cpu" and a.shape == (16, *GREY)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert len({bytes(img.numpy()) for img in a}) == 16  # 16 different images
    assert int(a.max()) - int(a.min()) > 100  # a spread of values, so "differs" means something


@pytest.mark.parametrize("which", ["grey", "cond", "rgb"])
@pytest.mark.parametrize("batch_size", [500, 7])
def test_draw_agrees_with_sample_batches(files, which, batch_size):
    G = _G(files, which)
    want = torch.cat([to_uint8(b) for b in sample_batches(G, 20, 5, batch_size)])
    assert torch.equal(draw(G, 20, 5, batch_size=batch_size), want)


def test_sample_writes_what_sample_batches_draws(files, tmp_path):
    """The npz of `sample` for a conditional G: sample_batches' images, classes cycling 0..K-1."""
    G = _G(files, "cond")
    summary = sample(files["cond"], tmp_path / "s.npz", n=23, seed=9)
    with np.load(tmp_path / "s.npz") as z:
        images, labels = z["images"], z["labels"]
    assert np.array_equal(images, to_uint8(next(sample_batches(G, 23, 9))).permute(0, 2, 3, 1).numpy())  # NHWC
    assert np.array_equal(labels, np.arange(23) % K)
    assert summary["files"] == [str(tmp_path / "s.npz")]
    assert (summary["n"], summary["seed"], summary["label"], summary["shape"]) == (23, 9, None, list(GREY))


def test_class_makes_every_image_of_that_class(files):
    G = _G(files, "cond")
    z = _noise(12, G.z_dim, 2)
    seven = draw(G, 12, seed=2, label=7)
    assert torch.equal(seven, _direct(G, z, torch.full((12,), 7)))
    assert not torch.equal(seven, draw(G, 12, seed=2, label=3))  # the class changes the images
    cycling = draw(G, 12, seed=2)
    assert torch.equal(cycling, _direct(G, z, torch.arange(12) % K))


def test_sample_with_class_writes_labels(files, tmp_path):
    sample(files["cond"], tmp_path / "c.npz", n=5, seed=1, label=4)
    with np.load(tmp_path / "c.npz") as z:
        assert z["labels"].tolist() == [4] * 5
        assert np.array_equal(z["images"], draw(_G(files, "cond"), 5, 1, label=4).permute(0, 2, 3, 1).numpy())


# --- refusals ---


@pytest.mark.parametrize(
    ("which", "kwargs", "match"),
    [
        ("grey", {"label": 0}, r"--class given but this generator is unconditional"),
        ("cond", {"label": 12}, r"--class 12: this generator has 10 classes \(0-9\)"),
        ("cond", {"label": -1}, r"--class -1: this generator has 10 classes \(0-9\)"),
        ("grey", {"n": 0}, r"--n 0: must be at least 1"),
        ("grey", {"n": -3}, r"--n -3: must be at least 1"),
        ("grey", {"interpolate": 1}, r"--interpolate 1: must be at least 2"),
        ("cond", {"interpolate": 5, "label": 10}, r"--class 10: this generator has 10 classes"),
    ],
)
def test_bad_requests_are_refused(files, tmp_path, which, kwargs, match):
    with pytest.raises(SampleError, match=match):
        sample(files[which], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_draw_refuses_bad_class(files):
    with pytest.raises(SampleError, match="unconditional"):
        draw(_G(files, "grey"), 4, 0, label=1)
    with pytest.raises(SampleError, match=r"--class 10: .*\(0-9\)"):
        interpolation_strip(_G(files, "cond"), 4, 0, label=10)


def test_folder_with_foreign_files_is_refused_and_kept(files, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "000000.png").write_bytes(b"not a sample")
    with pytest.raises(SampleError, match=r"--out .*mine: folder holds other files than samples \(notes\.txt\)"):
        sample(files["grey"], out, n=3)
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "notes.txt"]
    assert (out / "000000.png").read_bytes() == b"not a sample"


@pytest.mark.parametrize("name", ["plain-file", "dir.png"])
def test_out_of_the_wrong_kind_is_refused(files, tmp_path, name):
    out = tmp_path / name
    out.mkdir() if name.endswith(".png") else out.write_text("x")
    with pytest.raises(SampleError, match=r"--out "):
        sample(files["grey"], out, n=2)


def test_missing_or_unreadable_generator_names_the_file(tmp_path):
    with pytest.raises(PipelineError, match=r"nope\.pt: no such generator file"):
        sample(tmp_path / "nope.pt", tmp_path / "out")
    (tmp_path / "junk.pt").write_text("not a model")
    with pytest.raises(PipelineError, match=r"junk\.pt: cannot read as a generator file"):
        sample(tmp_path / "junk.pt", tmp_path / "out")


# --- formats ---


def test_folder_of_grey_pngs(files, tmp_path):
    out = tmp_path / "pngs"
    summary = sample(files["grey"], out, n=5, seed=2)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{i:06d}.png" for i in range(5)]
    assert summary["files"] == [str(out / n) for n in names]
    want = draw(_G(files, "grey"), 5, 2)
    for i, name in enumerate(names):
        mode, size, arr = _png(out / name)
        assert (mode, size) == ("L", (28, 28))
        assert np.array_equal(arr, want[i, 0].numpy())  # lossless: the PNG is draw's bytes


def test_folder_of_earlier_samples_is_replaced_whole(files, tmp_path):
    out = tmp_path / "pngs"
    sample(files["grey"], out, n=6, seed=0)
    sample(files["grey"], out, n=3, seed=1)
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(3)]
    assert np.array_equal(_png(out / "000002.png")[2], draw(_G(files, "grey"), 3, 1)[2, 0].numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["pngs"]  # no temp folder left beside it


def test_folder_of_rgb_pngs(files, tmp_path):
    out = tmp_path / "rgb"
    sample(files["rgb"], out, n=3, seed=0)
    want = draw(_G(files, "rgb"), 3, 0)
    for i in range(3):
        mode, size, arr = _png(out / f"{i:06d}.png")
        assert (mode, size) == ("RGB", (32, 32))
        assert np.array_equal(arr, want[i].permute(1, 2, 0).numpy())


@pytest.mark.parametrize(("which", "n", "mode"), [("grey", 10, "L"), ("grey", 16, "L"), ("rgb", 5, "RGB")])
def test_grid_png(files, tmp_path, which, n, mode):
    out = tmp_path / "grid.png"
    sample(files[which], out, n=n, seed=0)
    _, h, w = GREY if which == "grey" else RGB
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    got_mode, size, arr = _png(out)
    assert got_mode == mode
    assert size == (cols * (w + 2) + 2, rows * (h + 2) + 2)
    first = draw(_G(files, which), n, 0)[0]
    tile = arr[2 : 2 + h, 2 : 2 + w]
    assert np.array_equal(tile, first[0].numpy() if mode == "L" else first.permute(1, 2, 0).numpy())


def test_npz_unconditional(files, tmp_path):
    sample(files["rgb"], tmp_path / "x.npz", n=4, seed=0)
    with np.load(tmp_path / "x.npz") as z:
        assert z.files == ["images"]
        c, h, w = RGB
        assert z["images"].dtype == np.uint8 and z["images"].shape == (4, h, w, c)  # NHWC, as export writes


def test_write_images_labels_and_formats(tmp_path):
    images = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    assert write_images(images, tmp_path / "a.NPZ", torch.tensor([1, 2, 3])) == [tmp_path / "a.NPZ"]
    with np.load(tmp_path / "a.NPZ") as z:
        assert z["labels"].dtype == np.int64 and z["labels"].tolist() == [1, 2, 3]
        assert np.array_equal(z["images"], images.permute(0, 2, 3, 1).numpy())
    with pytest.raises(SampleError, match=r"--out .*PNGs hold 1 or 3 channels, this generator makes 2"):
        write_images(torch.zeros(2, 2, 4, 4, dtype=torch.uint8), tmp_path / "two")


# --- interpolation ---


def test_interpolation_ends_are_the_two_latents(files):
    G = _G(files, "grey")
    z = _noise(2, G.z_dim, 6)
    strip = interpolation_strip(G, 7, seed=6)
    assert strip.dtype == torch.uint8 and strip.shape == (7, *GREY)
    ends = _direct(G, z)
    assert torch.equal(strip[0], ends[0]) and torch.equal(strip[-1], ends[1])
    assert torch.equal(strip[[0, -1]], draw(G, 2, 6))  # the same two images `sample --n 2` makes
    middle = strip[3]
    assert not torch.equal(middle, strip[0]) and not torch.equal(middle, strip[-1])
    assert torch.equal(strip, interpolation_strip(G, 7, seed=6))
    zs = interpolation_latents(G.z_dim, 7, 6)
    assert torch.equal(zs[0], z[0]) and torch.equal(zs[-1], z[1])


def test_interpolation_of_a_conditional_g_keeps_one_class(files):
    G = _G(files, "cond")
    z = _noise(2, G.z_dim, 1)
    for label, y in ((3, 3), (None, 0)):
        strip = interpolation_strip(G, 5, seed=1, label=label)
        assert torch.equal(strip[[0, -1]], _direct(G, z, torch.full((2,), y)))
        assert torch.equal(strip[2], _direct(G, interpolation_latents(G.z_dim, 5, 1)[2:3], torch.tensor([y]))[0])


def test_slerp_follows_the_great_circle():
    e0, e1 = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    z = slerp(e0, e1, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(z[1], torch.tensor([1.0, 2.0, 0.0]) / math.sqrt(2))  # lerp would be (0.5, 1, 0)
    assert torch.allclose(z[0], e0) and torch.allclose(z[2], e1)
    parallel = slerp(e0, 3 * e0, torch.tensor([0.5]))  # angle 0: a straight line, no NaN
    assert torch.allclose(parallel, torch.tensor([[2.0, 0.0, 0.0]]))


def test_sample_strip_png_is_one_row(files, tmp_path):
    summary = sample(files["cond"], tmp_path / "strip.png", interpolate=5, seed=1, label=2)
    mode, size, arr = _png(tmp_path / "strip.png")
    assert (mode, size) == ("L", (5 * 30 + 2, 30 + 2))
    assert summary["n"] == 5 and summary["interpolate"] == 5
    strip = interpolation_strip(_G(files, "cond"), 5, seed=1, label=2)
    assert np.array_equal(arr[2:30, 2 + 4 * 30 : 30 + 4 * 30], strip[4, 0].numpy())
    sample(files["cond"], tmp_path / "strip.npz", interpolate=4, seed=1)
    with np.load(tmp_path / "strip.npz") as z:
        assert z["images"].shape == (4, GREY[1], GREY[2], GREY[0]) and z["labels"].tolist() == [0] * 4


def test_cli_sample_reads_the_champion_a_crashed_promotion_left_without_moving_it(files, tmp_path, capsys):
    """A promotion interrupted between its two renames leaves `.champion.old` and no champion folder: `gan sample`
    (which holds no workspace lock) draws from that champion, and leaves the folders as they are for the flow's
    `recover`."""
    import json
    import shutil

    from gan.cli import main
    from gan.core.paths import PATHS

    champion = tmp_path / PATHS.champion
    old = champion.with_name(f".{champion.name}.old")
    old.mkdir(parents=True)
    shutil.copy(files["rgb"], old / "generator.pt")
    assert main(["sample", "--repo", str(tmp_path), "--out", str(tmp_path / "s.npz"), "--n", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["generator"] == str(old / "generator.pt")
    with np.load(tmp_path / "s.npz") as z:
        assert z["images"].shape == (3, 32, 32, 3)
    assert old.is_dir() and not champion.exists()  # nothing moved
    old.rename(champion)  # the normal case: the champion folder itself
    assert main(["sample", "--repo", str(tmp_path), "--out", str(tmp_path / "t.npz"), "--n", "3"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["generator"] == str(champion / "generator.pt")
