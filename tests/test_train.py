import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gan.core.config import ModelConfig, TrainConfig
from gan.training.losses import LOSSES, d_loss, g_loss
from gan.training.models import build_discriminator, build_generator, load_generator
from gan.training.step import GanStep, StepParts
from gan.training.train import TrainOutputs, load_checkpoint, train

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
    # 8-step epochs: grids every ceil(200 / 8) epochs, and at the end
    assert sorted(p.name for p in (out.log_dir / "samples").iterdir()) == ["epoch_002.png"]
    G, cfg = load_generator(out.generator)
    assert cfg == MODEL and G(torch.randn(3, 16)).shape == (3, 1, 28, 28)
    summary = json.loads((out.log_dir / "summary.json").read_text())
    assert summary["steps"] == 16 and summary["images_per_second"] > 0
    assert (summary["steps_planned"], summary["kimg"], summary["stop"]) == (16, 0.5, "stopped: length reached")
    assert summary["length"] == "train.epochs = 2" and summary["probe"] == "off (no quality probe)"


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
    """The default step skips D's weight gradients in G's step: same weights as the textbook loop, bit for bit."""
    params, d_grads, textbook_d_step_grads = [], [], []
    for textbook in (True, False):
        torch.manual_seed(0)
        cfg = MODEL.model_copy(update={"arch": arch})
        G, D = build_generator(cfg, (1, 28, 28)), build_discriminator(cfg, (1, 28, 28))
        opt_g, opt_d = torch.optim.Adam(G.parameters(), 1e-3), torch.optim.Adam(D.parameters(), 5e-4)
        gen = torch.Generator().manual_seed(1)
        for _ in range(4):
            x = torch.rand(16, 1, 28, 28, generator=gen) * 2 - 1
            z = torch.randn(16, cfg.z_dim, generator=gen)
            if textbook:
                _textbook_step(G, D, opt_g, opt_d, x, z, textbook_d_step_grads)
            else:
                GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator())(x[None], z[None])
        params.append([p.detach().clone() for p in (*G.parameters(), *D.parameters())])
        d_grads.append([p.grad.clone() for p in D.parameters()])
    for a, b in zip(*params, strict=True):
        assert torch.equal(a, b)
    # D's gradients after the step are its own step's; the textbook loop added G's step on top of them
    assert all(torch.equal(a, b) for a, b in zip(d_grads[1], textbook_d_step_grads, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(d_grads[0], textbook_d_step_grads, strict=True))


def _float64(module: torch.nn.Module) -> torch.nn.Module:
    """The module in float64, casting its inputs to it (the trainer feeds it float32 images and noise)."""
    module.double().register_forward_pre_hook(lambda _, args: tuple(a.double() for a in args))
    return module


def _max_difference(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.slow
def test_compiled_training_matches_eager(tiny_split, tmp_path, monkeypatch):
    """train.compile=True runs G and D through torch.compile and lands on eager training's weights, up to rounding.

    "Up to rounding" is a multiple of a drift measured here: eager training with every real image
    one ulp off. In float64: two float32 runs part now and then (one ulp flips a near-zero
    activation and the weights differ by 1e-5..1e-4 a step later) at a step that depends on the
    kernels -- compiled vs eager at step 7 with AVX2 kernels, at step 25 with AVX-512 -- so a
    float32 tolerance passes or fails by CPU model. Float64 rounds 1e9 times finer: no such step,
    the same drift on every CPU. What our code decides (which modules are compiled, the step
    through them, BatchNorm buffers, the saved module) is the same in both dtypes.
    """
    import gan.training.train as gt

    monkeypatch.setattr(gt, "build_generator", lambda cfg, shape, k=0: _float64(build_generator(cfg, shape, k)))
    monkeypatch.setattr(gt, "build_discriminator", lambda cfg, shape, k=0: _float64(build_discriminator(cfg, shape, k)))
    cfg = CFG.model_copy(update={"epochs": 1, "checkpoint_every": 0})
    eager = train(MODEL, cfg, tiny_split, outputs(tmp_path / "eager"), progress_bar=False)
    compiled = train(MODEL, cfg.model_copy(update={"compile": True}), tiny_split, outputs(tmp_path / "compiled"),
                     progress_bar=False)  # fmt: skip
    from_uint8, up = gt.from_uint8, torch.tensor(float("inf"), dtype=torch.float64)
    monkeypatch.setattr(gt, "from_uint8", lambda images: torch.nextafter(from_uint8(images).double(), up))
    train(MODEL, cfg, tiny_split, outputs(tmp_path / "ulp"), progress_bar=False)
    assert compiled.steps == eager.steps == 256 // 32
    a, b = weights(tmp_path / "eager/generator.pt"), weights(tmp_path / "compiled/generator.pt")
    assert a.keys() == b.keys() and a["net.0.weight"].dtype == b["net.0.weight"].dtype == torch.float64
    drift, reference = _max_difference(b, a), _max_difference(weights(tmp_path / "ulp/generator.pt"), a)
    # Measured: drift 2.2e-16, reference 1.5e-16, with AVX-512 and AVX2 kernels alike. k = 100 leaves room for
    # kernels that round more often; what is not rounding moves the weights by 1e-8 or more, 10^6 times the bound
    # (measured: G's output through float32 1.2e-8, lr_g off by 1 ppm 1.3e-8, BatchNorm momentum off by 1 ppm
    # 3.8e-7, BatchNorm buffers frozen 0.57). `ulp`, one ulp of the largest weight, in case the reference is 0.
    ulp = torch.finfo(torch.float64).eps * max(v.abs().max().item() for v in a.values() if v.is_floating_point())
    assert drift <= 100 * reference + ulp, f"compiled vs eager: {drift:.1e}; eager, inputs one ulp off: {reference:.1e}"
    # the saved generator is the plain module (no torch.compile wrapper prefixes)
    assert not any(k.startswith("_orig_mod") for k in b)


def test_cuda_graph_setting_is_eager_and_identical_off_cuda(tiny_split, tmp_path, caplog):
    """train.cuda_graph only applies to single-process CUDA training; elsewhere it says so and trains eagerly."""
    cfg = CFG.model_copy(update={"epochs": 1, "checkpoint_every": 0})
    train(MODEL, cfg, tiny_split, outputs(tmp_path / "eager"), progress_bar=False)
    with caplog.at_level("INFO", logger="gan.training.train"):
        train(
            MODEL, cfg.model_copy(update={"cuda_graph": True}), tiny_split, outputs(tmp_path / "g"), progress_bar=False
        )
    assert "train.cuda_graph applies to single-process CUDA training" in caplog.text
    assert_identical(weights(tmp_path / "eager/generator.pt"), weights(tmp_path / "g/generator.pt"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_cuda_graph_step_replays_the_eager_update():
    """CudaGraphStep (3 eager warm-up steps, capture, replays) lands where eager steps with capturable Adam do.

    In float64, with the bound measured as in test_compiled_training_matches_eager: float32 runs of
    two code paths part at a step that depends on the kernels (and TF32), so a fixed float32
    tolerance would pass or fail by GPU model.
    """
    from gan.training.step import CudaGraphStep

    def run(graphed: bool, nudge: bool = False) -> dict:
        torch.manual_seed(0)
        G, D = (
            build_generator(MODEL, (1, 28, 28)).cuda().double(),
            build_discriminator(MODEL, (1, 28, 28)).cuda().double(),
        )
        opt_g = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        opt_d = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999), capturable=True)
        eager = GanStep(G, D, opt_g, opt_d, StepParts(LOSSES["ns"]), torch.Generator(device="cuda"))
        step = CudaGraphStep(eager) if graphed else eager
        gen = torch.Generator(device="cuda").manual_seed(1)
        up = torch.tensor(float("inf"), dtype=torch.float64, device="cuda")
        for _ in range(8):  # 3 warm-up steps, the captured step, 4 replays
            x = torch.rand(16, 1, 28, 28, device="cuda", generator=gen, dtype=torch.float64) * 2 - 1
            z = torch.randn(16, MODEL.z_dim, device="cuda", generator=gen, dtype=torch.float64)
            step((torch.nextafter(x, up) if nudge else x)[None], z[None])
        return {k: v.detach().cpu() for k, v in G.state_dict().items()}

    graphed, eager, nudged = run(True), run(False), run(False, nudge=True)
    drift, reference = _max_difference(graphed, eager), _max_difference(nudged, eager)
    ulp = torch.finfo(torch.float64).eps * max(v.abs().max().item() for v in eager.values() if v.is_floating_point())
    assert drift <= 100 * reference + ulp, f"graph vs eager: {drift:.1e}; eager, inputs one ulp off: {reference:.1e}"


class _StopAtProcessGroup(Exception):
    pass


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("cuda", [("set_device", torch.device("cuda", 1)), ("init_process_group", "nccl")]),
        ("cuda:0", [("set_device", torch.device("cuda", 1)), ("init_process_group", "nccl")]),
        ("cpu", [("init_process_group", "gloo")]),
    ],
)
def test_ddp_rank_takes_its_local_gpu_before_the_process_group_starts(configured, expected, tiny_split, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    """Under torchrun, LOCAL_RANK=1 trains on cuda:1 whatever index train.device gives, and makes it the current
    device *before* NCCL starts: otherwise every rank's object collectives (the checkpoint's all_gather_object)
    run on cuda:0. No GPU needed: CUDA and the process group are stand-ins that record the calls."""
    calls = []
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", torch.device(d))))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)

    def init_process_group(backend, **_):
        calls.append(("init_process_group", backend))
        raise _StopAtProcessGroup  # train() goes no further without a real group

    monkeypatch.setattr(torch.distributed, "init_process_group", init_process_group)
    with pytest.raises(_StopAtProcessGroup):
        train(MODEL, CFG.model_copy(update={"device": configured}), tiny_split, outputs(tmp_path), progress_bar=False)
    assert calls == expected

    # ...and the device train() then trains on is that rank's GPU.
    from gan.training.train import _init_distributed

    monkeypatch.setattr(torch.distributed, "init_process_group", lambda backend, **_: None)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    device = torch.device("cpu" if configured == "cpu" else "cuda:1")
    assert _init_distributed(torch.device(configured)) == (device, 2, 1, True)


def test_summary_and_model_card_report_the_epochs_trained(tiny_split, tmp_path):
    """With train.max_seconds, the summary and the card give the epochs trained, not train.epochs."""
    from gan.core.config import Params
    from gan.outputs.export import model_card

    def card(summary: dict) -> str:
        return model_card(Params(), {}, {}, summary, code="test")

    def summary(out: TrainOutputs) -> dict:
        return json.loads((out.log_dir / "summary.json").read_text())

    full = outputs(tmp_path / "full")
    train(MODEL, CFG.model_copy(update={"epochs": 1}), tiny_split, full, progress_bar=False)
    s = summary(full)
    assert (s["epochs"], s["epochs_planned"], s["stopped_by_time_budget"]) == (1, 1, False)
    assert (
        "- length: 8 steps of 8 planned (train.epochs = 1), 0.3 kimg shown to D, epochs: 1; stopped: length "
        "reached\n- wall time:"
    ) in card(s)

    budget = outputs(tmp_path / "budget")
    r = train(MODEL, CFG.model_copy(update={"epochs": 1000, "max_seconds": 1.0}), tiny_split, budget,
              progress_bar=False)  # fmt: skip
    s = summary(budget)
    assert 0 < r.steps < 1000 * 8
    assert r.steps / 8 - 0.01 < s["epochs"] <= r.steps / 8  # 8 steps per epoch; never rounded up
    assert (s["epochs_planned"], s["stopped_by_time_budget"]) == (1000, True)
    assert (
        f"- length: {r.steps} steps of 8000 planned (train.epochs = 1000), {s['kimg']:g} kimg shown to D, "
        f"epochs: {s['epochs']:g}; stopped: time budget (train.max_seconds)"
    ) in card(s)


# Every part of the algorithm at once, in two groups that cannot share a run (hinge vs wgan-gp).
PART_COMBOS = {
    "hinge+sn+ema+ada-diffaugment+lazy-r1": (
        MODEL.model_copy(update={"spectral_norm": True}),
        CFG.model_copy(
            update={
                "loss": "hinge",
                "ema_decay": 0.9,
                "augment": "color,translation,cutout",
                "r1_gamma": 1.0,
                "r1_every": 3,
                "ada_target": 0.6,  # adaptive augmentation: p and its signal must survive the interruption
                "ada_kimg": 0.5,
            }
        ),  # fmt: skip
    ),
    "wgan-gp+d_steps+conditional-resnet": (
        ModelConfig(arch="resnet", channels=8, z_dim=16, spectral_norm=True, conditional=True),
        CFG.model_copy(update={"loss": "wgan-gp", "d_steps": 2, "ema_decay": 0.5, "batch_size": 16}),
    ),
}


def test_adaptive_augmentation_moves_p_with_ds_overfitting_signal(tiny_split, tmp_path):
    """ADA: p starts at 0 and moves by batch × 4 / (ada_kimg × 1000) every 4 steps, up while E[sign(D(real))] is
    above the target, down (not below 0) while under; logged per step."""
    from gan.outputs.pictures import read_tsv_columns

    cfg = CFG.model_copy(update={"augment": "translation", "ada_target": 0.6, "ada_kimg": 0.64})  # 0.2 a move
    out = outputs(tmp_path)
    train(MODEL, cfg, tiny_split, out, progress_bar=False)
    log = read_tsv_columns(out.log_dir / "log.tsv")
    p, signs = log["augment_p"], log["real_sign"]
    assert (p[:3] == 0).all() and set(np.round(p, 6)) <= {0.0, 0.2, 0.4, 0.6, 0.8, 1.0}
    for k in range(3, len(p) - 4, 4):  # after each 4th step: the move the last 4 signs ask for
        expected = np.clip(p[k - 4] + 0.2 * np.sign(signs[k - 3 : k + 1].mean() - 0.6), 0, 1) if k >= 4 else None
        if expected is not None:
            assert p[k] == pytest.approx(expected, abs=1e-6), (k, p, signs)
    assert p.max() > 0, "D on 256 images should look overfitted at least once"
    # the summary (and so the model card) says when D overfitted and how far ADA raised p
    summary = json.loads((out.log_dir / "summary.json").read_text())
    assert summary["overfitting"].startswith("D overfitted from step ")
    assert f"ADA raised p to {p.max():.2f}" in summary["overfitting"]


def test_the_overfitting_note_reads_when_d_won_or_overfitted():
    """Without ADA: D wins outright where mean σ(D(real)) ≥ 0.95 and σ(D(fake)) ≤ 0.05 over 100 steps; with ADA:
    where r_t over 100 steps passes the target. From the first step that window ends at."""
    from gan.training.overfitting import overfitting_note

    step = np.arange(1, 401, dtype=float)
    late = step > 250  # D wins from step 251
    cols = {"step": step, "d_real": np.where(late, 0.99, 0.7), "d_fake": np.where(late, 0.01, 0.3)}
    note = overfitting_note(cols, ada_target=0.0)
    assert note.startswith("D won outright from step 337 ")  # 87 of the 100 steps at 0.99/0.01
    assert "train.ada_target" in note
    cols["d_fake"] = np.full(400, 0.3)  # real images sure, fakes not: not outright
    assert overfitting_note(cols, 0.0).startswith("D did not win outright")
    ada = {"step": step, "real_sign": np.where(late, 0.9, 0.2), "augment_p": np.where(late, 0.3, 0.0)}
    assert overfitting_note(ada, 0.6).startswith("D overfitted from step 308 ")  # (42·0.2 + 58·0.9)/100 > 0.6
    assert "ADA raised p to 0.30 (0.30 at the end)" in overfitting_note(ada, 0.6)
    ada["real_sign"] = np.full(400, 0.5)
    assert overfitting_note(ada, 0.6).startswith("D did not overfit")


@pytest.mark.parametrize("combo", list(PART_COMBOS))
def test_every_part_trains_deterministically_and_resumes_bit_identically(combo, tiny_split, tmp_path):
    model_cfg, cfg = PART_COMBOS[combo]
    torch.set_num_threads(1)
    full = outputs(tmp_path / "full")
    r = train(model_cfg, cfg, tiny_split, full, progress_bar=False)
    steps_per_epoch = 256 // (cfg.batch_size * cfg.d_steps)
    assert r.steps == 2 * steps_per_epoch
    crash_step = steps_per_epoch + 2

    def crash(stats):
        if stats["step"] == crash_step:
            raise Interrupt

    out = outputs(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train(model_cfg, cfg, tiny_split, out, on_progress=crash, progress_bar=False)
    resumed = train(model_cfg, cfg, tiny_split, out, progress_bar=False)
    assert 0 < resumed.resumed_from_step < crash_step
    assert_identical(weights(full.generator), weights(out.generator))
    assert_identical(weights(full.log_dir / "generator_raw.pt"), weights(out.log_dir / "generator_raw.pt"))
    assert (full.log_dir / "log.tsv").read_text() == (out.log_dir / "log.tsv").read_text()
    header = (out.log_dir / "log.tsv").read_text().splitlines()[0].split("\t")
    extra = ["r1", "augment_p", "real_sign"] if cfg.r1_gamma else ["gp"]
    assert header == ["step", "epoch", "loss_d", "loss_g", "d_real", "d_fake", *extra]


def test_ema_generator_is_the_saved_one_and_the_raw_one_stays_available(tiny_split, tmp_path):
    out = outputs(tmp_path)
    cfg = CFG.model_copy(update={"epochs": 1, "ema_decay": 0.8})
    train(MODEL, cfg, tiny_split, out, progress_bar=False)
    ema, raw = weights(out.generator), weights(out.log_dir / "generator_raw.pt")
    ckpt = load_checkpoint(out.checkpoint_dir / "last.pt")
    assert_identical(raw, ckpt["G"])
    assert_identical(ema, ckpt["G_ema"]["module"])
    assert not torch.equal(ema["net.0.weight"], raw["net.0.weight"])
    assert torch.load(out.generator, weights_only=True)["meta"]["ema_decay"] == 0.8
    # Turning EMA off again removes the stale raw copy: generator.pt is then the only G.
    train(MODEL, cfg.model_copy(update={"ema_decay": 0.0}), tiny_split, out, progress_bar=False)
    assert not (out.log_dir / "generator_raw.pt").exists()


def test_parts_that_cannot_run_are_refused_with_the_reason(tiny_split, tmp_path):
    from gan.core.config import ConfigError
    from gan.core.splits import UNLABELED

    unlabeled = tmp_path / "unlabeled.npz"
    with np.load(tiny_split) as z:
        np.savez(unlabeled, images=z["images"], labels=np.full(len(z["labels"]), UNLABELED))
    conditional = MODEL.model_copy(update={"conditional": True})
    with pytest.raises(ConfigError, match="model.conditional = true, but .* has no class labels"):
        train(conditional, CFG, unlabeled, outputs(tmp_path / "u"), progress_bar=False)
    with pytest.raises(ConfigError, match=r"train.d_steps = 20 × train.batch_size = 32 needs 640 images"):
        train(MODEL, CFG.model_copy(update={"d_steps": 20}), tiny_split, outputs(tmp_path / "d"), progress_bar=False)


class ScriptedProbe:
    """A quality probe whose score is scripted by step; records the G it saw (a copy of its weights)."""

    def __init__(self, scores: dict[int, float]):
        self.scores, self.seen = scores, {}
        self.step = 0

    def __call__(self, G: torch.nn.Module) -> float:
        return self.scores[self.step]


def _probe_at_steps(monkeypatch, probe: ScriptedProbe) -> None:
    """Tell the scripted probe which step it is scoring (QualityTracker.record is called with the step)."""
    import gan.training.train as gt

    record = gt.QualityTracker.record

    def tracked(self, step, G):
        probe.step = step
        probe.seen[step] = {k: v.detach().clone() for k, v in G.state_dict().items()}
        return record(self, step, G)

    monkeypatch.setattr(gt.QualityTracker, "record", tracked)


def test_keep_best_keeps_the_best_scoring_snapshot_and_logs_every_score(tiny_split, tmp_path, monkeypatch):
    scores = {5: 50.0, 10: 20.0, 15: 30.0, 16: 40.0}  # 16 steps; every 5, and the final G
    probe = ScriptedProbe(scores)
    _probe_at_steps(monkeypatch, probe)
    out = outputs(tmp_path)
    cfg = CFG.model_copy(update={"eval_every": 5, "keep": "best"})
    r = train(MODEL, cfg, tiny_split, out, progress_bar=False, probe=probe)
    assert sorted(probe.seen) == [5, 10, 15, 16]
    assert r.kept == {"generator": "best", "step": 10, "fd": 20.0, "extractor": None}
    assert_identical(weights(out.generator), probe.seen[10])
    assert (out.log_dir / "quality.tsv").read_text().splitlines() == [
        "step\tfd", "5\t50.000000", "10\t20.000000", "15\t30.000000", "16\t40.000000"]  # fmt: skip
    assert torch.load(out.generator, weights_only=True)["meta"]["kept"]["step"] == 10
    # Scoring changes nothing in training: the last G is the one a run without scores makes.
    last = outputs(tmp_path / "last")
    train(MODEL, cfg.model_copy(update={"keep": "last"}), tiny_split, last, progress_bar=False, probe=probe)
    plain = outputs(tmp_path / "plain")
    train(MODEL, CFG, tiny_split, plain, progress_bar=False)
    assert_identical(weights(last.generator), weights(plain.generator))
    assert not torch.equal(weights(out.generator)["net.0.weight"], weights(plain.generator)["net.0.weight"])


def test_the_best_snapshot_survives_an_interruption(tiny_split, tmp_path, monkeypatch):
    scores = {4: 9.0, 8: 1.0, 12: 5.0, 16: 7.0}  # the best is before the crash; resuming must not lose it
    probe = ScriptedProbe(scores)
    _probe_at_steps(monkeypatch, probe)
    cfg = CFG.model_copy(update={"eval_every": 4, "keep": "best", "checkpoint_every": 5})
    full = outputs(tmp_path / "full")
    train(MODEL, cfg, tiny_split, full, progress_bar=False, probe=probe)

    def crash_at_14(stats):
        if stats["step"] == 14:
            raise Interrupt

    out = outputs(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train(MODEL, cfg, tiny_split, out, on_progress=crash_at_14, progress_bar=False, probe=probe)
    r = train(MODEL, cfg, tiny_split, out, progress_bar=False, probe=probe)
    assert r.resumed_from_step == 10 and r.kept["step"] == 8
    assert_identical(weights(full.generator), weights(out.generator))
    assert (full.log_dir / "quality.tsv").read_text() == (out.log_dir / "quality.tsv").read_text()


PATIENT = CFG.model_copy(update={"eval_every": 4, "keep": "best", "patience": 2, "min_delta": 0.02,
                                 "checkpoint_every": 5})  # fmt: skip
PATIENCE_SCORES = {4: 10.0, 8: 9.9, 12: 9.95, 16: 5.0}  # 9.9 is better, but not by 2 %: two scores without


def test_patience_stops_the_run_and_keeps_the_best(tiny_split, tmp_path, monkeypatch):
    probe = ScriptedProbe(PATIENCE_SCORES)
    _probe_at_steps(monkeypatch, probe)
    out = outputs(tmp_path)
    r = train(MODEL, PATIENT, tiny_split, out, progress_bar=False, probe=probe)
    assert (r.steps, r.steps_planned, r.stop) == (12, 16, "stopped: no improvement since step 4")
    assert r.kept["step"] == 8  # the best score, though not a 2 % improvement
    assert_identical(weights(out.generator), probe.seen[8])
    summary = json.loads((out.log_dir / "summary.json").read_text())
    assert summary["stop"] == r.stop and summary["probe"] == "probe every 4 steps"
    # without patience the same scores train to the planned length
    full = train(MODEL, PATIENT.model_copy(update={"patience": 0}), tiny_split, outputs(tmp_path / "all"),
                 progress_bar=False, probe=probe)  # fmt: skip
    assert (full.steps, full.stop, full.kept["step"]) == (16, "stopped: length reached", 16)


def test_patience_survives_an_interruption(tiny_split, tmp_path, monkeypatch):
    """The patience count is in the checkpoint: a run resumed after step 10 stops at step 12, as the whole run does,
    with the same generator, scores and log."""
    probe = ScriptedProbe(PATIENCE_SCORES)
    _probe_at_steps(monkeypatch, probe)
    full = outputs(tmp_path / "full")
    train(MODEL, PATIENT, tiny_split, full, progress_bar=False, probe=probe)

    def crash_at_11(stats):
        if stats["step"] == 11:
            raise Interrupt

    out = outputs(tmp_path / "resumed")
    with pytest.raises(Interrupt):
        train(MODEL, PATIENT, tiny_split, out, on_progress=crash_at_11, progress_bar=False, probe=probe)
    assert load_checkpoint(out.checkpoint_dir / "last.pt")["best"]["since"] == 1
    r = train(MODEL, PATIENT, tiny_split, out, progress_bar=False, probe=probe)
    assert (r.resumed_from_step, r.steps, r.stop) == (10, 12, "stopped: no improvement since step 4")
    assert_identical(weights(full.generator), weights(out.generator))
    for name in ("quality.tsv", "log.tsv"):
        assert (full.log_dir / name).read_text() == (out.log_dir / name).read_text()
    # run again after the stop: nothing more is trained
    again = train(MODEL, PATIENT, tiny_split, out, progress_bar=False, probe=probe)
    assert (again.resumed_from_step, again.steps) == (12, 12)


def test_length_in_kimg_and_the_auto_plan(tiny_split, tmp_path):
    from gan.core.length import auto_kimg, plan

    r = train(MODEL, CFG.model_copy(update={"epochs": 0, "kimg": 0.5}), tiny_split, outputs(tmp_path),
              progress_bar=False)  # fmt: skip
    assert (r.steps, r.kimg, r.length) == (16, 0.5, "train.kimg = 0.5")  # 500 images / 32 a step = 15.6 -> 16
    assert auto_kimg((1, 28, 28)) == 300.0  # Fashion-MNIST's 5 epochs
    fashion = plan(TrainConfig(), 60_000, (1, 28, 28), 128)
    assert (fashion.steps, fashion.eval_every) == (2344, 118)
    small = plan(TrainConfig(), 3_000, (3, 32, 32), 128)
    assert small.steps > fashion.steps and small.epochs > 50  # a small folder trains longer than 5 epochs
    assert plan(TrainConfig(epochs=3), 3_000, (3, 32, 32), 128).steps == 3 * 23


def test_scoring_during_training_needs_a_probe(tiny_split, tmp_path):
    from gan.core.config import ConfigError

    with pytest.raises(ConfigError, match="train.eval_every > 0 needs a quality probe"):  # auto: runs without
        train(MODEL, CFG.model_copy(update={"eval_every": 5}), tiny_split, outputs(tmp_path), progress_bar=False)


def test_the_quality_probe_scores_g_on_fixed_noise_in_the_extractors_features():
    """QualityProbe: the FD of G's samples to the real statistics, on the same z every call, G's mode restored, the
    global RNG untouched; a conditional G is asked for every class equally often."""
    from gan.evaluation.metrics import feature_stats, frechet_distance
    from gan.evaluation.probe import QualityProbe

    def pooled(images_u8):  # a stand-in extractor: 4×4 average-pooled pixels
        x = torch.nn.functional.avg_pool2d(images_u8.float(), 7).flatten(1)
        return x.numpy().astype(np.float64), None

    real = torch.randint(0, 255, (200, 1, 28, 28), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mu, sigma = feature_stats(pooled(real)[0])
    probe = QualityProbe("pooled", pooled, mu, sigma, n=100, batch_size=40)
    torch.manual_seed(0)
    G = build_generator(MODEL, (1, 28, 28)).train()
    rng = torch.get_rng_state()
    first = probe(G)
    assert probe(G) == first and G.training and torch.equal(torch.get_rng_state(), rng)
    from gan.core.tensors import to_uint8
    from gan.evaluation.probe import PROBE_SEED
    from gan.training.sampling import sample_batches

    fake = torch.cat([to_uint8(b).cpu() for b in sample_batches(G, 100, PROBE_SEED, 40)])
    assert first == pytest.approx(frechet_distance(*feature_stats(pooled(fake)[0]), mu, sigma))
    cond = build_generator(MODEL.model_copy(update={"conditional": True}), (1, 28, 28), num_classes=4)
    asked = []
    cond.register_forward_pre_hook(lambda _, args: asked.append(args[1]))
    probe(cond)
    assert torch.equal(torch.cat(asked), torch.arange(100) % 4)
