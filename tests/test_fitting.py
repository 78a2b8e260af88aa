"""SIREN fitting with torch, its agreement with the numpy decoder, and the optimiser both methods use."""

import functools
import subprocess
import sys

import numpy as np
import torch

from xr_inr.methods.fitting import Adam
from xr_inr.methods.siren.fitting import Siren, fit, search_and_fit
from xr_inr.methods.siren.model import SirenSpec, axis_coords, coordinate_mesh, evaluate


def test_siren_initialisation_follows_the_paper():
    spec = SirenSpec(depth=3, width=64, bands=5)
    model = Siren(spec, torch.Generator().manual_seed(0))
    first, hidden = model.linears[0].weight, model.linears[1].weight
    assert first.abs().max() <= 1 / 2  # U(-1/in, 1/in), in = 2
    bound = np.sqrt(6 / 64) / 30
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.9 * bound


def test_numpy_evaluation_matches_torch():
    spec = SirenSpec(depth=2, width=16, bands=7)
    model = Siren(spec, torch.Generator().manual_seed(1))
    coords = coordinate_mesh(axis_coords(5), axis_coords(9))
    with torch.no_grad():
        expected = model(torch.from_numpy(coords)).numpy()
    layers = [(layer.weight.detach().numpy(), layer.bias.detach().numpy()) for layer in model.linears]
    np.testing.assert_allclose(evaluate(spec, layers, coords), expected, rtol=1e-4, atol=1e-5)


def test_fit_keeps_the_best_weights_seen():
    rng = np.random.default_rng(0)
    target = rng.uniform(-1, 1, size=(4, 8, 8)).astype(np.float32)
    spec = SirenSpec(depth=2, width=16, bands=4)
    # a far too large learning rate makes the loss jump around: the kept weights are the best ones
    result = fit(target, None, spec, steps=40, lr=0.05)
    coords = coordinate_mesh(axis_coords(8), axis_coords(8))
    decoded = evaluate(spec, result.layers, coords).T.reshape(4, 8, 8)
    np.testing.assert_allclose(np.mean((decoded - target) ** 2), result.mse, rtol=1e-4)
    first_mse = np.mean(target**2)  # an untrained SIREN outputs about 0
    assert result.mse < first_mse


def test_minibatch_fit_improves_and_is_deterministic():
    yy, xx = np.meshgrid(axis_coords(16), axis_coords(16), indexing="ij")
    target = np.stack([np.sin(2 * yy), xx * yy]).astype(np.float32)
    spec = SirenSpec(depth=2, width=24, bands=2)
    a = fit(target, None, spec, steps=60, lr=1e-3, batch_size=64, seed=5)
    b = fit(target, None, spec, steps=60, lr=1e-3, batch_size=64, seed=5)
    assert a.mse == b.mse
    assert a.mse < np.mean(target**2) / 4


def test_masked_elements_do_not_count():
    target = np.zeros((2, 6, 6), dtype=np.float32)
    valid = np.ones_like(target, dtype=bool)
    target[0, 0, 0], valid[0, 0, 0] = 1e6, False  # a wild value that is masked out
    result = fit(target, valid, SirenSpec(1, 8, 2), steps=30, lr=1e-3)
    assert result.mse < 0.1


class _ScriptedTraining:
    """Stands in for Training: its error follows a given learning curve of the steps done."""

    def __init__(self, target, valid, spec, **options):
        self.spec, self.steps_done = spec, 0
        self.curve = CURVES[spec.depth]

    @property
    def best_mse(self):
        return self.curve(self.steps_done)

    def train(self, steps):
        self.steps_done += steps
        return self

    def result(self):
        return (self.spec, self.steps_done)


# depth 1 learns fastest and stalls; depth 3 starts slower and ends best (as SIRENs do); depth 2 is slow
CURVES = {1: lambda n: 0.5 / (1 + n / 50) + 0.2, 2: lambda n: 0.9 / (1 + n / 200) + 0.05,
          3: lambda n: 0.8 / (1 + n / 100) + 0.01}


def test_successive_halving_keeps_the_slow_starter_that_ends_best(monkeypatch):
    import xr_inr.methods.siren.fitting as fitting

    monkeypatch.setattr(fitting, "Training", _ScriptedTraining)
    candidates = [SirenSpec(depth, 8, 3) for depth in (1, 2, 3)]
    assert CURVES[1](100) < min(CURVES[2](100), CURVES[3](100))  # a single 100-step round would pick depth 1
    spec, steps_done = search_and_fit(None, None, candidates, steps=2000, search_steps=100)
    assert spec.depth == 3 and steps_done == 2000
    spec, steps_done = search_and_fit(None, None, candidates, steps=50, search_steps=100)
    assert steps_done == 50  # trials never run past the full fit's length


def test_search_returns_one_of_the_candidates_fully_trained():
    target = np.random.default_rng(1).uniform(-1, 1, size=(3, 8, 8)).astype(np.float32)
    candidates = [SirenSpec(1, 20, 3), SirenSpec(2, 10, 3)]
    result = search_and_fit(target, None, candidates, steps=20, search_steps=5, lr=1e-3)
    assert result.spec in candidates


def _trained(optimiser_class):
    generator = torch.Generator().manual_seed(0)
    weights = torch.nn.Parameter(torch.randn(50, 7, generator=generator))
    bias = torch.nn.Parameter(torch.randn(7, generator=generator))
    unused = torch.nn.Parameter(torch.ones(3))
    x = torch.randn(20, 50, generator=generator)
    optimiser = optimiser_class([{"params": [weights], "base": 1.0}, {"params": [bias, unused], "base": 0.05}], lr=0.01)
    for i in range(100):
        for group in optimiser.param_groups:  # as the grid fit sets its learning rates
            group["lr"] = 0.01 * group["base"] * (1 + i % 7) / 7
        loss = ((torch.tanh(x @ weights) + bias) ** 2).sum()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return weights, bias, unused


def test_adam_is_torchs_fused_adam_bit_for_bit():
    for ours, torchs in zip(_trained(Adam), _trained(functools.partial(torch.optim.Adam, fused=True))):
        assert torch.equal(ours, torchs)
    assert torch.equal(_trained(Adam)[2], torch.ones(3))  # no gradient: left alone


def test_a_fit_imports_neither_dynamo_nor_sympy():
    """torch.optim imports both on first use (seconds of every new worker process)."""
    code = ("import sys, numpy as np; from xr_inr import INRCodec\n"
            "INRCodec(bpppb=1, steps=2).encode(np.random.default_rng(0).random((8, 16, 16)))\n"
            "INRCodec(bpppb=1, steps=2, method='siren').encode(np.random.default_rng(0).random((8, 16, 16)))\n"
            "print(sorted(m for m in ('torch._dynamo', 'sympy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
