"""DiffAugment (gan.training.augment) against the authors' reference code, plus its contracts with the trainer and
ADA's gate in the training step (gan.training.step)."""

from __future__ import annotations

import pytest
import torch

from gan.core.config import AUGMENTS
from gan.training.augment import AUGMENT_FUNCTIONS, diff_augment, rand_saturation

ALL = AUGMENTS  # every policy, in the config's order

# The authors' DiffAugment_pytorch.py, verbatim, from mit-han-lab/data-efficient-gans at commit
# 0b6339510be1e3859d360cbf464d0a425514a6b4 (BSD-2-Clause, Copyright (c) 2020 Shengyu Zhao, Zhijian Liu, Ji Lin,
# Jun-Yan Zhu and Song Han). Kept as text and exec'd so that formatting cannot touch it; it draws from the global RNG.
REFERENCE_SOURCE = """\
# Differentiable Augmentation for Data-Efficient GAN Training
# Shengyu Zhao, Zhijian Liu, Ji Lin, Jun-Yan Zhu, and Song Han
# https://arxiv.org/pdf/2006.10738

import torch
import torch.nn.functional as F


def DiffAugment(x, policy='', channels_first=True):
    if policy:
        if not channels_first:
            x = x.permute(0, 3, 1, 2)
        for p in policy.split(','):
            for f in AUGMENT_FNS[p]:
                x = f(x)
        if not channels_first:
            x = x.permute(0, 2, 3, 1)
        x = x.contiguous()
    return x


def rand_brightness(x):
    x = x + (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) - 0.5)
    return x


def rand_saturation(x):
    x_mean = x.mean(dim=1, keepdim=True)
    x = (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) * 2) + x_mean
    return x


def rand_contrast(x):
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - x_mean) * (torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device) + 0.5) + x_mean
    return x


def rand_translation(x, ratio=0.125):
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device),
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    x = x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2).contiguous()
    return x


def rand_cutout(x, ratio=0.5):
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
        torch.arange(cutout_size[1], dtype=torch.long, device=x.device),
    )
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    x = x * mask.unsqueeze(1)
    return x


AUGMENT_FNS = {
    'color': [rand_brightness, rand_saturation, rand_contrast],
    'translation': [rand_translation],
    'cutout': [rand_cutout],
}
"""
REFERENCE: dict = {}
exec(compile(REFERENCE_SOURCE, "DiffAugment_pytorch.py", "exec"), REFERENCE)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
ignore_meshgrid_warning = pytest.mark.filterwarnings("ignore:torch.meshgrid")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the machine is shared


def images(shape: tuple[int, ...], seed: int = 123, device: str = "cpu") -> torch.Tensor:
    """A batch in [-1, 1] drawn from its own generator (never the global RNG)."""
    return torch.rand(shape, generator=torch.Generator(device).manual_seed(seed), device=device) * 2 - 1


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device).manual_seed(seed)


def reference(x: torch.Tensor, policies: tuple[str, ...], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's output after torch.manual_seed(seed), and the global RNG state it leaves (then restored)."""
    devices = [x.device] if x.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        out = REFERENCE["DiffAugment"](x, policy=",".join(policies))
        state = torch.cuda.get_rng_state(x.device) if x.is_cuda else torch.get_rng_state()
    return out, state


# 1. Against the reference ------------------------------------------------------------------------------------------


@ignore_meshgrid_warning
@pytest.mark.parametrize(
    "policies, shape",
    [
        (ALL, (8, 3, 32, 32)),
        (ALL, (8, 1, 28, 28)),
        (ALL, (4, 3, 64, 64)),
        (ALL, (6, 3, 30, 30)),  # odd cutout side (15): the reference's offset range shrinks by one
        (ALL, (3, 3, 27, 27)),  # odd side: shift int(3.375 + 0.5) = 3, cutout int(13.5 + 0.5) = 14
        (("color",), (8, 3, 32, 32)),
        (("color",), (8, 1, 28, 28)),
        (("translation",), (8, 3, 32, 32)),
        (("translation",), (8, 1, 28, 28)),
        (("cutout",), (8, 3, 32, 32)),
        (("cutout",), (8, 1, 28, 28)),
        (("cutout", "color"), (5, 3, 32, 32)),  # any order, as given
    ],
)
@pytest.mark.parametrize("seed", [0, 2024])
def test_matches_reference_with_the_same_random_stream(policies, shape, seed):
    x = images(shape, seed=seed + 1)
    want, global_state_after = reference(x, policies, seed)
    g = gen(seed)
    got = diff_augment(x, policies, g)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not torch.equal(got, x)
    # Same number, order, shapes and dtypes of draws: the generator ends where the global RNG did.
    assert torch.equal(g.get_state(), global_state_after)


@ignore_meshgrid_warning
def test_matches_reference_for_channels_last_and_float64():
    x = images((6, 3, 32, 32), seed=5)
    want, _ = reference(x, ALL, 11)
    got = diff_augment(x.to(memory_format=torch.channels_last), ALL, gen(11))
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    want64, _ = reference(x.double(), ALL, 12)
    torch.testing.assert_close(diff_augment(x.double(), ALL, gen(12)), want64, rtol=0, atol=1e-12)


# 2. Determinism ----------------------------------------------------------------------------------------------------


def test_same_seed_same_output_and_the_generator_advances():
    x = images((8, 3, 32, 32))
    a, b = gen(7), gen(7)
    first = diff_augment(x, ALL, a)
    assert torch.equal(first, diff_augment(x, ALL, b))
    checkpoint = a.get_state()
    second = diff_augment(x, ALL, a)
    assert not torch.equal(first, second)  # fresh draws on every call
    assert not torch.equal(checkpoint, a.get_state())
    resumed = gen(999)
    resumed.set_state(checkpoint)  # what the trainer does on resume
    assert torch.equal(diff_augment(x, ALL, resumed), second)


# 3. Gradients ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policies", [("color",), ("translation",), ("cutout",), ALL])
def test_differentiable_in_x(policies):
    x = images((2, 3, 8, 8), seed=3).double().requires_grad_()
    # Fixed draws (a fresh generator per call) make the augmentation a function of x alone: check its Jacobian.
    assert torch.autograd.gradcheck(lambda t: diff_augment(t, policies, gen(4)), (x,), fast_mode=True)
    weights = images((2, 3, 8, 8), seed=8).double()
    (diff_augment(x, policies, gen(4)) * weights).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_generator_gradient_flows_through_augmented_fakes():
    g_net = torch.nn.Sequential(torch.nn.Linear(4, 3 * 16 * 16), torch.nn.Tanh(), torch.nn.Unflatten(1, (3, 16, 16)))
    z = images((5, 4), seed=1)
    fake = g_net(z)
    diff_augment(fake, ALL, gen(2)).square().mean().backward()
    grads = [p.grad for p in g_net.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() and gr.abs().sum() > 0 for gr in grads)


# 4. What each policy does ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels, side", [(3, 32), (1, 28)])
def test_color_is_pixelwise_and_keeps_geometry(channels, side):
    x = images((8, channels, side, side), seed=21)
    perm = torch.randperm(side * side, generator=gen(0))

    def shuffle(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(2)[:, :, perm].view_as(t)

    out = diff_augment(x, ("color",), gen(9))
    assert not torch.allclose(out, x)
    # Colour acts on each pixel alone (plus per-image statistics): moving pixels first moves them the same way after.
    torch.testing.assert_close(diff_augment(shuffle(x), ("color",), gen(9)), shuffle(out), rtol=0, atol=1e-5)
    # ... while translation does not commute with a pixel shuffle.
    moved = diff_augment(shuffle(x), ("translation",), gen(9))
    assert not torch.allclose(moved, shuffle(diff_augment(x, ("translation",), gen(9))))


def test_saturation_is_a_valid_no_op_on_grey_and_still_draws():
    grey, rgb = images((4, 1, 28, 28)), images((4, 3, 28, 28))
    g = gen(3)
    state = g.get_state()
    torch.testing.assert_close(rand_saturation(grey, g), grey, rtol=0, atol=0)
    assert not torch.equal(g.get_state(), state)  # same stream for grey and RGB
    assert not torch.allclose(rand_saturation(rgb, gen(3)), rgb)
    assert [f.__name__ for f in AUGMENT_FUNCTIONS["color"]] == ["rand_brightness", "rand_saturation", "rand_contrast"]


@pytest.mark.parametrize("channels, side", [(3, 32), (1, 28)])
def test_translation_moves_content_at_most_an_eighth_and_pads_with_zero(channels, side):
    n, centre, shift = 400, side // 2, int(side * 0.125 + 0.5)  # 1/8 of the side, rounded half up: 4 for 28 and 32
    x = torch.full((n, channels, side, side), 0.5)
    x[:, :, centre, centre] = 1.0  # one bright pixel on a grey field
    out = diff_augment(x, ("translation",), gen(13))
    assert out.shape == x.shape
    assert torch.equal(out, out[:, :1].expand_as(out))  # all channels move together
    plane = out[:, 0]
    bright = (plane == 1.0).nonzero()
    assert bright.shape[0] == n  # the bright pixel survives once per image
    dy, dx = bright[:, 1] - centre, bright[:, 2] - centre
    assert dy.abs().max() <= shift and dx.abs().max() <= shift
    assert set(dy.tolist()) == set(dx.tolist()) == set(range(-shift, shift + 1))  # the whole range is used
    # Content leaving one side uncovers |d| rows and columns of zeros (the reference's zero padding).
    zeros = (plane == 0).sum(dim=(1, 2))
    assert torch.equal(zeros, side * side - (side - dy.abs()) * (side - dx.abs()))
    assert set(plane.unique().tolist()) <= {0.0, 0.5, 1.0}


@pytest.mark.parametrize("channels, side", [(3, 32), (1, 28)])
def test_cutout_zeroes_one_square_of_half_the_side(channels, side):
    n, size = 300, side // 2
    x = torch.ones(n, channels, side, side)
    out = diff_augment(x, ("cutout",), gen(17))
    assert torch.equal(out, out[:, :1].expand_as(out))
    hole = out[:, 0] == 0
    assert torch.equal(out[:, 0][~hole], torch.ones(int((~hole).sum())))  # the rest is untouched
    rows, cols = hole.any(dim=2), hole.any(dim=1)
    heights, widths = rows.sum(dim=1), cols.sum(dim=1)
    # One axis-aligned rectangle: the zeros are exactly rows × columns, each a contiguous run...
    assert torch.equal(hole, rows[:, :, None] & cols[:, None, :])
    for run in (*rows, *cols):
        idx = run.nonzero().flatten()
        assert idx.numel() == 0 or idx[-1] - idx[0] + 1 == idx.numel()
    # ... a square of half the side where it lies inside the image, clipped (never below half of that) at the edge.
    assert heights.max() == widths.max() == size
    assert heights.min() >= (size + 1) // 2 and widths.min() >= (size + 1) // 2
    assert ((heights == size) & (widths == size)).any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("channels, side", [(3, 32), (1, 28)])
def test_shape_dtype_and_memory_format_are_kept(dtype, channels, side):
    x = images((4, channels, side, side)).to(dtype)
    out = diff_augment(x, ALL, gen(1))
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    x_cl = x.to(memory_format=torch.channels_last)
    out_cl = diff_augment(x_cl, ALL, gen(1))
    assert out_cl.dtype == dtype and out_cl.is_contiguous(memory_format=torch.channels_last)
    # Same draws, same values; only reductions may round in another order.
    torch.testing.assert_close(out_cl, out, rtol=0, atol=2e-2 if dtype == torch.bfloat16 else 1e-6)


def test_empty_and_unknown_policies():
    x = images((2, 3, 8, 8))
    g = gen(0)
    state = g.get_state()
    assert diff_augment(x, (), g) is x
    assert diff_augment(x, "", g) is x
    with pytest.raises(ValueError, match="unknown DiffAugment policy"):
        diff_augment(x, ("color", "flip"), g)
    assert torch.equal(g.get_state(), state)  # nothing drawn


def test_the_config_allows_exactly_the_implemented_policies():
    assert tuple(AUGMENT_FUNCTIONS) == AUGMENTS == ("color", "translation", "cutout")


def test_a_comma_string_is_the_tuple_of_its_policies():
    x = images((3, 3, 16, 16))
    assert torch.equal(diff_augment(x, "color,translation,cutout", gen(5)), diff_augment(x, ALL, gen(5)))
    assert torch.equal(diff_augment(x, "color, cutout", gen(6)), diff_augment(x, ("color", "cutout"), gen(6)))


# 5. Same policy for real and fake: a pure function of (x, policies, generator state) ------------------------------


def test_real_and_fake_are_both_augmented_by_a_pure_function():
    real, fake = images((8, 3, 32, 32), seed=1), images((8, 3, 32, 32), seed=2)
    g = gen(42)
    global_before = torch.get_rng_state()
    state = g.get_state()
    real_aug = diff_augment(real, ALL, g)
    fake_aug = diff_augment(fake, ALL, g)
    assert not torch.allclose(real_aug, real) and not torch.allclose(fake_aug, fake)
    assert torch.equal(torch.get_rng_state(), global_before)  # the global RNG is never drawn from
    # Replaying the generator state gives the same result whatever the global RNG holds.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123456)
        g.set_state(state)
        assert torch.equal(diff_augment(real, ALL, g), real_aug)
        assert torch.equal(diff_augment(fake, ALL, g), fake_aug)


# CUDA: generator on the device, channels_last, bf16 autocast -----------------------------------------------------


@needs_cuda
@ignore_meshgrid_warning
def test_cuda_matches_reference_and_keeps_dtype_under_autocast():
    dev = "cuda"
    x = images((16, 3, 32, 32), device=dev)
    want, state_after = reference(x, ALL, 3)
    g = gen(3, dev)
    got = diff_augment(x, ALL, g)
    assert got.device == x.device
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert torch.equal(g.get_state(), state_after)
    with pytest.raises(RuntimeError):  # a CPU generator cannot drive CUDA draws
        diff_augment(x, ALL, gen(3))

    conv = torch.nn.Conv2d(3, 3, 3, padding=1).to(dev).to(memory_format=torch.channels_last)
    x_cl = x.to(memory_format=torch.channels_last).requires_grad_()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        h = conv(x_cl)  # bf16, channels_last: what G hands D under autocast
        assert h.dtype == torch.bfloat16
        out = diff_augment(h, ALL, gen(4, dev))
        out32 = diff_augment(x_cl, ALL, gen(4, dev))
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert out32.dtype == torch.float32 and out32.is_contiguous(memory_format=torch.channels_last)
    (out.float().square().mean() + out32.square().mean()).backward()
    assert torch.isfinite(x_cl.grad).all() and x_cl.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in conv.parameters())


# 6. ADA's gate, through the training step: each image D sees is augmented with probability p ----------------------


def ada_step(p: float):
    """A real GanStep (the trainer's models, parts and RNG) with ADA's p forced to `p`, and hooks that record every
    batch D is given and every batch G makes."""
    from gan.core.config import ModelConfig, TrainConfig
    from gan.training.step import GanStep, step_parts
    from gan.training.train import build_models

    model_cfg = ModelConfig(arch="dcgan", channels=8, z_dim=16)
    train_cfg = TrainConfig(batch_size=16, augment="color,translation,cutout", ada_target=0.6, device="cpu")
    models = build_models(model_cfg, train_cfg, (3, 32, 32), 0, torch.device("cpu"), False, "test")
    step = GanStep(models.G, models.D, models.opt_g, models.opt_d, step_parts(model_cfg, train_cfg), gen(7))
    step.augment_p = torch.tensor(p)
    seen, made = [], []
    models.D.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    models.G.register_forward_hook(lambda module, args, out: made.append(out.detach().clone()))
    return step, seen, made


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_ada_p_gates_every_image_d_sees(p):
    """p = 0: D's inputs are the real batch and G's fakes bit for bit; p = 1: every single image is augmented. In
    D's update (real, fake) and in G's (fake), over several steps (p stays forced: no adjustment is due before the
    4th step)."""
    step, seen, made = ada_step(p)
    for k in range(3):
        x, z = images((1, 16, 3, 32, 32), seed=k), images((1, 16, 16), seed=100 + k)
        seen.clear(), made.clear()
        step(x, z)
        assert float(step.augment_p) == p
        assert len(seen) == 3 and len(made) == 1  # D: real, then fake; G's update: fake
        for got, given in zip(seen, (x[0], made[0], made[0]), strict=True):
            if p == 0:
                assert torch.equal(got, given)
            else:
                assert all(not torch.equal(a, b) for a, b in zip(got, given, strict=True))


# 7. ADA's heuristic (gan.training.ada): what counts toward r_t, how fast p moves, and the same p on every rank ------


def logits(signs: list[int]) -> torch.Tensor:
    return torch.tensor(signs, dtype=torch.float32) * 0.5


def test_every_d_batch_of_a_step_counts_toward_the_signal():
    """Two D updates per step (train.d_steps = 2): r_t is the mean sign over both real batches, and p moves by the
    real images D judged in the interval (4 steps × 2 batches × 4 images) over ada_kimg thousand."""
    from gan.training.ada import AdaptiveP

    ada = AdaptiveP(target=0.6, kimg=0.32, device=torch.device("cpu"))
    for _ in range(4):
        ada.observe(logits([1, 1, 1, 1]))  # the first D batch: D sure of every real image
        ada.observe(logits([1, 1, -1, -1]))  # the second (the last): D unsure
        r = ada.end_step()
        assert float(r) == pytest.approx(0.5)  # (4 + 0) / 8, not the last batch's 0
    assert float(ada.p) == 0  # 0.5 < 0.6: p would move down, and stays at 0
    for _ in range(4):
        ada.observe(logits([1, 1, 1, 1]))
        ada.observe(logits([1, 1, 1, -1]))
        ada.end_step()
    assert float(ada.p) == pytest.approx(32 / 320)  # 0.875 > 0.6: up by 32 images / 320


def test_the_checkpointed_state_resumes_mid_interval_exactly():
    from gan.training.ada import AdaptiveP

    def run(ada, signs):
        for s in signs:
            ada.observe(logits(s))
            ada.end_step()
        return ada

    steps = [[1, 1, 1, 1], [1, 1, -1, 1], [1, 1, 1, 1]] * 4
    whole = run(AdaptiveP(0.6, 0.08, torch.device("cpu")), steps)
    first = run(AdaptiveP(0.6, 0.08, torch.device("cpu")), steps[:6])  # stops mid-interval (6 % 4 = 2)
    resumed = AdaptiveP(0.6, 0.08, torch.device("cpu"))
    resumed.load_state_dict(first.state_dict())
    run(resumed, steps[6:])
    assert whole.state_dict().keys() == resumed.state_dict().keys()
    for k, v in whole.state_dict().items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(resumed.state_dict()[k])), k
    assert float(whole.p) == pytest.approx(0.6)  # 3 intervals above the target, each 16 images / 80 up


def _ada_rank(rank: int, port: int, out, per_rank: list[list[list[int]]]) -> None:
    import torch.distributed as dist

    from gan.training.ada import AdaptiveP

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        ada = AdaptiveP(0.6, 0.08, torch.device("cpu"))
        history = []
        for signs in per_rank[rank]:
            ada.observe(logits(signs))
            history.append((float(ada.end_step()), float(ada.p)))
        torch.save({"history": history, "state": ada.state_dict()}, out / f"ada{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_under_ddp_the_signal_is_the_global_batchs_and_p_is_the_same_on_every_rank(tmp_path):
    """Two gloo ranks whose D judges its half of the batch differently (rank 0 sure, rank 1 unsure): both ranks
    move p from the signs of the whole global batch, exactly as one process judging both halves does, and hold the
    same partial sums (rank 0's checkpoint is every rank's)."""
    import torch.multiprocessing as mp

    from gan.training.ada import AdaptiveP

    from .conftest import free_port

    sure, unsure = [[1, 1, 1, 1]] * 6, [[1, -1, -1, 1]] * 6  # 1.0 and 0.0: together 0.5, under the target
    mp.spawn(_ada_rank, args=(free_port(), tmp_path, [sure, unsure]), nprocs=2)
    ranks = [torch.load(tmp_path / f"ada{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["history"] == ranks[1]["history"]
    for k, v in ranks[0]["state"].items():
        assert torch.equal(torch.as_tensor(v), torch.as_tensor(ranks[1]["state"][k])), k
    one = AdaptiveP(0.6, 0.08, torch.device("cpu"))
    whole = []
    for a, b in zip(sure, unsure, strict=True):
        one.observe(logits(a + b))
        whole.append((float(one.end_step()), float(one.p)))
    assert ranks[0]["history"] == whole
    assert [r for r, _ in whole] == [0.5] * 6  # each rank alone would see 1.0 or 0.0
