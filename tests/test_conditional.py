"""Class-conditional generators downstream of training: sampling, conditional accuracy, export.

Tiny synthetic 1×28×28 data of 4 classes, a 1-epoch classifier, tiny dcgan generators; the whole file runs on one
CPU thread in a few seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.utils import save_image

from gan.core.config import ClassifierConfig, EvaluateConfig, ExportConfig, ModelConfig, Params
from gan.core.tensors import to_uint8
from gan.evaluation.classifier import train_classifier
from gan.evaluation.evaluate import _conditional_metrics, evaluate, score_images
from gan.evaluation.features import ExtractorFiles
from gan.evaluation.judge import FEATURE_DIM, JudgeEncoder
from gan.evaluation.reference import build_reference
from gan.outputs.export import export, export_torchscript, model_card
from gan.outputs.metric_table import summary_rows
from gan.training.models import ConditionalBatchNorm2d, build_generator, load_generator, save_generator
from gan.training.sampling import requested_labels, sample_batches

CLASSES = ["zero", "one", "two", "three"]
K = len(CLASSES)
SHAPE = (1, 28, 28)
COND = ModelConfig(arch="dcgan", channels=8, z_dim=8, conditional=True)
UNCOND = COND.model_copy(update={"conditional": False})
EVAL = EvaluateConfig(n_samples=40, bootstrap=0, kid_subsets=2, kid_subset_size=20, prdc_samples=20, prdc_k=3,
                      extractors=["classifier"])  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One CPU thread (the machine is shared); module scope, so the module's fixtures run on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _conditional_g(seed: int = 0) -> torch.nn.Module:
    """A conditional G whose classes differ (a new G's conditional BatchNorm is the same for every class)."""
    torch.manual_seed(seed)
    G = build_generator(COND, SHAPE, K)
    for m in G.modules():
        if isinstance(m, ConditionalBatchNorm2d):
            torch.nn.init.normal_(m.gamma.weight, 1.0, 0.5)
            torch.nn.init.normal_(m.beta.weight, 0.0, 0.5)
    return G


def _split(path: Path, n: int, seed: int) -> Path:
    """n images of SHAPE; class k is a bright band at its own rows."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n).astype(np.int64)
    images = rng.integers(0, 40, (n, *SHAPE)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 0, 6 * k + 2 : 6 * k + 5, 2:26] = 220
    np.savez(path, images=images, labels=labels)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict:
    """Prepared splits, a trained classifier, a random judge and a conditional generator (K classes)."""
    root = tmp_path_factory.mktemp("conditional")
    train, test = _split(root / "train.npz", 64, 0), _split(root / "test.npz", 48, 1)
    classifier = root / "classifier.pt"
    train_classifier(ClassifierConfig(steps=2, batch_size=32), train, test, classifier, root / "c.json",
                     num_classes=K, device="cpu", progress_bar=False)  # fmt: skip
    torch.manual_seed(0)
    judge = root / "judge.pt"  # untrained, saved as train_judge saves it: features are all the tests need
    state = {k: v.clone() for k, v in JudgeEncoder(SHAPE).state_dict().items()}
    torch.save({"state_dict": state, "image_shape": list(SHAPE), "feature_dim": FEATURE_DIM, "method": "simclr"},
               judge)  # fmt: skip
    save_generator(root / "g.pt", _conditional_g(1), COND, {})
    return {"root": root, "train": train, "test": test, "classifier": classifier, "judge": judge,
            "generator": root / "g.pt"}  # fmt: skip


def _files(d: dict, classifier: Path | None = None) -> ExtractorFiles:
    return ExtractorFiles(classifier or d["classifier"], d["judge"])


# --- 1. sampling ---


def test_a_conditional_g_is_asked_for_the_requested_labels():
    G = _conditional_g()
    assert G.num_classes == K
    seen = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args))
    n, bs = 10, 4
    out = torch.cat(list(sample_batches(G, n, seed=7, batch_size=bs)))
    assert out.shape == (n, *SHAPE)
    assert [len(a) for a in seen] == [2, 2, 2]  # G(z, y), batch after batch
    y = torch.cat([a[1] for a in seen])
    assert torch.equal(y, requested_labels(n, K)) and torch.equal(y, torch.arange(n) % K)
    # the noise is the same stream an unconditional G gets
    gen = torch.Generator().manual_seed(7)
    for a, m in zip(seen, (4, 4, 2), strict=True):
        assert torch.equal(a[0], torch.randn(m, COND.z_dim, generator=gen))
    # explicit labels are passed through as given
    seen.clear()
    labels = torch.tensor([3, 3, 1, 0, 2])
    list(sample_batches(G, 5, seed=7, batch_size=2, labels=labels))
    assert torch.equal(torch.cat([a[1] for a in seen]), labels)


def test_an_unconditional_g_gives_the_images_it_always_gave():
    torch.manual_seed(0)
    G = build_generator(UNCOND, SHAPE)
    assert G.num_classes == 0
    seen = []
    G.register_forward_pre_hook(lambda module, args: seen.append(len(args)))
    n, bs, seed = 40, 16, 11
    got = list(sample_batches(G, n, seed, bs))
    assert seen == [1, 1, 1]  # G(z): no labels
    gen = torch.Generator().manual_seed(seed)
    G.eval()
    with torch.no_grad():
        expected = [G(torch.randn(m, UNCOND.z_dim, generator=gen)) for m in (16, 16, 8)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))


# --- 2. conditional accuracy by hand ---


def test_conditional_metrics_by_hand():
    # 6 images, 4 classes; class 3 is never requested. Argmax: 0, 1, 1, 2, 0, 2
    p = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1], [0.2, 0.5, 0.2, 0.1],
                  [0.1, 0.1, 0.8, 0.0], [0.4, 0.3, 0.2, 0.1], [0.0, 0.1, 0.5, 0.4]])  # fmt: skip
    requested = np.array([0, 1, 0, 2, 0, 1])
    m = _conditional_metrics(p, requested, ["a", "b", "c", "d"])
    assert m["conditional_accuracy"] == pytest.approx(4 / 6)  # right: images 0, 1, 3, 4
    # per class: rounded to 4 places; a class never asked for has no accuracy (None), not 0
    assert m["conditional_accuracy_per_class"] == {"a": 0.6667, "b": 0.5, "c": 1.0, "d": None}
    # class names missing: the index names the class
    names = _conditional_metrics(p, requested, ["a", "b"])["conditional_accuracy_per_class"]
    assert list(names) == ["a", "b", "2", "3"]


# --- 3. evaluate end to end ---


@pytest.fixture(scope="module")
def ref(data) -> Path:
    """The reference of the tiny data in the classifier's features (n = 40)."""
    out = data["root"] / "ref"
    build_reference(EVAL, _files(data), data["train"], data["test"], out, device="cpu")
    return out


class _BandG(torch.nn.Module):
    """A conditional "generator" that draws the data's band of class y (noise elsewhere): the classifier can tell
    its classes apart, so the accuracy shows whether each image is scored against the class it was made for."""

    z_dim, image_shape, num_classes = COND.z_dim, SHAPE, K

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = (-0.7 + 0.05 * z[:, :1, None, None]).expand(-1, *SHAPE).clone()
        for i, k in enumerate(y.tolist()):
            x[i, 0, 6 * k + 2 : 6 * k + 5, 2:26] = 0.75
        return x


def _by_hand(classifier: Path, images_u8: torch.Tensor, requested: torch.Tensor) -> dict:
    from gan.evaluation.features import ClassifierExtractor

    p = ClassifierExtractor(classifier, torch.device("cpu"))(images_u8)[1]
    pred, req = p.argmax(1), requested.numpy()
    per_class = {name: round(float((pred[req == c] == c).mean()), 4) for c, name in enumerate(CLASSES)}
    return {"conditional_accuracy": round(float((pred == req).mean()), 6), "conditional_accuracy_per_class": per_class}


def test_evaluate_reports_conditional_accuracy_per_class(data, ref):
    d = data
    m = evaluate(EVAL, d["generator"], _files(d), ref, d["root"] / "metrics.json", classes=CLASSES, device="cpu")
    assert 0.0 <= m["conditional_accuracy"] <= 1.0
    per_class = m["conditional_accuracy_per_class"]
    assert list(per_class) == CLASSES and all(0.0 <= v <= 1.0 for v in per_class.values())  # n=40: each asked 10×
    assert json.loads((d["root"] / "metrics.json").read_text()) == m
    row = [r for r in summary_rows(m) if r["metric"] == "requested class recognised (conditional G)"]
    assert row == [{"metric": "requested class recognised (conditional G)",
                    "value": f"{m['conditional_accuracy']:.1%}",
                    "floor": f"{m['classifier_test_accuracy']:.1%} (classifier accuracy)"}]  # fmt: skip
    # the same by hand: the images evaluate draws, the classifier's predictions, the requested classes
    G, _ = load_generator(d["generator"])
    requested = requested_labels(40, K)
    fake = torch.cat([to_uint8(b) for b in sample_batches(G, 40, EVAL.seed, EVAL.batch_size)])
    hand = _by_hand(d["classifier"], fake, requested)
    assert {k: m[k] for k in hand} == hand
    # score_images with `requested` reports the same; without it, nothing conditional
    s = score_images(fake, EVAL, _files(d), ref, CLASSES, "cpu", requested=requested)
    assert {k: s[k] for k in hand} == hand
    plain = score_images(fake, EVAL, _files(d), ref, CLASSES, "cpu")
    assert "conditional_accuracy" not in plain and "conditional_accuracy_per_class" not in plain
    assert "conditional_accuracy" not in plain.get("not_applicable", {})


def test_each_image_is_scored_against_the_class_it_was_asked_for(data, ref, monkeypatch):
    import gan.evaluation.evaluate as ge

    d = data
    # real test images, asked for as their true class, then as the next class: two different accuracies, by hand
    test = np.load(d["test"])
    images, labels = torch.from_numpy(test["images"][:40]), torch.from_numpy(test["labels"][:40])
    for requested in (labels, (labels + 1) % K):
        s = score_images(images, EVAL, _files(d), ref, CLASSES, "cpu", requested=requested)
        hand = _by_hand(d["classifier"], images, requested)
        assert {k: s[k] for k in hand} == hand
    # evaluate with a G that draws what it is asked for: the images and the requested classes stay paired
    monkeypatch.setattr(ge, "load_generator", lambda path, device="cpu": (_BandG().eval(), COND))
    m = evaluate(EVAL, d["generator"], _files(d), ref, d["root"] / "band.json", classes=CLASSES, device="cpu")
    requested = requested_labels(40, K)
    z = torch.randn(40, COND.z_dim, generator=torch.Generator().manual_seed(EVAL.seed))
    hand = _by_hand(d["classifier"], to_uint8(_BandG()(z, requested)), requested)
    assert {k: m[k] for k in hand} == hand and m["conditional_accuracy"] > 0.25  # better than chance


def test_without_a_classifier_conditional_accuracy_is_not_applicable(data):
    """The classifier stage left its no-classifier marker: the judge scores, conditional accuracy is listed as not
    applicable with the classifier's reason."""
    d = data
    marker = d["root"] / "no-classifier.pt"
    torch.save({"num_classes": 0, "image_shape": list(SHAPE), "reason": "no labels here"}, marker)
    cfg = EVAL.model_copy(update={"extractors": ["classifier", "judge"]})
    ref = d["root"] / "ref-marker"
    build_reference(cfg, _files(d, marker), d["train"], d["test"], ref, device="cpu")
    m = evaluate(cfg, d["generator"], _files(d, marker), ref, d["root"] / "m2.json", classes=CLASSES, device="cpu")
    na = m["not_applicable"]
    assert "conditional_accuracy" not in m and "fid_judge" in m
    assert "no labels here" in na["classifier"] and na["conditional_accuracy"] == na["classifier"]
    # an unconditional G on the same reference: nothing conditional is listed
    save_generator(d["root"] / "g0.pt", build_generator(UNCOND, SHAPE), UNCOND, {})
    m0 = evaluate(cfg, d["root"] / "g0.pt", _files(d, marker), ref, d["root"] / "m3.json", CLASSES, device="cpu")
    assert "conditional_accuracy" not in m0["not_applicable"]


def test_judge_only_extractors_list_conditional_accuracy_as_not_applicable(data):
    d = data
    cfg = EVAL.model_copy(update={"extractors": ["judge"]})
    ref = d["root"] / "ref-judge"
    build_reference(cfg, _files(d), d["train"], d["test"], ref, device="cpu")
    m = evaluate(cfg, d["generator"], _files(d), ref, d["root"] / "m4.json", classes=CLASSES, device="cpu")
    assert "conditional_accuracy" not in m and "fid_judge" in m
    assert "conditional_accuracy" in m.get("not_applicable", {})


# --- 4. export ---


def test_torchscript_of_a_conditional_g_takes_z_and_y(tmp_path):
    G = _conditional_g()
    path = tmp_path / "g.torchscript.pt"
    export_torchscript(G, path)
    ts = torch.jit.load(path)
    z, y = torch.randn(6, COND.z_dim), torch.tensor([0, 1, 2, 3, 3, 1])
    with torch.no_grad():
        out = ts(z, y)
        assert out.shape == (6, *SHAPE) and torch.equal(out, G.eval()(z, y))
        assert not torch.equal(ts(z, torch.zeros(6, dtype=torch.long)), out)  # y changes the images
    with pytest.raises(RuntimeError):  # y is an input of the traced module
        ts(z)


def test_model_card_usage_line_of_a_conditional_g():
    summary = {"dataset": "fashion_mnist", "classes": CLASSES, "shape": list(SHAPE)}
    line = f"images = G(torch.randn(16, {COND.z_dim}), torch.arange(16) % {K})"
    card = model_card(Params(model=COND), {"n": 10}, summary, {}, "abc")
    assert f"{line}  # 16×1×28×28 in [-1, 1], classes 0, 1, ..., {K - 1}" in card.splitlines()
    plain = model_card(Params(model=UNCOND), {"n": 10}, summary, {}, "abc")
    assert f"images = G(torch.randn(16, {COND.z_dim}))  # 16×1×28×28 in [-1, 1]" in plain.splitlines()
    assert "torch.arange" not in plain
    # the card says when D overfitted (the train summary's sentence)
    note = "D won outright from step 1200 (...)"
    assert f"- D's overfitting: {note}" in model_card(Params(model=UNCOND), {"n": 10}, summary, {"overfitting": note},
                                                      "abc").splitlines()  # fmt: skip


def test_export_of_a_conditional_g(data, tmp_path, monkeypatch):
    import gan.outputs.export as ge

    d = data
    (tmp_path / "metrics.json").write_text(json.dumps({"n": 10}))
    (tmp_path / "summary.json").write_text(json.dumps({"dataset": "fashion_mnist", "classes": CLASSES}))
    (tmp_path / "train.json").write_text(json.dumps({"steps": 1, "epochs": 1}))
    drawn = {}

    def capture(images_u8, rows, classes, per_class, path):
        drawn.update(images=images_u8, rows=rows, classes=classes)
        return [per_class] * len(classes)

    monkeypatch.setattr(ge, "class_grid", capture)
    monkeypatch.setattr(ge, "CLASS_GRID_DRAWS", 40)
    p = Params(model=COND, export=ExportConfig(n_png=2, n_npz=5))
    out = tmp_path / "samples"
    r = export(p.export, p, d["generator"], tmp_path / "metrics.json", tmp_path / "summary.json",
               tmp_path / "train.json", out, classifier_path=d["classifier"])  # fmt: skip
    with Image.open(out / "grid.png") as im:  # one row of 8 per class (save_image: nrow 8, padding 2)
        assert im.size == (8 * (28 + 2) + 2, K * (28 + 2) + 2)
        grid = np.asarray(im)
    G, _ = load_generator(d["generator"])
    rows = torch.arange(K).repeat_interleave(8)  # row c: eight images asked for class c
    with torch.no_grad():
        z = torch.randn(8 * K, COND.z_dim, generator=torch.Generator().manual_seed(p.export.seed))
        save_image(G(z, rows), tmp_path / "expected.png", nrow=8, normalize=True, value_range=(-1, 1))
    with Image.open(tmp_path / "expected.png") as im:
        assert np.array_equal(grid, np.asarray(im))
    # class_grid.png: rows are the classes asked for, and row c's images were made asking for class c
    assert "class_grid" in r and drawn["classes"] == CLASSES
    assert np.array_equal(drawn["rows"], requested_labels(40, K).numpy())
    gen = torch.Generator().manual_seed(p.export.seed + 3)
    with torch.no_grad():
        expected = to_uint8(G(torch.randn(40, COND.z_dim, generator=gen), requested_labels(40, K)).clamp(-1, 1))
    assert torch.equal(drawn["images"], expected)
    ts = torch.jit.load(out / "generator.torchscript.pt")
    z, y = torch.randn(3, COND.z_dim), torch.tensor([2, 0, 1])
    with torch.no_grad():
        assert torch.equal(ts(z, y), G(z, y))
    assert f"torch.arange(16) % {K})" in (out / "MODEL_CARD.md").read_text()
