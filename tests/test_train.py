import json
from functools import partial
from pathlib import Path

import pytest
import torch

from gan.config import ModelConfig, TrainConfig
from gan.losses import d_loss, g_loss
from gan.models import build_discriminator, build_generator
from gan.train import TrainOutputs, gan_step, load_checkpoint, load_generator, train

MODEL = ModelConfig(arch="dcgan", channels=8, z_dim=16)
CFG = TrainConfig(epochs=2, batch_size=32, checkpoint_every=5, log_flush_every=1, device="cpu")


def outputs(root: Path) -> TrainOutputs:
    return TrainOutputs(root / "generator.pt", root / "ckpt", root / "log")


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_same_params_give_bit_identical_weights(tiny_split, tmp_path):
    r1 = train(MODEL, CFG, tiny_split, outputs(tmp_path / "a"), progress_bar=False)
    train(MODEL, CFG, tiny_split, outputs(tmp_path / "b"), progress_bar=False)
    assert r1.steps == 2 * (256 // 32)
    assert_identical(weights(tmp_path / "a/generator.pt"), weights(tmp_path / "b/generator.pt"))
    other = train(MODEL, CFG.model_copy(update={"seed": 1}), tiny_split, outputs(tmp_path / "c"), progress_bar=False)
    assert other.steps == r1.steps
    assert not torch.equal(
        weights(tmp_path / "a/generator.pt")["net.0.weight"], weights(tmp_path / "c/generator.pt")["net.0.weight"]
    )


def test_outputs_log_samples_and_rebuildable_generator(tiny_split, tmp_path):
    out = outputs(tmp_path)
    train(MODEL, CFG, tiny_split, out, progress_bar=False)
    rows = (out.log_dir / "log.tsv").read_text().splitlines()
    assert rows[0].split("\t") == ["step", "epoch", "loss_d", "loss_g", "d_real", "d_fake"]
    assert [int(r.split("\t")[0]) for r in rows[1:]] == list(range(1, 17))
    assert sorted(p.name for p in (out.log_dir / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    G, cfg = load_generator(out.generator)
    assert cfg == MODEL and G(torch.randn(3, 16)).shape == (3, 1, 28, 28)
    summary = json.loads((out.log_dir / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["images_per_second"] > 0


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_bit_identically(tiny_split, tmp_path):
    train(MODEL, CFG, tiny_split, outputs(tmp_path / "full"), progress_bar=False)

    def crash_at_12(stats):
        if stats["step"] == 12:
            raise Interrupt

    out = outputs(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train(MODEL, CFG, tiny_split, out, on_progress=crash_at_12, progress_bar=False)
    ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
    assert (ckpt["step"], ckpt["epoch"], ckpt["batch"]) == (10, 1, 2)
    result = train(MODEL, CFG, tiny_split, out, progress_bar=False)
    assert result.resumed_from_step == 10 and result.steps == 16
    assert_identical(weights(tmp_path / "full/generator.pt"), weights(out.generator))
    steps = [int(r.split("\t")[0]) for r in (out.log_dir / "log.tsv").read_text().splitlines()[1:]]
    assert steps == list(range(1, 17))  # rows after the checkpoint were replayed, not duplicated
    assert (tmp_path / "full/log/log.tsv").read_text() == (out.log_dir / "log.tsv").read_text()


def test_checkpoint_from_other_settings_is_not_resumed(tiny_split, tmp_path):
    out = outputs(tmp_path)
    train(MODEL, CFG, tiny_split, out, progress_bar=False)
    r = train(MODEL, CFG.model_copy(update={"lr_g": 3e-3}), tiny_split, out, progress_bar=False)
    assert r.resumed_from_step == 0 and r.steps == 16
    # A finished checkpoint with the same settings resumes at the end: nothing is retrained.
    r = train(MODEL, CFG.model_copy(update={"lr_g": 3e-3}), tiny_split, out, progress_bar=False)
    assert r.resumed_from_step == 16


def test_time_budget_stops_early_and_saves_everything(tiny_split, tmp_path):
    out = outputs(tmp_path)
    r = train(MODEL, CFG.model_copy(update={"epochs": 1000, "max_seconds": 1.0}), tiny_split, out, progress_bar=False)
    assert 0 < r.steps < 1000 * 8 and r.seconds < 10
    assert out.generator.exists()
    assert load_checkpoint(out.checkpoint_dir / "last.pt")["step"] == r.steps


def _textbook_step(G, D, opt_g, opt_d, x, z, d_grads: list) -> None:
    """The loop everyone copies: G's backward also fills D's gradients, which the next D step discards."""
    fake = G(z)
    loss_d = d_loss(D(x), D(fake.detach()))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    d_grads[:] = [p.grad.clone() for p in D.parameters()]
    opt_d.step()
    loss_g = g_loss(D(fake))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()


@pytest.mark.parametrize("arch", ["dcgan", "mlp"])
def test_gan_step_is_the_textbook_update_without_wasted_d_gradients(arch):
    """gan_step skips D's weight gradients in G's step: same weights as the textbook loop, bit for bit."""
    params, d_grads, textbook_d_step_grads = [], [], []
    for textbook in (True, False):
        torch.manual_seed(0)
        cfg = MODEL.model_copy(update={"arch": arch})
        G, D = build_generator(cfg), build_discriminator(cfg)
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 5e-4)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.rand(16, 1, 28, 28, generator=gen) * 2 - 1
            z = torch.randn(16, cfg.z_dim, generator=gen)
            if textbook:
                _textbook_step(G, D, opt_g, opt_d, x, z, textbook_d_step_grads)
            else:
                gan_step(G, D, opt_g, opt_d, x, z)
        params.append([p.detach().clone() for p in (*G.parameters(), *D.parameters())])
        d_grads.append([p.grad.clone() for p in D.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)
    # D's gradients after gan_step are its own step's; the textbook loop added G's step on top of them
    assert all(torch.equal(a, b) for a, b in zip(d_grads[1], textbook_d_step_grads, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(d_grads[0], textbook_d_step_grads, strict=True))


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_split, tmp_path):
    """train.compile=True runs G and D through torch.compile and lands on (numerically) the same weights."""
    cfg = CFG.model_copy(update={"epochs": 1, "checkpoint_every": 0})
    eager = train(MODEL, cfg, tiny_split, outputs(tmp_path / "eager"), progress_bar=False)
    compiled = train(MODEL, cfg.model_copy(update={"compile": True}), tiny_split, outputs(tmp_path / "compiled"),
                     progress_bar=False)  # fmt: skip
    assert compiled.steps == eager.steps == 256 // 32
    a, b = weights(tmp_path / "eager/generator.pt"), weights(tmp_path / "compiled/generator.pt")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-3, atol=1e-4, msg=k)
    # the saved generator is the plain module (no torch.compile wrapper prefixes)
    assert not any(k.startswith("_orig_mod") for k in b)


def test_cuda_graph_setting_is_eager_and_identical_off_cuda(tiny_split, tmp_path, caplog):
    """train.cuda_graph only applies to single-process CUDA training; elsewhere it says so and trains eagerly."""
    cfg = CFG.model_copy(update={"epochs": 1, "checkpoint_every": 0})
    train(MODEL, cfg, tiny_split, outputs(tmp_path / "eager"), progress_bar=False)
    with caplog.at_level("INFO", logger="gan.train"):
        train(
            MODEL, cfg.model_copy(update={"cuda_graph": True}), tiny_split, outputs(tmp_path / "g"), progress_bar=False
        )
    assert "train.cuda_graph applies to single-process CUDA training" in caplog.text
    assert_identical(weights(tmp_path / "eager/generator.pt"), weights(tmp_path / "g/generator.pt"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_step_replays_the_eager_update():
    """CudaGraphStep (3 eager warm-up steps, capture, replays) lands where eager steps with capturable Adam do."""
    from gan.train import CudaGraphStep

    runs = []
    for graphed in (True, False):
        torch.manual_seed(0)
        G, D = build_generator(MODEL).cuda(), build_discriminator(MODEL).cuda()
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        step = CudaGraphStep(G, D, opt_g, opt_d, amp=False) if graphed else partial(gan_step, G, D, opt_g, opt_d)
        gen = torch.Generator(device="cuda").manual_seed(1)
        for _ in range(8):  # 3 warm-up steps, the captured step, 4 replays
            x = torch.rand(16, 1, 28, 28, device="cuda", generator=gen) * 2 - 1
            step(x, torch.randn(16, MODEL.z_dim, device="cuda", generator=gen))
        runs.append(G.state_dict())
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-4, atol=1e-5, msg=k)
