import torch

from ngrad.rules.noise import rademacher, random_bytes, uniform_levels


def test_random_bytes_are_uniform_and_seeded():
    torch.manual_seed(0)
    first = random_bytes((4000, 25))
    torch.manual_seed(0)
    assert torch.equal(first, random_bytes((4000, 25)))
    counts = torch.bincount(first.flatten().long(), minlength=256).double()
    expected = first.numel() / 256
    chi_square = float(((counts - expected) ** 2 / expected).sum())
    assert chi_square < 400  # 255 degrees of freedom: p ~ 1e-8 at 400


def test_rademacher_moments():
    noise = rademacher((2000, 64), torch.float64)
    assert set(noise.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(noise.mean())) < 0.01
    covariance = noise.T @ noise / noise.shape[0]
    torch.testing.assert_close(torch.diagonal(covariance), torch.ones(64, dtype=torch.float64))
    assert float((covariance - torch.eye(64, dtype=torch.float64)).abs().max()) < 0.15


def test_uniform_levels_range_and_mean():
    values = uniform_levels((100000,), 0.3, torch.float32)
    assert float(values.min()) > 0
    assert float(values.max()) <= 0.3
    assert abs(float(values.mean()) - 0.15) < 0.002
    assert values.unique().numel() == 256
