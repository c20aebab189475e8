"""Fixed outputs: a silent numerical change (initialisation, sampling, the loop, a metric) fails here.

The numbers were recorded with this code on CPU (torch 2.14.1, one thread); a deliberate change updates them in the
same commit and says why.
"""
import warnings

import pytest
import torch

from medgan_core.metrics.distribution import distribution_panel
from medgan_core.registry import build_model
from medgan_core.sampling import sample
from medgan_core.train import fit
from train_worker import STYLEGAN2_TINY, tiny_image_set, tiny_train_config

TINY_DCGAN = {"g_features": 4, "d_features": 4, "z_dim": 8}


@pytest.mark.parametrize("name, config, total, absolute", [
    ("dcgan", {"image_size": 32, **TINY_DCGAN}, None, 0.09541379660367966),
    ("stylegan2", {"image_size": 32, **STYLEGAN2_TINY}, 142.3245086669922, 968.50390625),
    # as_in_paper=False: the layers before 2026-12-02 (old files must keep drawing these images)
    ("progan", {"image_size": 32, "base_features": 8, "z_dim": 8, "as_in_paper": False}, 1623.4617919921875,
     2038.751708984375),
    ("progan", {"image_size": 32, "base_features": 8, "z_dim": 8}, 1385.267578125, 1714.1385498046875),
])
def test_a_seeded_untrained_generator_draws_the_recorded_images(name, config, total, absolute):
    torch.manual_seed(0)
    G, _, _ = build_model(name, **config)
    images = sample(G, 3, seed=1)
    assert float(images.abs().sum()) == pytest.approx(absolute, rel=1e-4)
    if total is not None:
        assert float(images.sum()) == pytest.approx(total, rel=1e-4)


def test_three_training_steps_give_the_recorded_losses_and_samples(tmp_path):
    result = fit("dcgan", tiny_image_set(), tiny_train_config(3, 3), tmp_path, model_config=TINY_DCGAN)
    losses = result.history[["d_loss", "g_loss"]].values.tolist()
    expected = [[1.3847146034240723, 0.6639854907989502], [1.320343255996704, 0.7087740302085876],
                [1.3182942867279053, 0.6555798053741455]]
    assert losses == [pytest.approx(row, rel=1e-4) for row in expected]
    assert float(sample(result.generator, 2, seed=0).sum()) == pytest.approx(-1.5231454372406006, rel=1e-4)


def test_the_metric_panel_on_fixed_features_gives_the_recorded_scores():
    generator = torch.Generator().manual_seed(0)
    real = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    fake = torch.randn(150, 8, generator=generator, dtype=torch.float64) * 1.2 + 0.3
    train = torch.randn(200, 8, generator=generator, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the small-sample warning
        panel = distribution_panel(real, fake, train, extractor={"name": "fixed", "sha256": None}, k=3, n_boot=20,
                                   seed=0)
    recorded = {"fd": (1.5007716677423524, 1.1314453185763083, 2.090192899291542),
                "kd": (0.5053451528116397, 0.3125503411642818, 0.7268970843470661),
                "precision": (0.6533333333333333, None, None), "recall": (0.945, None, None),
                "density": (0.5466666666666666, None, None), "coverage": (0.595, None, None),
                "relative_fd": (2.846461724895975, 1.946800996685046, 4.516895018674116)}
    scores = {score.metric: (score.value, score.ci_low, score.ci_high) for score in panel}
    assert set(scores) == set(recorded)
    for metric, values in recorded.items():
        for got, expected in zip(scores[metric], values):
            assert got == (expected if expected is None else pytest.approx(expected, rel=1e-9)), metric
