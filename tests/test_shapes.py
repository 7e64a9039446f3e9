"""Every stage after `prepare` follows the prepared image shape (issue 13): grey or RGB, any supported size.

Tiny synthetic prepared data at 3×32×32, 1×64×64 (and 3×64×64 for export), tiny models, few images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from gan.core.config import ClassifierConfig, EvaluateConfig, ExportConfig, ModelConfig, Params, TrainConfig
from gan.core.splits import UNLABELED, load_split
from gan.core.tensors import ImageShapeError
from gan.data.imagefiles import SamplesError, load_samples
from gan.evaluation.classifier import DomainClassifier, NoClassifier, load_classifier, train_classifier
from gan.evaluation.evaluate import evaluate, score_images
from gan.evaluation.features import ExtractorFiles, InceptionExtractor, NoExtractor
from gan.evaluation.reference import build_reference
from gan.outputs.export import export
from gan.training.models import build_generator, load_generator, save_generator
from gan.training.train import TrainOutputs, load_checkpoint, run_fingerprint, train

CLASSES = ("zero", "one", "two", "three")
MODEL = ModelConfig(arch="dcgan", channels=4, z_dim=8)
TRAIN = TrainConfig(epochs=1, batch_size=16, device="cpu")
CLASSIFIER = ClassifierConfig(steps=2, batch_size=32)


def _files(classifier) -> ExtractorFiles:
    """The extractor files of these tests: a classifier, and no judge (they use extractors [classifier])."""
    return ExtractorFiles(Path(classifier), Path(classifier).with_name("no-judge.pt"))


EVAL = EvaluateConfig(
    n_samples=40, bootstrap=0, kid_subsets=2, kid_subset_size=20, prdc_samples=20, prdc_k=3, extractors=["classifier"]
)
SHAPES = [(3, 32, 32), (1, 64, 64)]
ids = ["x".join(map(str, s)) for s in SHAPES]


def make_split(path: Path, shape: tuple[int, int, int], n: int, seed: int = 0, labeled: bool = True) -> Path:
    """n images of `shape`; class k is a bright band at its own rows (and, in RGB, its own channel)."""
    rng = np.random.default_rng(seed)
    c, h, w = shape
    labels = rng.integers(0, len(CLASSES), n).astype(np.int64)
    images = rng.integers(0, 40, (n, c, h, w)).astype(np.uint8)
    band = h // (2 * len(CLASSES))
    for i, k in enumerate(labels):
        images[i, k % c, 2 * k * band : (2 * k + 1) * band, 2 : w - 2] = 220
    np.savez(path, images=images, labels=labels if labeled else np.full(n, UNLABELED, np.int64))
    return path


@pytest.fixture
def prepared(tmp_path):
    """A factory: prepared train/test splits of a shape (labelled or not) under tmp_path/<shape>/."""

    def make(shape: tuple[int, int, int], labeled: bool = True, n_train: int = 64, n_test: int = 48) -> Path:
        root = tmp_path / ("x".join(map(str, shape)) + ("" if labeled else "-unlabeled"))
        root.mkdir()
        make_split(root / "train.npz", shape, n_train, 0, labeled)
        make_split(root / "test.npz", shape, n_test, 1, labeled)
        return root

    return make


def rgb_channels_differ(path: Path) -> bool:
    with Image.open(path) as im:
        assert im.mode == "RGB", im.mode
        a = np.asarray(im)
    return not (np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]))


# --- train ---


TRAIN_CASES = [("dcgan", (3, 32, 32)), ("dcgan", (1, 64, 64)), ("mlp", (3, 20, 20))]


@pytest.mark.parametrize("arch,shape", TRAIN_CASES, ids=[f"{a}-{'x'.join(map(str, s))}" for a, s in TRAIN_CASES])
def test_train_builds_g_and_d_for_the_split_shape(prepared, tmp_path, arch, shape):
    data = prepared(shape)
    model = MODEL.model_copy(update={"arch": arch, "hidden": 16})
    out = TrainOutputs(tmp_path / "g.pt", tmp_path / "ckpt", tmp_path / "log")
    r = train(model, TRAIN, data / "train.npz", out, progress_bar=False)
    assert r.steps == 64 // 16
    blob = torch.load(out.generator, weights_only=True)
    assert blob["image_shape"] == list(shape)
    G, _ = load_generator(out.generator)
    assert G(torch.randn(2, model.z_dim)).shape == (2, *shape)
    # the fixed-z sample grid: 8×8 images of the data's size, RGB for RGB data
    with Image.open(out.log_dir / "samples" / "epoch_001.png") as im:
        assert im.size == (8 * (shape[2] + 2) + 2, 8 * (shape[1] + 2) + 2)
    assert rgb_channels_differ(out.log_dir / "samples" / "epoch_001.png") == (shape[0] == 3)
    # the finished checkpoint resumes (same fingerprint): nothing is retrained
    assert load_checkpoint(out.checkpoint_dir / "last.pt")["step"] == r.steps
    assert train(model, TRAIN, data / "train.npz", out, progress_bar=False).resumed_from_step == r.steps


def test_a_shape_the_model_cannot_build_is_a_config_error_naming_the_split(prepared, tmp_path):
    from gan.core.config import ConfigError

    data = prepared((1, 48, 48))
    with pytest.raises(ConfigError, match=r"train.npz: image shape \(1, 48, 48\) is not supported: dcgan supports"):
        train(MODEL, TRAIN, data / "train.npz", TrainOutputs(tmp_path / "g.pt", tmp_path / "c", tmp_path / "l"),
              progress_bar=False)  # fmt: skip


def test_the_resume_fingerprint_covers_the_image_shape():
    images = np.zeros((6, 1, 32, 32), np.uint8)
    same_bytes_rgb = images.reshape(2, 3, 32, 32)
    assert run_fingerprint(MODEL, TRAIN, images) != run_fingerprint(MODEL, TRAIN, same_bytes_rgb)


# --- the domain classifier ---


class _RefDomainClassifier(nn.Module):
    """The classifier before shapes were followed, verbatim: 1×28×28 must stay bit-identical to it."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, 128),
            nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)


def test_the_classifier_has_no_default_image_shape():
    with pytest.raises(TypeError, match="image_shape"):
        DomainClassifier(10)


@pytest.mark.parametrize("seed", [0, 3])
def test_the_1x28x28_classifier_is_bit_identical_to_the_pre_shape_one(seed):
    torch.manual_seed(seed)
    new = DomainClassifier(10, (1, 28, 28))
    after_new = torch.rand(3)
    torch.manual_seed(seed)
    ref = _RefDomainClassifier(10)
    assert torch.equal(after_new, torch.rand(3))  # the same number of draws, in the same order
    assert [type(m) for m in new.modules()][1:] == [type(m) for m in ref.modules()][1:]
    a, b = new.state_dict(), ref.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "shape,blocks", [((3, 32, 32), 2), ((1, 64, 64), 3), ((3, 128, 128), 4), ((3, 20, 20), 2), ((1, 8, 8), 0)]
)
def test_classifier_shapes(shape, blocks):
    model = DomainClassifier(5, shape)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == blocks
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert not convs or convs[0].in_channels == shape[0]
    x = torch.zeros(2, *shape)
    assert model.features(x).shape == (2, 128) and model(x).shape == (2, 5)


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_classifier_trains_saves_and_loads_at_the_data_shape(prepared, tmp_path, shape):
    data = prepared(shape)
    m = train_classifier(CLASSIFIER, data / "train.npz", data / "test.npz", tmp_path / "c.pt", tmp_path / "c.json",
                         num_classes=len(CLASSES), device="cpu", progress_bar=False)  # fmt: skip
    assert 0 <= m["test_accuracy"] <= 1 and m["n_test"] == 48
    assert torch.load(tmp_path / "c.pt", weights_only=True)["image_shape"] == list(shape)
    model, acc = load_classifier(tmp_path / "c.pt")
    assert model.image_shape == shape and acc == pytest.approx(m["test_accuracy"], abs=1e-5)
    assert model(torch.zeros(2, *shape)).shape == (2, len(CLASSES))


def test_classifier_files_without_an_image_shape_load_as_1x28x28(tmp_path):
    torch.manual_seed(0)
    state = DomainClassifier(10, (1, 28, 28)).state_dict()
    torch.save({"state_dict": state, "num_classes": 10, "test_accuracy": 0.5}, tmp_path / "old.pt")
    model, _ = load_classifier(tmp_path / "old.pt")
    assert model.image_shape == (1, 28, 28)


# --- unlabeled data: a marker, never a made-up number ---


def test_unlabeled_data_gets_a_marker_and_every_classifier_use_stops_clearly(prepared, tmp_path):
    data = prepared((3, 32, 32), labeled=False)
    model_path, json_path = tmp_path / "models" / "classifier.pt", tmp_path / "metrics" / "classifier.json"
    m = train_classifier(CLASSIFIER, data / "train.npz", data / "test.npz", model_path, json_path, num_classes=0,
                         device="cpu", progress_bar=False)  # fmt: skip
    assert m["available"] is False and json.loads(json_path.read_text()) == m
    assert "no labels" in m["reason"]
    blob = torch.load(model_path, weights_only=True)
    assert blob["num_classes"] == 0 and blob["image_shape"] == [3, 32, 32] and "state_dict" not in blob

    with pytest.raises(NoClassifier) as err:
        load_classifier(model_path)
    msg = str(err.value)
    for part in (str(model_path), "the source has no labels", "no domain classifier and no class metrics",
                 "the judge (evaluate.extractors 'judge'", "Add labels"):  # fmt: skip
        assert part in msg, part

    cfg = EVAL.model_copy(update={"extractors": ["classifier"]})
    nothing = (
        r"evaluate.extractors = \['classifier'\]: none applies to this data \(classifier: .*the source has no labels"
    )
    with pytest.raises(NoExtractor, match=nothing):
        build_reference(cfg, _files(model_path), data / "train.npz", data / "test.npz", tmp_path / "ref", device="cpu")
    # evaluate (and --samples scoring) against a reference of this data stop the same way, before drawing an image
    ref = tmp_path / "ref"
    ref.mkdir()
    meta = {"n": 40, "reference_split": "test", "floor_split": "train", "image_shape": [3, 32, 32], "labeled": False,
            "extractors": {}}  # fmt: skip
    (ref / "meta.json").write_text(json.dumps(meta))
    G = build_generator(MODEL, (3, 32, 32))
    save_generator(tmp_path / "g.pt", G, MODEL, {})
    with pytest.raises(NoExtractor, match=nothing):
        evaluate(cfg, tmp_path / "g.pt", _files(model_path), ref, tmp_path / "metrics.json", device="cpu")
    assert not (tmp_path / "metrics.json").exists()
    with pytest.raises(NoExtractor, match=nothing):
        score_images(torch.zeros(40, 3, 32, 32, dtype=torch.uint8), cfg, _files(model_path), ref, device="cpu")


def test_labels_that_do_not_fit_the_classes_are_refused(prepared, tmp_path):
    data = prepared((1, 64, 64), labeled=False)
    with pytest.raises(Exception, match="unlabeled images, but the data summary lists 4 classes"):
        train_classifier(CLASSIFIER, data / "train.npz", data / "test.npz", tmp_path / "c.pt", tmp_path / "c.json",
                         num_classes=4, device="cpu", progress_bar=False)  # fmt: skip


# --- reference and evaluate ---


@pytest.fixture
def stages(prepared, tmp_path):
    """A factory: classifier, generator and reference for data of a shape; returns the paths."""

    def run(shape: tuple[int, int, int]) -> dict:
        data = prepared(shape)
        root = data / "out"
        c = root / "classifier.pt"
        train_classifier(CLASSIFIER, data / "train.npz", data / "test.npz", c, root / "c.json",
                         num_classes=len(CLASSES), device="cpu", progress_bar=False)  # fmt: skip
        torch.manual_seed(0)
        save_generator(root / "g.pt", build_generator(MODEL, shape), MODEL, {})
        meta = build_reference(EVAL, _files(c), data / "train.npz", data / "test.npz", root / "ref", device="cpu")
        return {"data": data, "classifier": c, "generator": root / "g.pt", "ref": root / "ref", "meta": meta}

    return run


@pytest.mark.parametrize("shape", SHAPES, ids=ids)
def test_reference_and_evaluate_follow_the_data_shape(stages, tmp_path, shape):
    s = stages(shape)
    meta = json.loads((s["ref"] / "meta.json").read_text())
    assert meta == s["meta"] and meta["image_shape"] == list(shape) and meta["labeled"] is True
    assert meta["extractors"]["classifier"]["input_shape"] == list(shape)
    m = evaluate(EVAL, s["generator"], _files(s["classifier"]), s["ref"], tmp_path / "metrics.json",
                 classes=list(CLASSES), device="cpu")  # fmt: skip
    assert m["n"] == 40 and np.isfinite(m["fid_classifier"]) and m["fid_classifier"] > m["fid_classifier_floor"]
    assert m["num_classes"] == len(CLASSES) and set(m["per_class_fid_classifier"]) == set(CLASSES)

    # real test images of the same shape score as the reference itself
    real = torch.from_numpy(load_split(s["data"] / "test.npz").images)
    assert score_images(real, EVAL, _files(s["classifier"]), s["ref"], list(CLASSES), "cpu")["fid_classifier"] < 1e-6


def test_images_of_another_shape_are_refused_saying_what_was_expected(stages, tmp_path):
    s = stages((3, 32, 32))
    with pytest.raises(ImageShapeError) as err:
        score_images(
            torch.zeros(40, 1, 28, 28, dtype=torch.uint8), EVAL, _files(s["classifier"]), s["ref"], device="cpu"
        )
    msg = str(err.value)
    assert msg.startswith("expected 3×32×32 images (the prepared data's shape") and msg.endswith("got 1×28×28")
    save_generator(tmp_path / "g28.pt", build_generator(MODEL, (1, 28, 28)), MODEL, {})
    with pytest.raises(ImageShapeError, match=r"g28.pt makes 1×28×28 images, but .* holds 3×32×32"):
        evaluate(EVAL, tmp_path / "g28.pt", _files(s["classifier"]), s["ref"], tmp_path / "m.json", device="cpu")
    # the classifier extractor checks too (a reference built without the shape, or a classifier of other data)
    from gan.evaluation.features import ClassifierExtractor

    ex = ClassifierExtractor(s["classifier"], torch.device("cpu"))
    with pytest.raises(ImageShapeError, match="expected 3×32×32 images .* got 3×64×64"):
        ex(torch.zeros(2, 3, 64, 64, dtype=torch.uint8))


class _MeanExtractor:
    """A stand-in for Inception on unlabeled data: per-channel means and a 2-way softmax."""

    name = "inception"
    weights_sha256 = "0" * 64
    input_shape = (3, 299, 299)

    def __call__(self, images_u8):
        x = images_u8.double()
        f = torch.cat([x.mean((2, 3)), x.std((2, 3)), x[:, :, ::4, ::4].flatten(1)[:, :6]], 1).numpy()
        p = torch.softmax(torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1) / 50, 1).numpy()
        return f, p


def test_unlabeled_data_scores_without_class_metrics(prepared, tmp_path, monkeypatch):
    import gan.evaluation.evaluate as ge
    import gan.evaluation.reference as gr

    data = prepared((3, 32, 32), labeled=False)
    fake = {"inception": _MeanExtractor()}
    monkeypatch.setattr(gr, "build_extractors", lambda *a, **k: (fake, {}))
    monkeypatch.setattr(ge, "build_extractors", lambda *a, **k: (fake, {}))
    cfg = EVAL.model_copy(update={"extractors": ["inception"]})
    meta = build_reference(
        cfg, _files(tmp_path / "none.pt"), data / "train.npz", data / "test.npz", tmp_path / "ref", "cpu"
    )
    assert meta["labeled"] is False and meta["image_shape"] == [3, 32, 32]
    assert meta["extractors"]["inception"]["input_shape"] == [3, 299, 299]
    images = torch.from_numpy(load_split(data / "train.npz").images)
    m = score_images(images, cfg, _files(tmp_path / "none.pt"), tmp_path / "ref", classes=[], device="cpu")
    assert np.isfinite(m["fid_inception"]) and "classes_covered" not in m and "num_classes" not in m


def test_inception_takes_rgb_as_is_and_repeats_grey():
    seen = []
    ex = InceptionExtractor.__new__(InceptionExtractor)
    ex.device, ex.batch_size = torch.device("cpu"), 8
    ex.model = lambda x: (seen.append(x) or torch.zeros(len(x), 2048), torch.zeros(len(x), 1008))
    rgb = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    ex(rgb)
    assert torch.equal(seen[-1], rgb)
    grey = torch.randint(0, 256, (3, 1, 64, 64), dtype=torch.uint8)
    ex(grey)
    assert seen[-1].shape == (3, 3, 64, 64) and all(torch.equal(seen[-1][:, c], grey[:, 0]) for c in range(3))
    with pytest.raises(ImageShapeError, match="C = 1 or 3"):
        ex(torch.zeros(2, 2, 32, 32, dtype=torch.uint8))


# --- export ---


@pytest.mark.parametrize("shape", [(3, 64, 64), (1, 32, 32)], ids=["3x64x64", "1x32x32"])
def test_export_at_the_generator_shape(tmp_path, shape):
    torch.manual_seed(0)
    G = build_generator(MODEL, shape)
    save_generator(tmp_path / "g.pt", G, MODEL, {})
    (tmp_path / "metrics.json").write_text(json.dumps({"n": 10}))
    summary = {"dataset": "folder", "classes": [], "source": "file:///photos.zip"}  # the shape: from G
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "train.json").write_text(json.dumps({"steps": 1, "epochs": 1}))
    p = Params(model=MODEL, export=ExportConfig(n_png=3, n_npz=5))
    out = tmp_path / "samples"
    export(p.export, p, tmp_path / "g.pt", tmp_path / "metrics.json", tmp_path / "summary.json",
           tmp_path / "train.json", out)  # fmt: skip
    c, h, w = shape
    with np.load(out / "samples.npz") as z:
        assert z["images"].shape == (5, h, w, c) and z["images"].dtype == np.uint8
    with Image.open(out / "grid.png") as im:
        assert im.size == (8 * (w + 2) + 2, 8 * (h + 2) + 2)
    assert rgb_channels_differ(out / "grid.png") == (c == 3)
    with Image.open(out / "png" / "00000.png") as im:
        assert im.size == (w, h)
    assert rgb_channels_differ(out / "png" / "00000.png") == (c == 3)
    G, _ = load_generator(tmp_path / "g.pt")
    ts = torch.jit.load(out / "generator.torchscript.pt")
    z = torch.randn(4, MODEL.z_dim)
    with torch.no_grad():
        assert torch.equal(ts(z), G(z)) and ts(z).shape == (4, *shape)
    card = (out / "MODEL_CARD.md").read_text()
    kind = "RGB" if c == 3 else "grey"
    assert f"image shape: **{c}×{h}×{w} ({kind})** (C×H×W)" in card
    assert "source: `file:///photos.zip`" in card and "classes: none (unlabeled)" in card
    assert f"# 16×{c}×{h}×{w} in [-1, 1]" in card
    # the exported samples are what `gan evaluate --samples` reads back at this shape
    assert load_samples(out / "samples.npz", shape).shape == (5, *shape)
    assert load_samples(out / "png", shape).shape == (3, *shape)


# --- external samples ---


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 28, 28), (1, 64, 64)], ids=["3x32x32", "1x28x28", "1x64x64"])
def test_load_samples_layouts(tmp_path, shape):
    c, h, w = shape
    nchw = np.random.default_rng(0).integers(0, 256, (4, c, h, w)).astype(np.uint8)
    layouts = {"nchw.npy": nchw, "nhwc.npy": nchw.transpose(0, 2, 3, 1), "float.npy": nchw / 255.0}
    if c == 1:
        layouts["nhw.npy"] = nchw[:, 0]
        layouts["rgb_equal.npy"] = np.repeat(nchw, 3, axis=1)  # three equal channels are grey
    for name, arr in layouts.items():
        np.save(tmp_path / name, arr)
        got = load_samples(tmp_path / name, shape)
        assert got.dtype == torch.uint8 and torch.equal(got, torch.from_numpy(nchw)), name
    np.savez(tmp_path / "s.npz", images=nchw.transpose(0, 2, 3, 1))
    assert torch.equal(load_samples(tmp_path / "s.npz", shape), torch.from_numpy(nchw))
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(nchw):
        Image.fromarray(img[0] if c == 1 else img.transpose(1, 2, 0)).save(folder / f"{i}.png")
    assert torch.equal(load_samples(folder, shape), torch.from_numpy(nchw))
    if c == 1:  # grey saved as RGB (as torchvision's save_image writes it) is grey
        for i, img in enumerate(nchw):
            Image.fromarray(img[0]).convert("RGB").save(folder / f"{i}.png")
        assert torch.equal(load_samples(folder, shape), torch.from_numpy(nchw))


def test_load_samples_mismatches_say_what_was_expected(tmp_path):
    grey28 = np.zeros((4, 28, 28), np.uint8)
    np.save(tmp_path / "grey28.npy", grey28)
    with pytest.raises(SamplesError) as err:
        load_samples(tmp_path / "grey28.npy", (3, 32, 32))
    assert str(err.value) == (
        f"expected 3×32×32 images (the prepared data's shape), got 1×28×28 in {tmp_path / 'grey28.npy'}"
    )
    rgb = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype(np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb)
    with pytest.raises(SamplesError, match=r"expected 1×32×32 images .*, got 3×32×32 \(colour\) in .*rgb.npz"):
        load_samples(tmp_path / "rgb.npz", (1, 32, 32))
    with pytest.raises(SamplesError, match=r"expected 3×64×64 images .*, got 3×32×32 in .*rgb.npz"):
        load_samples(tmp_path / "rgb.npz", (3, 64, 64))
    with pytest.raises(SamplesError, match="is not N×H×W, N×H×W×C or N×C×H×W"):
        np.save(tmp_path / "flat.npy", np.zeros((4, 784), np.uint8))
        load_samples(tmp_path / "flat.npy", (1, 28, 28))
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("L", (32, 32)).save(folder / "b.png")
    with pytest.raises(SamplesError, match=r"expected 3×32×32 images .*, got 1×32×32 in .*b.png"):
        load_samples(folder, (3, 32, 32))
    Image.new("RGB", (28, 28)).save(folder / "b.png")
    with pytest.raises(SamplesError, match=r"expected 3×32×32 images .*, got 3×28×28 in .*b.png"):
        load_samples(folder, (3, 32, 32))
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "b.png")
    with pytest.raises(SamplesError, match=r"expected 1×32×32 images .*, got 3×32×32 \(colour\) in .*b.png"):
        load_samples(folder, (1, 32, 32))
