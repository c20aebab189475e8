"""Distances between the feature distributions of real and generated images, with bootstrap CIs.

All functions take precomputed features (N, D) (see :mod:`medgan_core.metrics.extractors`) and return
:class:`Score` objects that record the extractor, its weights hash and both sample sizes.

* Frechet distance (FD; FID with the Inception extractor): torchmetrics' ``FrechetInceptionDistance`` formula, computed
  through a symmetric eigenproblem (the same value; tested against torchmetrics).
* Kernel distance (KD; KID with Inception): torchmetrics' unbiased polynomial-kernel MMD^2 (its kernel; the estimator
  is tested against ``poly_mmd``).
* Precision / recall (Kynkaenniemi et al. 2019) and density / coverage (Naeem et al. 2020), k-NN balls.
* Relative FD: FD(generated, real test) / FD(real train half A, half B), comparable across extractors.

Too few samples raise an error; fewer than ``MIN_RELIABLE_N`` emit a :class:`SmallSampleWarning` whose text is
also stored in the score.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch
from torchmetrics.image.kid import poly_kernel

from ..stats import percentile_interval
from .extractors import FeatureExtractor, extractor_identity

MIN_RELIABLE_N = 500  # below this FD/KID are visibly biased and their CIs wide
DEFAULT_N_BOOT = 100
KD_SUBSETS = 100  # subsets averaged when the sets are unequal or larger than subset_size (torchmetrics' default)
_CHUNK = 1024  # rows per block of pairwise distances / kernel values

Extractor = FeatureExtractor | Mapping[str, Any]


class SmallSampleWarning(UserWarning):
    """A metric was computed on fewer samples than it needs to be reliable."""


@dataclass
class Score:
    """One metric value with its CI and everything needed to trace it."""

    metric: str  # "fd", "kd", "precision", "recall", "density", "coverage", "relative_fd"
    value: float
    ci_low: float | None  # 95% percentile-bootstrap interval; None where no CI is computed
    ci_high: float | None
    n_real: int
    n_fake: int
    extractor: str
    extractor_sha256: str | None
    warning: str | None = None  # the SmallSampleWarning text, when one was emitted

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------------------------- helpers

def _features(x: Any, what: str) -> torch.Tensor:
    """(N, D) float64 CPU tensor; raises for other shapes and non-finite values."""
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.dim() != 2:
        raise ValueError(f"{what} features must be (N, D), got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} features hold NaN or inf (diverged generator?); no metric can be computed")
    return x


def _pair(real: Any, fake: Any, metric: str, minimum: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    real, fake = _features(real, "real"), _features(fake, "generated")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and generated features differ in width ({real.shape[1]} vs {fake.shape[1]}): "
                         f"were they computed with the same extractor?")
    if min(len(real), len(fake)) < minimum:
        raise ValueError(f"{metric} needs at least {minimum} real and {minimum} generated samples, got "
                         f"n_real={len(real)}, n_fake={len(fake)}; generate or load more images")
    return real, fake


def _small_sample_note(metric: str, n_real: int, n_fake: int) -> str | None:
    """Warn (and return the text) when either set is below MIN_RELIABLE_N."""
    if min(n_real, n_fake) >= MIN_RELIABLE_N:
        return None
    note = (f"{metric} on n_real={n_real}, n_fake={n_fake} (< {MIN_RELIABLE_N}): the value is biased upward at "
            f"small n and its CI is wide; compare models only at equal n, preferably >= {MIN_RELIABLE_N}")
    warnings.warn(note, SmallSampleWarning, stacklevel=3)
    return note


def _percentile_ci(replicates: torch.Tensor) -> tuple[float | None, float | None]:
    if len(replicates) == 0:
        return None, None
    low, high = percentile_interval(replicates)
    return float(low), float(high)


def _recentred_ci(value: float, replicates: torch.Tensor, *,
                  ratio: bool = False) -> tuple[float | None, float | None]:
    """Percentile interval of bootstrap replicates moved so their centre is the value.

    Resampling with replacement repeats rows, which adds FD's small-sample bias a second time: uncorrected, the
    replicates of FD at n ~ 5 D sit entirely above the value. Their spread is kept, their mean (geometric mean
    for a ratio) moved onto the value; FD's lower end is cut at 0.
    """
    if len(replicates) == 0:
        return None, None
    if ratio:
        return _percentile_ci(replicates * (value / replicates.log().mean().exp()))
    return _percentile_ci((replicates - replicates.mean() + value).clamp(min=0))


def _score(metric: str, value: float, ci: tuple[float | None, float | None], n_real: int, n_fake: int,
           identity: tuple[str, str | None], warning: str | None = None) -> Score:
    return Score(metric, float(value), ci[0], ci[1], n_real, n_fake, *identity, warning)


# ----------------------------------------------------------------------------------------------- Frechet distance

def _centred_factor(x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, F) of a resample given by per-row counts, with F^T F its sample covariance (as torch.cov)."""
    n = counts.sum()
    mean = (counts[:, None] * x).sum(0) / n
    keep = counts > 0
    factor = (counts[keep].sqrt()[:, None] * (x[keep] - mean)) / (n - 1).sqrt()
    return mean, factor


def _trace_sqrt_product(f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
    """tr sqrt(S1 S2) for S = F^T F, through a symmetric eigenproblem of size min(rows, D).

    S1 S2 has the eigenvalues of F1 S2 F1^T (rows x rows) and of S1^(1/2) S2 S1^(1/2) (D x D), both symmetric
    PSD, so ``eigvalsh`` replaces the general ``eigvals`` torchmetrics uses (same value, much faster).
    """
    if f1.shape[0] > f2.shape[0]:
        f1, f2 = f2, f1
    if f1.shape[0] <= f1.shape[1]:
        cross = f1 @ f2.T
        symmetric = cross @ cross.T
    else:
        values, vectors = torch.linalg.eigh(f1.T @ f1)
        root = (vectors * values.clamp(min=0).sqrt()) @ vectors.T
        symmetric = root @ (f2.T @ f2) @ root
    return torch.linalg.eigvalsh(symmetric).clamp(min=0).sqrt().sum()


def _fd_resampled(real: torch.Tensor, fake: torch.Tensor, counts_real: torch.Tensor,
                  counts_fake: torch.Tensor) -> float:
    """FD of a resample (rows repeated ``counts`` times; all ones: the sets themselves): torchmetrics' formula,
    symmetric numerics."""
    mean_real, factor_real = _centred_factor(real, counts_real)
    mean_fake, factor_fake = _centred_factor(fake, counts_fake)
    traces = factor_real.square().sum() + factor_fake.square().sum()
    value = (mean_real - mean_fake).square().sum() + traces - 2 * _trace_sqrt_product(factor_real, factor_fake)
    return float(value)


def _draw_counts(n: int, generator: torch.Generator) -> torch.Tensor:
    """How often each of n rows is drawn by one bootstrap resample (with replacement)."""
    return torch.bincount(torch.randint(n, (n,), generator=generator), minlength=n).double()


def _fd_with_replicates(real: torch.Tensor, fake: torch.Tensor, n_boot: int,
                        generator: torch.Generator) -> tuple[float, torch.Tensor]:
    value = _fd_resampled(real, fake, torch.ones(len(real), dtype=torch.float64), torch.ones(len(fake), dtype=torch.float64))
    replicates = [_fd_resampled(real, fake, _draw_counts(len(real), generator), _draw_counts(len(fake), generator))
                  for _ in range(n_boot)]
    return value, torch.tensor(replicates, dtype=torch.float64)


def frechet_distance(real_feats: Any, fake_feats: Any, *, extractor: Extractor, n_boot: int = DEFAULT_N_BOOT,
                     seed: int = 0) -> Score:
    """Frechet distance between Gaussians fitted to real and generated features (FID with Inception features).

    The value is ``torchmetrics.image.fid.FrechetInceptionDistance``'s formula on the features. FD is biased
    upward at small n, so it is only comparable at equal n. The 95% CI is for the expected FD at these sample
    sizes (what models compared at equal n differ in), not for the bias-free FD: a percentile bootstrap
    resampling both sets with replacement, with the replicates re-centred on the value, because the repeated
    rows of a resample add the bias a second time (uncorrected, the interval can miss the value entirely).

    Args:
        real_feats: (N_real, D) real-image features.
        fake_feats: (N_fake, D) generated-image features from the same extractor.
        extractor: the extractor (or its ``describe()`` dict) recorded in the score.
        n_boot: bootstrap resamples (0: no CI). Each costs two D x D eigenproblems (~1 s at D=2048 on a CPU).
        seed: seeds the resampling.
    Returns:
        The :class:`Score` (metric ``"fd"``).
    Raises:
        ValueError: for fewer than 2 samples in either set, mismatched widths or non-finite features.
    """
    identity = extractor_identity(extractor)  # checked first: no minutes of work for an unnamed score
    real, fake = _pair(real_feats, fake_feats, "FD")
    note = _small_sample_note("FD", len(real), len(fake))
    value, replicates = _fd_with_replicates(real, fake, n_boot, torch.Generator().manual_seed(seed))
    return _score("fd", value, _recentred_ci(value, replicates), len(real), len(fake), identity, note)


# ----------------------------------------------------------------------------------------------- kernel distance

def _kernel_sum(x: torch.Tensor, y: torch.Tensor, weights_x: torch.Tensor, weights_y: torch.Tensor,
                same: bool) -> torch.Tensor:
    """Per column b: sum_ij wx[i,b] k(x_i, y_j) wy[j,b], without i == j terms when x is y; kernel in blocks."""
    total = torch.zeros(weights_x.shape[1], dtype=torch.float64)
    for start in range(0, len(x), _CHUNK):
        block = poly_kernel(x[start:start + _CHUNK], y)  # (c, n_y)
        if same:
            rows = torch.arange(len(block))
            block[rows, rows + start] = 0  # the unbiased estimator leaves out k(x_i, x_i)
        total += (weights_x[start:start + _CHUNK] * (block @ weights_y)).sum(0)
    return total


def _mmd_on_subsets(real: torch.Tensor, fake: torch.Tensor, mask_real: torch.Tensor,
                    mask_fake: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 (torchmetrics' kernel) of each column's subsets (0/1 masks), sets of unequal size allowed."""
    m_real, m_fake = mask_real.sum(0), mask_fake.sum(0)
    within_real = _kernel_sum(real, real, mask_real, mask_real, same=True) / (m_real * (m_real - 1))
    within_fake = _kernel_sum(fake, fake, mask_fake, mask_fake, same=True) / (m_fake * (m_fake - 1))
    across = _kernel_sum(real, fake, mask_real, mask_fake, same=False) / (m_real * m_fake)
    return within_real + within_fake - 2 * across


def _unique_draw_masks(n: int, n_boot: int, generator: torch.Generator) -> torch.Tensor:
    """(n, n_boot) 0/1: the distinct rows of each bootstrap draw (~63% of the rows, no duplicates)."""
    masks = torch.zeros(n, n_boot, dtype=torch.float64)
    for b in range(n_boot):
        masks[torch.randint(n, (n,), generator=generator), b] = 1
    return masks


def _kd_with_replicates(real: torch.Tensor, fake: torch.Tensor, subset_size: int, subsets: int, n_boot: int,
                        generator: torch.Generator) -> tuple[float, torch.Tensor]:
    m = min(subset_size, len(real), len(fake))
    if len(real) == len(fake) == m:
        whole_real, whole_fake = torch.ones(m, 1, dtype=torch.float64), torch.ones(m, 1, dtype=torch.float64)
        value = float(_mmd_on_subsets(real, fake, whole_real, whole_fake))
    else:  # torchmetrics' KID: mean over random equal-size subsets (its MMD assumes equal sizes), all at once
        subset_real = torch.zeros(len(real), subsets, dtype=torch.float64)
        subset_fake = torch.zeros(len(fake), subsets, dtype=torch.float64)
        for column in range(subsets):
            subset_real[torch.randperm(len(real), generator=generator)[:m], column] = 1
            subset_fake[torch.randperm(len(fake), generator=generator)[:m], column] = 1
        value = float(_mmd_on_subsets(real, fake, subset_real, subset_fake).mean())
    if n_boot == 0:
        return value, torch.empty(0, dtype=torch.float64)
    mask_real = _unique_draw_masks(len(real), n_boot, generator)
    mask_fake = _unique_draw_masks(len(fake), n_boot, generator)
    usable = (mask_real.sum(0) >= 2) & (mask_fake.sum(0) >= 2)  # only tiny sets draw one distinct row
    return value, _mmd_on_subsets(real, fake, mask_real[:, usable], mask_fake[:, usable])


def kernel_inception_distance(real_feats: Any, fake_feats: Any, *, extractor: Extractor, subset_size: int = 1000,
                              subsets: int = KD_SUBSETS, n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Score:
    """Kernel distance: unbiased MMD^2 with the cubic polynomial kernel (KID with Inception features).

    The value is ``torchmetrics.image.kid.poly_mmd``'s estimator on all samples when both sets have the same size of at most
    ``subset_size``; otherwise the mean over ``subsets`` random subsets of size min(subset_size, n_real, n_fake),
    as torchmetrics' ``KernelInceptionDistance`` computes it. It can be slightly negative when the distributions
    match. The 95% CI comes from bootstrap replicates built from the *distinct* rows of each draw (about 63% of
    each set; duplicated rows would bias the unbiased MMD), evaluated with the same kernel on the whole replicate,
    so it describes a smaller sample and is conservative (wider than needed).

    Args:
        real_feats: (N_real, D) real-image features.
        fake_feats: (N_fake, D) generated-image features.
        extractor: the extractor (or its ``describe()`` dict) recorded in the score.
        subset_size: subset size when the sets are larger or unequal.
        subsets: number of subsets averaged in that case.
        n_boot: bootstrap replicates (0: no CI).
        seed: seeds subsets and resampling.
    Returns:
        The :class:`Score` (metric ``"kd"``).
    Raises:
        ValueError: for fewer than 2 samples in either set, mismatched widths or non-finite features.
    """
    identity = extractor_identity(extractor)
    real, fake = _pair(real_feats, fake_feats, "KD")
    note = _small_sample_note("KD", len(real), len(fake))
    value, replicates = _kd_with_replicates(real, fake, subset_size, subsets, n_boot,
                                            torch.Generator().manual_seed(seed))
    return _score("kd", value, _percentile_ci(replicates), len(real), len(fake), identity, note)


# ----------------------------------------------------------------------------------------------- k-NN manifolds

def _kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row (the row itself is the 1st at distance 0)."""
    return torch.cat([torch.cdist(x[start:start + _CHUNK], x).kthvalue(k + 1, dim=1).values
                      for start in range(0, len(x), _CHUNK)])


def _manifold_scores(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """Precision, recall, density and coverage from one pass over the generated-to-real distances.

    Balls use strict ``<`` as in Naeem et al.'s reference code, so identical sets give density exactly 1.
    """
    if k >= min(len(real), len(fake)):
        raise ValueError(f"k={k} nearest neighbours need more than k samples in each set, got n_real={len(real)}, "
                         f"n_fake={len(fake)}; lower k or use more samples")
    radii_real, radii_fake = _kth_neighbour_radii(real, k), _kth_neighbour_radii(fake, k)
    in_real_balls = 0  # generated samples inside at least one real ball
    density_hits = 0  # (generated sample, real ball) pairs
    real_in_fake_balls = torch.zeros(len(real), dtype=torch.bool)
    real_ball_hit = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(fake), _CHUNK):
        distances = torch.cdist(fake[start:start + _CHUNK], real)  # (c, n_real)
        inside = distances < radii_real
        in_real_balls += int(inside.any(dim=1).sum())
        density_hits += int(inside.sum())
        real_ball_hit |= inside.any(dim=0)
        real_in_fake_balls |= (distances < radii_fake[start:start + _CHUNK, None]).any(dim=0)
    return {"precision": in_real_balls / len(fake), "recall": float(real_in_fake_balls.double().mean()),
            "density": density_hits / (k * len(fake)), "coverage": float(real_ball_hit.double().mean())}


def precision_recall(real_feats: Any, fake_feats: Any, *, extractor: Extractor, k: int = 5) -> list[Score]:
    """Improved precision and recall (Kynkaenniemi et al. 2019).

    Each set's manifold is the union of balls around its samples reaching their k-th nearest neighbour.
    Precision: share of generated samples inside the real manifold (fidelity). Recall: share of real samples
    inside the generated manifold (diversity).

    Args:
        real_feats: (N_real, D) real-image features.
        fake_feats: (N_fake, D) generated-image features.
        extractor: the extractor (or its ``describe()`` dict) recorded in the scores.
        k: neighbour defining the ball radius.
    Returns:
        ``[precision, recall]`` scores (no CI).
    Raises:
        ValueError: when ``k`` is not smaller than both set sizes.
    """
    return _manifold_panel(real_feats, fake_feats, extractor, k, ("precision", "recall"))


def density_coverage(real_feats: Any, fake_feats: Any, *, extractor: Extractor, k: int = 5) -> list[Score]:
    """Density and coverage (Naeem et al. 2020), robust to outliers unlike precision/recall.

    Density: mean number of real k-NN balls containing a generated sample, divided by k (about 1 when the
    distributions match; above 1 when samples crowd dense regions). Coverage: share of real samples whose ball
    holds at least one generated sample.

    Args:
        real_feats: (N_real, D) real-image features.
        fake_feats: (N_fake, D) generated-image features.
        extractor: the extractor (or its ``describe()`` dict) recorded in the scores.
        k: neighbour defining the ball radius.
    Returns:
        ``[density, coverage]`` scores (no CI).
    Raises:
        ValueError: when ``k`` is not smaller than both set sizes.
    """
    return _manifold_panel(real_feats, fake_feats, extractor, k, ("density", "coverage"))


def _manifold_panel(real_feats: Any, fake_feats: Any, extractor: Extractor, k: int,
                    metrics: tuple[str, str]) -> list[Score]:
    identity = extractor_identity(extractor)
    real, fake = _pair(real_feats, fake_feats, "/".join(metrics))
    scores = _manifold_scores(real, fake, k)
    return [_score(metric, scores[metric], (None, None), len(real), len(fake), identity) for metric in metrics]


# ----------------------------------------------------------------------------------------------- relative FD

def _relative_fd_score(fd_value: float, fd_replicates: torch.Tensor, fake: torch.Tensor, test: torch.Tensor,
                       train: Any, n_boot: int, generator: torch.Generator, identity: tuple[str, str | None]) -> Score:
    """Relative FD from an FD(test, generated) already computed with its replicates."""
    train = _features(train, "real training")
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"training features are {train.shape[1]}-wide, test features {test.shape[1]}-wide")
    if len(train) < 4:
        raise ValueError(f"relative FD splits the training features into two halves of at least 2, got "
                         f"{len(train)} rows")
    order = torch.randperm(len(train), generator=generator)
    half_a, half_b = train[order[:len(train) // 2]], train[order[len(train) // 2:]]
    baseline, baseline_replicates = _fd_with_replicates(half_a, half_b, n_boot, generator)
    if baseline <= 0:
        raise ValueError("FD between the two halves of the training features is 0 (duplicated rows?), so the "
                         "relative FD is undefined")
    sizes = (len(fake), len(test), len(half_a))
    notes = [_small_sample_note("relative FD", len(test), len(fake))]
    if max(sizes) > 2 * min(sizes):
        notes.append(f"relative FD compares FDs at different sample sizes (generated {sizes[0]}, test {sizes[1]}, "
                     f"training halves {sizes[2]}); FD depends on n, so use equal n for a ratio near 1 to mean "
                     f"'as close as two real samples'")
        warnings.warn(notes[-1], SmallSampleWarning, stacklevel=3)
    note = "; ".join(text for text in notes if text) or None
    ratio = fd_value / baseline
    return _score("relative_fd", ratio, _recentred_ci(ratio, fd_replicates / baseline_replicates, ratio=True),
                  len(test), len(fake), identity, note)


def relative_fd(fake_feats: Any, real_test_feats: Any, real_train_feats: Any, *, extractor: Extractor,
                n_boot: int = DEFAULT_N_BOOT, seed: int = 0) -> Score:
    """FD(generated, real test) / FD(real train half A, real train half B), with a bootstrap CI on the ratio.

    The CI resamples all four sets with replacement and re-centres the ratios on the value on a log scale (see
    :func:`frechet_distance` for why).

    Raw FD values depend on the extractor's feature scale, so they cannot be compared across extractors; the
    ratio can: 1 means "as far from the real test set as two real samples are from each other". FD also depends
    on sample size (it is biased upward at small n), so use equal n: generated = test = half the training set.

    Args:
        fake_feats: (N_fake, D) generated-image features.
        real_test_feats: (N_test, D) real test-image features.
        real_train_feats: (N_train, D) real training-image features, split into two random halves.
        extractor: the extractor (or its ``describe()`` dict) recorded in the score.
        n_boot: bootstrap resamples of all four sets (0: no CI).
        seed: seeds the halves and the resampling.
    Returns:
        The :class:`Score` (metric ``"relative_fd"``; n_real is the test set's size).
    Raises:
        ValueError: for too few samples, or a zero FD between the training halves.
    """
    identity = extractor_identity(extractor)
    test, fake = _pair(real_test_feats, fake_feats, "relative FD")
    generator = torch.Generator().manual_seed(seed)
    fd_value, fd_replicates = _fd_with_replicates(test, fake, n_boot, generator)
    return _relative_fd_score(fd_value, fd_replicates, fake, test, real_train_feats, n_boot, generator, identity)


# ----------------------------------------------------------------------------------------------- panels

def distribution_panel(real_test: Any, fake: Any, real_train: Any = None, *, extractor: Extractor, k: int = 5,
                       n_boot: int = DEFAULT_N_BOOT, subset_size: int = 1000, seed: int = 0) -> list[Score]:
    """Every distribution metric from one set of features: FD, KD, precision, recall, density, coverage and,
    given training features, relative FD (reusing FD's resamples for its numerator).

    Args:
        real_test: (N_test, D) real test-image features (the reference set).
        fake: (N_fake, D) generated-image features.
        real_train: (N_train, D) real training-image features, for relative FD; None skips it.
        extractor: the extractor (or its ``describe()`` dict) recorded in every score.
        k: neighbour for precision/recall/density/coverage.
        n_boot: bootstrap resamples for the FD, KD and relative FD CIs.
        subset_size: KD subset size.
        seed: seeds every random choice.
    Returns:
        The scores, in the order above.
    Raises:
        ValueError: for too few samples (see the single metrics).
    """
    identity = extractor_identity(extractor)
    real, generated = _pair(real_test, fake, "the distribution panel", minimum=k + 1)
    generator = torch.Generator().manual_seed(seed)
    fd_note = _small_sample_note("FD", len(real), len(generated))
    fd_value, fd_replicates = _fd_with_replicates(real, generated, n_boot, generator)
    kd_note = _small_sample_note("KD", len(real), len(generated))
    kd_value, kd_replicates = _kd_with_replicates(real, generated, subset_size, KD_SUBSETS, n_boot, generator)
    sizes = (len(real), len(generated))
    scores = [_score("fd", fd_value, _recentred_ci(fd_value, fd_replicates), *sizes, identity, fd_note),
              _score("kd", kd_value, _percentile_ci(kd_replicates), *sizes, identity, kd_note)]
    scores += [_score(metric, value, (None, None), *sizes, identity)
               for metric, value in _manifold_scores(real, generated, k).items()]
    if real_train is not None:
        scores.append(_relative_fd_score(fd_value, fd_replicates, generated, real, real_train, n_boot, generator,
                                         identity))
    return scores


def per_class_panel(real_feats: Any, real_labels: Any, fake_feats: Any, fake_labels: Any,
                    class_names: Sequence[str], *, extractor: Extractor, n_boot: int = DEFAULT_N_BOOT,
                    subset_size: int = 1000, seed: int = 0) -> dict[str, list[Score]]:
    """FD and KD of each class: real images of class c against images generated for class c.

    Args:
        real_feats: (N_real, D) real-image features.
        real_labels: (N_real,) class indices.
        fake_feats: (N_fake, D) generated-image features.
        fake_labels: (N_fake,) class indices the images were generated for.
        class_names: names of the label indices.
        extractor: the extractor (or its ``describe()`` dict) recorded in every score.
        n_boot: bootstrap resamples per CI.
        subset_size: KD subset size.
        seed: seeds every random choice.
    Returns:
        Class name -> ``[fd, kd]`` scores; classes are usually small, so expect SmallSampleWarnings.
    Raises:
        ValueError: when a class has fewer than 2 real or generated samples, or labels do not fit the features.
    """
    extractor_identity(extractor)  # fail before the first class, not after it
    real, fake = _pair(real_feats, fake_feats, "the per-class panel")
    real_labels, fake_labels = torch.as_tensor(real_labels).long(), torch.as_tensor(fake_labels).long()
    if real_labels.shape != (len(real),) or fake_labels.shape != (len(fake),):
        raise ValueError(f"need one label per feature row: {tuple(real_labels.shape)} labels for {len(real)} real, "
                         f"{tuple(fake_labels.shape)} for {len(fake)} generated")
    panel = {}
    for label, name in enumerate(class_names):
        real_c, fake_c = real[real_labels == label], fake[fake_labels == label]
        if min(len(real_c), len(fake_c)) < 2:
            raise ValueError(f"class {name!r} has {len(real_c)} real and {len(fake_c)} generated samples; per-class "
                             f"FD/KD need at least 2 of each (generate images for every class)")
        panel[name] = [frechet_distance(real_c, fake_c, extractor=extractor, n_boot=n_boot, seed=seed),
                       kernel_inception_distance(real_c, fake_c, extractor=extractor, subset_size=subset_size,
                                                 n_boot=n_boot, seed=seed)]
    return panel
