"""The EMA generator: one lerp per parameter after each G step, buffers copied, warm-up, checkpoint round trip."""

import pytest
import torch

from gan.training.ema import EmaGenerator, ema_beta


def test_beta_warms_up_then_stays_at_the_decay():
    assert ema_beta(0.999, 0) == pytest.approx(1 / 10)
    assert ema_beta(0.999, 10) == pytest.approx(11 / 20)
    assert ema_beta(0.999, 100_000) == 0.999


def test_update_is_the_exponential_average_and_copies_buffers():
    torch.manual_seed(0)
    G = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    ema = EmaGenerator(G, decay=0.9)
    start = [p.detach().clone() for p in G.parameters()]
    expected = [p.clone() for p in start]
    for t in range(30):
        with torch.no_grad():
            for p in G.parameters():
                p.add_(1.0)
            G[1].running_mean.add_(0.5)
        ema.update(G)
        beta = min(0.9, (1 + t) / (10 + t))
        expected = [beta * e + (1 - beta) * p.detach() for e, p in zip(expected, G.parameters(), strict=True)]
    for e, p in zip(expected, ema.module.parameters(), strict=True):
        torch.testing.assert_close(p, e, rtol=1e-6, atol=1e-6)
    assert torch.equal(ema.module[1].running_mean, G[1].running_mean)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert ema.updates == 30


def test_state_round_trip_continues_identically():
    torch.manual_seed(0)
    G = torch.nn.Linear(3, 2)
    a = EmaGenerator(G, 0.99)
    a.update(G)
    b = EmaGenerator(torch.nn.Linear(3, 2), 0.99)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        G.weight.add_(1)
    a.update(G)
    b.update(G)
    assert torch.equal(a.module.weight, b.module.weight) and b.updates == 2
