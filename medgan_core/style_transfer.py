"""Style-transfer refinement, the Alpha-GAN-GP recipe's last step: a generated image made to look more like a real
scan, its mask untouched.

Gatys et al.'s Gram-matrix style transfer, as the Alpha-GAN-GP recipe applies it: the generated image is the
starting point and is optimised (Adam, lr 0.01) to keep its content (VGG16 conv5_3 features, weight 1) while
matching the style of a real image (Gram matrices of conv1_1 ... conv5_1, decreasing weights, total weight 1000).
VGG16's ImageNet weights come from a local file (a torchvision state dict or safetensors) or the torchvision
download (Kaggle, Colab). Without them the evaluator's CNN serves as the feature network (its four conv blocks for
style, the last for content), and :func:`style_network` says so: the result is then a different method, not the
recipe's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from .evaluator import IMAGENET_MEAN, IMAGENET_STD, Evaluator, imagenet_state_dict, normalize_intensity
from .metrics.extractors import INCEPTION_RANGE
from .sampling import split_masks

# torchvision vgg16.features: the ReLU after each named conv (index of the ReLU module)
VGG16_LAYERS = {"conv1_1": 1, "conv2_1": 6, "conv3_1": 11, "conv4_1": 18, "conv5_1": 25, "conv5_3": 29}
STYLE_WEIGHTS = (1.0, 0.75, 0.5, 0.25, 0.125)  # conv1_1 ... conv5_1: fine textures count most


@dataclass
class StyleNetwork:
    """A frozen feature network: ``features(x)`` returns the style feature maps and the content feature map."""

    name: str  # what it is, for the output ("vgg16 imagenet <file>", "evaluator cnn (fallback)")
    features: Callable[[torch.Tensor], tuple[list[torch.Tensor], torch.Tensor]]  # x in [-1, 1] -> (styles, content)
    style_weights: tuple[float, ...]


def vgg16_network(weights: str, device: str | torch.device = "cpu") -> StyleNetwork:
    """VGG16 with ImageNet weights as the style network.

    Args:
        weights: a local ``vgg16-397923af.pth`` / ``.safetensors`` file, or ``"torchvision"`` to download.
        device: where it runs.
    Returns:
        The :class:`StyleNetwork` (layers conv1_1..conv5_1 for style, conv5_3 for content).
    Raises:
        FileNotFoundError, RuntimeError: see :func:`medgan_core.evaluator.imagenet_state_dict`; RuntimeError also
            for a file that is not a VGG16 state dict.
    """
    state, description = imagenet_state_dict(weights, torchvision.models.VGG16_Weights.IMAGENET1K_V1, "VGG16",
                                             "vgg16-397923af.pth", "vgg_weights")
    vgg = torchvision.models.vgg16(weights=None)
    try:
        vgg.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"the weights from {weights} do not fit torchvision's vgg16: {error}") from None
    layers = vgg.features[:VGG16_LAYERS["conv5_3"] + 1].to(device).eval().requires_grad_(False)
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    taps = [VGG16_LAYERS[name] for name in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")]

    def features(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = ((x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x) + 1) / 2
        x = F.interpolate(x, size=max(x.shape[-1], 64), mode="bilinear", align_corners=False)  # 5 poolings deep
        x = (x - mean) / std
        styles = []
        for index, layer in enumerate(layers):
            x = layer(x)
            if index in taps:
                styles.append(x)
        return styles, x

    return StyleNetwork(f"vgg16 imagenet {description}", features, STYLE_WEIGHTS)


# the FID Inception's layers tapped for style (stem at 1/2 and 1/4 of the input side, the first and third Inception
# blocks); the last tap is the content layer
INCEPTION_STYLE_LAYERS = ("conv_2", "conv_4", "mixed", "mixed_2")
INCEPTION_STYLE_SIZE = 128  # input side: the layers above at ~1/10 of the cost of 299 px, every tap still >= 13 px


def inception_network(evaluator: Evaluator) -> StyleNetwork:
    """An ``inception`` evaluator's ImageNet backbone as the style network (the fallback without VGG16 weights):
    its stem and first Inception blocks, on images resized to 128 px (no 8-bit quantisation: it has no gradient).

    Raises:
        ValueError: for an evaluator of another architecture.
    """
    classifier = evaluator.classifier
    if classifier.config.arch != "inception":
        raise ValueError(f"inception_network needs an 'inception' evaluator, not {classifier.config.arch!r}")
    layers = dict(classifier.backbone.net.net.layers.named_children())
    last = INCEPTION_STYLE_LAYERS[-1]
    names = list(layers)[:list(layers).index(last) + 1]  # the backbone's weights are frozen (no gradients) already
    stack = [layers[name] for name in names]
    low, high = INCEPTION_RANGE

    def features(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = normalize_intensity(x)
        x = F.interpolate(x, size=INCEPTION_STYLE_SIZE, mode="bilinear", align_corners=False)
        x = ((x + 1) / 2).expand(-1, 3, -1, -1) * (high - low) + low  # the network's input range
        styles = []
        for name, layer in zip(names, stack):
            x = layer(x)
            if name in INCEPTION_STYLE_LAYERS:
                styles.append(x)
        return styles, styles[-1]

    return StyleNetwork("evaluator inception, ImageNet weights (fallback: no VGG16 ImageNet weights)", features,
                        STYLE_WEIGHTS[:len(INCEPTION_STYLE_LAYERS)])


def evaluator_network(evaluator: Evaluator) -> StyleNetwork:
    """The evaluator's network as the style network (the fallback without VGG16 weights). A ``cnn``: the output of
    each of its four conv blocks for style, the last block's for content; an ``inception``: see
    :func:`inception_network`.

    Raises:
        ValueError: for an evaluator of another architecture.
    """
    classifier = evaluator.classifier
    if classifier.config.arch == "inception":
        return inception_network(evaluator)
    if classifier.config.arch != "cnn":
        raise ValueError(f"the style fallback needs a 'cnn' or 'inception' evaluator, not "
                         f"{classifier.config.arch!r}; pass VGG16 weights instead")
    blocks = [index for index, layer in enumerate(classifier.backbone) if isinstance(layer, nn.MaxPool2d)]
    backbone = classifier.backbone.eval().requires_grad_(False)

    def features(x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = classifier.prepare(x)
        styles = []
        for index, layer in enumerate(backbone):
            if index > blocks[-1]:
                break
            x = layer(x)
            if index in blocks:
                styles.append(x)
        return styles, styles[-1]

    return StyleNetwork("evaluator cnn (fallback: no VGG16 ImageNet weights)", features, STYLE_WEIGHTS[:len(blocks)])


def style_network(vgg_weights: str | None, evaluator: Evaluator | None,
                  device: str | torch.device = "cpu") -> tuple[StyleNetwork, str]:
    """VGG16 when its weights can be had, else the evaluator's CNN; and one line saying which and why.

    Args:
        vgg_weights: a local VGG16 weights file, ``"torchvision"`` (download), or None.
        evaluator: the fallback.
        device: where VGG16 runs.
    Returns:
        ``(network, line)``.
    Raises:
        ValueError: when neither is available.
    """
    reason = "no vgg_weights given"
    if vgg_weights:
        try:
            network = vgg16_network(vgg_weights, device)
            return network, f"style network: {network.name}"
        except (FileNotFoundError, RuntimeError) as error:
            reason = str(error)
    if evaluator is None:
        raise ValueError(f"style transfer needs VGG16 ImageNet weights ({reason}) or an evaluator as the fallback")
    network = evaluator_network(evaluator)
    return network, f"style network: {network.name}; {reason}"


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrices, divided by C * H * W."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (channels * height * width)


def refine(images: torch.Tensor, style_images: torch.Tensor, network: StyleNetwork, *, steps: int = 200,
           lr: float = 0.01, content_weight: float = 1.0, style_weight: float = 1000.0) -> torch.Tensor:
    """Style-transfer each image towards its style image; a mask channel is carried over unchanged.

    Args:
        images: (B, C [+ 1], H, W) generated images in [-1, 1] (a last mask channel is kept as it is).
        style_images: (B or 1, C, H, W) real images in [-1, 1] whose style is transferred.
        network: from :func:`style_network`.
        steps: Adam steps on the image.
        lr: Adam's learning rate (the recipe: 0.01).
        content_weight: weight of the content loss (the recipe: 1).
        style_weight: weight of the style loss (the recipe: 1000).
    Returns:
        The refined images, same shape, in [-1, 1].
    """
    pictures, masks = split_masks(images)
    target = pictures.detach().clone().float()
    style_images = style_images.float().expand(len(target), -1, -1, -1)
    with torch.no_grad():
        style_features, _ = network.features(style_images)
        style_grams = [gram_matrix(f) for f in style_features]
        _, content = network.features(target)
    canvas = target.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([canvas], lr=lr)
    for _ in range(steps):
        styles, current = network.features(canvas)
        style_loss = sum(weight * F.mse_loss(gram_matrix(f), gram)
                         for weight, f, gram in zip(network.style_weights, styles, style_grams))
        loss = content_weight * F.mse_loss(current, content) + style_weight * style_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            canvas.clamp_(-1, 1)
    refined = canvas.detach()
    return refined if masks is None else torch.cat([refined, masks.to(refined.dtype)], dim=1)


@dataclass
class RefinementResult:
    """Generated images before and after refinement, and whether it helped in the evaluator's feature space."""

    before: torch.Tensor  # (N, C [+ 1], H, W) in [-1, 1]
    after: torch.Tensor
    fd_before: float  # evaluator-space FD of the images (masks set aside) to the real images
    fd_after: float
    network: str  # the line from style_network: which feature network, and why


def evaluate_refinement(generator: nn.Module, evaluator: Evaluator, real_images: torch.Tensor, *,
                        vgg_weights: str | None = None, n: int = 64, steps: int = 200, seed: int = 0) -> RefinementResult:
    """Refine ``n`` samples towards real images (one real image each, in order) and score both versions.

    Args:
        generator: a trained generator (a conditional one draws its classes in equal blocks, as ``sample`` does).
        evaluator: the feature space of the FD (and the fallback style network).
        real_images: (M, C, H, W) uint8 real test images: the style targets and the FD reference.
        vgg_weights: see :func:`style_network`.
        n: images refined.
        steps: Adam steps per image batch.
        seed: latent seed of the samples.
    Returns:
        The :class:`RefinementResult`. Its FDs use n generated images (no CI): compare them with each other only.
    """
    from .data import to_float
    from .metrics.distribution import frechet_distance
    from .metrics.extractors import get_extractor
    from .sampling import sample

    network, line = style_network(vgg_weights, evaluator, next(generator.parameters()).device)
    before = sample(generator, n, seed=seed)
    styles = to_float(real_images[torch.arange(n) % len(real_images)])
    after = refine(before, styles, network, steps=steps)
    extractor = get_extractor("evaluator", evaluator=evaluator)
    real_features = extractor.features(to_float(real_images))
    fd = [frechet_distance(real_features, extractor.features(split_masks(images)[0]), extractor=extractor,
                           n_boot=0).value for images in (before, after)]
    return RefinementResult(before, after, fd[0], fd[1], line)
