"""Hub I/O with tiny models, fully offline: local round trips, a hand-built HF cache, and a faked upload."""
import json
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import HfApi, RepoUrl
from PIL import Image
from safetensors.torch import load_file, save_file

from medgan_core.checkpoint import save_checkpoint
from medgan_core.config import to_dict
from medgan_core.hub import (HubUnreachableError, PretrainedError, from_pretrained, load_config,
                             push_checkpoint_to_hub, push_folder_to_hub, push_to_hub, save_pretrained)
from medgan_core.registry import build_model
from medgan_core.sampling import latents

from conftest import TINY_GAN as TINY
CLASSES = ["glioma", "meningioma", "pituitary"]
PRETRAINED_FILES = {"config.json", "model.safetensors", "samples.png", "README.md"}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


STYLEGAN2_TINY = {"image_size": 32, "z_dim": 8, "w_dim": 8, "channel_base": 128, "channel_max": 8}


def tiny_generator(name: str) -> torch.nn.Module:
    extra = {"num_classes": 3} if name in ("cdcgan", "cstylegan2") else {}
    G, _, _ = build_model(name, **(STYLEGAN2_TINY if "stylegan2" in name else TINY), **extra)
    for buffer_name, buffer in G.named_buffers():
        if "running_mean" in buffer_name or "w_avg" in buffer_name:
            buffer.add_(0.1)  # non-default BatchNorm stats and w_avg: buffers must round-trip too
    return G.eval()


def outputs(G: torch.nn.Module) -> torch.Tensor:
    labels = torch.tensor([0, 1, 2, 0]) if getattr(G.config, "num_classes", 0) else None
    with torch.no_grad():
        return G(latents(4, G.config.z_dim, seed=3), labels)


@pytest.fixture
def saved(tmp_path) -> Path:
    return save_pretrained(tiny_generator("cdcgan"), tmp_path / "pretrained", model_name="cdcgan",
                           class_names=CLASSES, training_data="demo")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch) -> Path:
    """An empty HF cache under tmp_path, with offline mode on (the constants are read at import time)."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.mark.parametrize("name", ["dcgan", "cdcgan", "stylegan2", "cstylegan2"])
def test_round_trip_gives_identical_outputs(tmp_path, name):
    G = tiny_generator(name)
    conditional = name in ("cdcgan", "cstylegan2")
    folder = save_pretrained(G, tmp_path / name, model_name=name, class_names=CLASSES if conditional else None)
    assert {p.name for p in folder.iterdir()} == PRETRAINED_FILES
    loaded = from_pretrained(folder, expected_model=name)
    assert not loaded.training
    if "stylegan2" not in name:
        assert torch.equal(outputs(loaded), outputs(G))
    else:  # loaded in channels_last: its grouped convs differ from the contiguous G by float rounding only (up to
        # ~2e-6 seen; the same 1e-5 as save_pretrained's own check)
        torch.testing.assert_close(outputs(loaded), outputs(G), rtol=1e-5, atol=1e-5)
        z = latents(2, G.config.z_dim, seed=1)
        labels = torch.tensor([0, 2]) if conditional else None
        with torch.no_grad():  # the truncation centre (w_avg) travels with the weights
            torch.testing.assert_close(loaded(z, labels, truncation_psi=0.5), G(z, labels, truncation_psi=0.5),
                                       rtol=1e-5, atol=1e-5)


def test_only_generator_weights_are_saved(saved):
    G = tiny_generator("cdcgan")
    assert set(load_file(saved / "model.safetensors")) == set(G.state_dict())


@pytest.mark.parametrize("tamper, message", [
    (lambda state: state.update({"extra.weight": torch.zeros(1)}), "Unexpected key.*extra.weight"),
    (lambda state: state.pop("latent.embedding.weight"), "Missing key.*latent.embedding.weight"),
], ids=["extra key", "missing key"])
def test_tampered_weights_fail_strict_loading(saved, tamper, message):
    state = load_file(saved / "model.safetensors")
    tamper(state)
    save_file(state, saved / "model.safetensors")
    with pytest.raises(PretrainedError, match=f"(?s)do not fit a 'cdcgan' generator.*{message}"):
        from_pretrained(saved)


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_weights_of_another_architecture_fail_clearly(saved):
    config = json.loads((saved / "config.json").read_text())
    edit_config(saved, model_config={**config["model_config"], "z_dim": 16})
    with pytest.raises(PretrainedError, match="size mismatch"):
        from_pretrained(saved)


def test_unknown_model_lists_registered_models(saved):
    edit_config(saved, model="stylegan9")
    with pytest.raises(PretrainedError, match=r"'stylegan9'.*registered models: \[.*'cdcgan'.*'dcgan'"):
        from_pretrained(saved)


def test_invalid_model_config_fails_clearly(saved):
    config = json.loads((saved / "config.json").read_text())
    edit_config(saved, model_config={**config["model_config"], "depth": 3})
    with pytest.raises(PretrainedError, match="not describe a valid 'cdcgan'.*depth"):
        from_pretrained(saved)


def test_expected_model_mismatch(saved):
    with pytest.raises(PretrainedError, match="holds a 'cdcgan' generator, not 'dcgan'"):
        from_pretrained(saved, expected_model="dcgan")


def test_incomplete_or_foreign_folders_fail_clearly(saved, tmp_path):
    with pytest.raises(PretrainedError, match="has no config.json"):
        from_pretrained(tmp_path)
    (saved / "model.safetensors").unlink()
    with pytest.raises(PretrainedError, match="has no model.safetensors"):
        from_pretrained(saved)
    (saved / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(PretrainedError, match="not a MedGAN config"):
        from_pretrained(saved)
    with pytest.raises(PretrainedError, match="is a file"):
        from_pretrained(saved / "README.md")


def test_save_rejects_wrong_model_name_and_class_names(tmp_path):
    with pytest.raises(ValueError, match="uses ConditionalDCGANConfig"):
        save_pretrained(tiny_generator("dcgan"), tmp_path, model_name="cdcgan")
    with pytest.raises(ValueError, match="2 class names for a generator with 3 classes"):
        save_pretrained(tiny_generator("cdcgan"), tmp_path, model_name="cdcgan", class_names=["a", "b"])
    assert not list(tmp_path.iterdir())  # validation happens before any file is written


def test_class_names_of_an_unconditional_model_only_describe_its_data(tmp_path):
    folder = save_pretrained(tiny_generator("dcgan"), tmp_path, model_name="dcgan", class_names=CLASSES,
                             training_data="demo")
    config = load_config(folder)
    assert config["class_names"] == [] and config["training_classes"] == CLASSES
    assert ("demo\n\nClasses: glioma, meningioma, pituitary (pooled: the generator is unconditional)."
            in (folder / "README.md").read_text())


def front_matter(card: str) -> list[str]:
    assert card.startswith("---\n")
    return card.split("---\n")[1].splitlines()


def test_model_card_with_metrics(tmp_path):
    folder = save_pretrained(tiny_generator("cdcgan"), tmp_path, model_name="cdcgan", class_names=CLASSES,
                             training_data="kaggle:brain-tumor-mri", metrics={"fid": 12.3456, "kid": 0.00123},
                             repo_id="alice/tumour-gan")
    card = (folder / "README.md").read_text()
    header = front_matter(card)
    assert "library_name: medgan" in header and "license: mit" in header
    assert [line for line in header if line.startswith("- ")] == [
        "- gan", "- medical-imaging", "- mri", "- synthetic-data", "- cdcgan"]
    assert "| fid | 12.35 |" in card and "| kid | 0.00123 |" in card
    assert "No metrics computed yet" not in card
    assert "kaggle:brain-tumor-mri" in card and "0 = glioma, 1 = meningioma, 2 = pituitary" in card
    assert 'G = from_pretrained("alice/tumour-gan")' in card
    assert "**Not for clinical use.**" in card and "research and education" in card
    assert "![Generated samples](samples.png)" in card
    config = json.loads((folder / "config.json").read_text())
    assert config["metrics"] == {"fid": 12.3456, "kid": 0.00123}
    assert config["medgan_format"] == 1 and config["class_names"] == config["training_classes"] == CLASSES
    with Image.open(folder / "samples.png") as grid:
        assert grid.size == (8 * 34 + 2, 3 * 34 + 2)  # 8 columns, one 32-px row per class, 2-px padding


def test_model_card_without_metrics_or_samples(tmp_path):
    folder = tmp_path / "pretrained"
    save_pretrained(tiny_generator("dcgan"), folder, model_name="dcgan")  # leaves a samples.png behind
    save_pretrained(tiny_generator("dcgan"), folder, model_name="dcgan", sample_grid=False)
    card = (folder / "README.md").read_text()
    assert "No metrics computed yet." in card and "| metric |" not in card
    assert "Not recorded." in card and "## Samples" not in card and "](samples.png)" not in card
    assert "- dcgan" in front_matter(card) and "**Not for clinical use.**" in card
    assert {p.name for p in folder.iterdir()} == PRETRAINED_FILES - {"samples.png"}


def populate_cache(cache: Path, repo_id: str, G: torch.nn.Module, name: str) -> None:
    """The snapshot layout snapshot_download leaves behind: snapshots/<commit>/files + refs/main."""
    repo_folder = cache / f"models--{repo_id.replace('/', '--')}"
    save_pretrained(G, repo_folder / "snapshots" / COMMIT, model_name=name, class_names=CLASSES)
    (repo_folder / "refs").mkdir()
    (repo_folder / "refs" / "main").write_text(COMMIT)


@pytest.mark.parametrize("revision", [None, "main", COMMIT])
def test_hub_id_loads_from_the_offline_cache(offline_cache, revision):
    G = tiny_generator("cdcgan")
    populate_cache(offline_cache, "alice/tumour-gan", G, "cdcgan")
    loaded = from_pretrained("alice/tumour-gan", revision=revision, expected_model="cdcgan")
    assert torch.equal(outputs(loaded), outputs(G))
    assert load_config("alice/tumour-gan", revision=revision)["class_names"] == CLASSES


def test_uncached_hub_id_offline_says_how_to_fix(offline_cache):
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE=0 and log in.*local folder"):
        from_pretrained("alice/not-downloaded")
    with pytest.raises(PretrainedError, match="neither an existing folder nor a Hub repo id"):
        from_pretrained("runs/missing/folder")


@pytest.fixture
def fake_hub(monkeypatch, tmp_path) -> dict:
    """Replace the two network calls; record what they receive and copy the uploaded folder."""
    calls: dict = {}
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)

    def create_repo(self, repo_id, *, exist_ok=False, private=None, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, "exist_ok": exist_ok, "private": private, "token": self.token}
        return RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, **kwargs):
        folder = Path(folder_path)
        calls["upload_folder"] = {"repo_id": repo_id, "folder": folder, "commit_message": commit_message,
                                  "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))}
        uploaded = tmp_path / "uploaded"
        uploaded.mkdir()
        for path in folder.iterdir():
            (uploaded / path.name).write_bytes(path.read_bytes())
        calls["uploaded"] = uploaded

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_exactly_the_pretrained_files(fake_hub):
    G = tiny_generator("dcgan")
    url = push_to_hub(G, "alice/brain-dcgan", model_name="dcgan", token="hf_fake", private=True,
                      metrics={"fid": 50.0})
    assert url == "https://huggingface.co/alice/brain-dcgan"
    assert fake_hub["create_repo"] == {"repo_id": "alice/brain-dcgan", "exist_ok": True, "private": True,
                                       "token": "hf_fake"}
    upload = fake_hub["upload_folder"]
    assert upload["repo_id"] == "alice/brain-dcgan" and upload["commit_message"] == "Upload MedGAN generator"
    assert upload["files"] == sorted(PRETRAINED_FILES)
    assert not upload["folder"].exists()  # the temp folder is cleaned up
    assert 'from_pretrained("alice/brain-dcgan")' in (fake_hub["uploaded"] / "README.md").read_text()
    assert torch.equal(outputs(from_pretrained(fake_hub["uploaded"])), outputs(G))


def test_push_folder_uploads_a_saved_folder_and_refuses_a_broken_one_before_the_network(fake_hub, tmp_path):
    G = tiny_generator("dcgan")
    folder = save_pretrained(G, tmp_path / "hub", model_name="dcgan")
    assert push_folder_to_hub(folder, "alice/brain-dcgan") == "https://huggingface.co/alice/brain-dcgan"
    upload = fake_hub["upload_folder"]
    assert upload["folder"] == folder and upload["files"] == sorted(PRETRAINED_FILES)
    fake_hub.clear()
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(PretrainedError):
        push_folder_to_hub(folder, "alice/brain-dcgan")
    assert fake_hub == {}


def test_push_refuses_offline_before_any_network_call(fake_hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE=0"):
        push_to_hub(tiny_generator("dcgan"), "alice/brain-dcgan", model_name="dcgan")
    assert fake_hub == {}


def test_push_checkpoint_takes_names_and_ema_weights_from_the_checkpoint(fake_hub, tmp_path):
    G, G_ema = tiny_generator("cdcgan"), tiny_generator("cdcgan")
    tensors = {f"{prefix}.{k}": v for prefix, module in (("G", G), ("G_ema", G_ema))
               for k, v in module.state_dict().items()}
    source = "/home/alice/data/brain-tumor"
    meta = {"model": "cdcgan", "model_config": to_dict(G.config), "step": 700,
            "data": {"class_names": CLASSES, "source": source}, "data_config": {"dataset": source}}
    path = save_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000700.safetensors", tensors, meta)
    push_checkpoint_to_hub(tmp_path / "run", "alice/tumour-gan")
    config = json.loads((fake_hub["uploaded"] / "config.json").read_text())
    assert config["class_names"] == CLASSES
    assert config["training_data"] == "brain-tumor"  # the folder's name only: no local path in a public card
    assert config["extra"] == {"checkpoint": path.name, "step": 700, "use_ema": True}
    assert "/home/alice" not in (fake_hub["uploaded"] / "README.md").read_text()
    assert torch.equal(outputs(from_pretrained(fake_hub["uploaded"])), outputs(G_ema))
