"""Metrics of generated images: feature extractors, distribution distances with CIs, memorisation audit.

Typical use: features of real and generated images from one extractor, then the panel of scores::

    extractor = get_extractor("inception")
    real = cached_features(extractor, test_set)
    fake = extract_features(extractor, generated_images)
    scores = distribution_panel(real, fake, extractor=extractor)
"""
from .distribution import (Score, SmallSampleWarning, density_coverage, distribution_panel, frechet_distance,
                           kernel_inception_distance, per_class_panel, precision_recall, relative_fd)
from .extractors import (FeatureExtractor, cached_features, extract_features, extractor_identity, get_extractor,
                         list_extractors, register_extractor, tf1_bilinear_resize)
from .memorization import MemorizationReport, memorization_audit, plot_memorization_gallery

__all__ = [
    "FeatureExtractor", "MemorizationReport", "Score", "SmallSampleWarning", "cached_features", "density_coverage",
    "distribution_panel", "extract_features", "extractor_identity", "frechet_distance", "get_extractor",
    "kernel_inception_distance", "list_extractors", "memorization_audit", "per_class_panel",
    "plot_memorization_gallery", "precision_recall", "register_extractor", "relative_fd", "tf1_bilinear_resize",
]
