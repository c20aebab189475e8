"""Explorer widgets built around tiny generators: their controls, and a redraw on every control change."""
import io

import ipywidgets as widgets
import pytest
from PIL import Image

from medgan_core import widgets as explorers

STAGES = ["CN", "MCI", "AD"]


def controls(explorer: widgets.Widget) -> dict[str, widgets.Widget]:
    row, _ = explorer.children
    return {control.description: control for control in row.children}


def picture(explorer: widgets.Widget) -> bytes:
    _, image = explorer.children
    assert isinstance(image, widgets.Image)
    return image.value


@pytest.fixture
def spy(monkeypatch) -> dict[str, list]:
    """Record the calls the explorers make to the plotting functions (and still draw)."""
    calls: dict[str, list] = {"show_images": [], "plot_interpolation": []}
    for name in calls:
        original = getattr(explorers, name)

        def recorder(*args, _name=name, _original=original, **kwargs):
            calls[_name].append((args, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(explorers, name, recorder)
    return calls


def test_class_explorer_controls_for_a_conditional_generator(conditional):
    explorer = explorers.class_explorer(conditional, STAGES, max_images=12)
    found = controls(explorer)
    assert set(found) == {"seed", "images", "class"}
    assert isinstance(found["class"], widgets.Dropdown) and found["class"].options == (("CN", 0), ("MCI", 1),
                                                                                       ("AD", 2))
    assert (found["seed"].min, found["seed"].max, found["seed"].value) == (0, 9999, 0)
    assert (found["images"].min, found["images"].max, found["images"].value) == (1, 12, 12)
    with Image.open(io.BytesIO(picture(explorer))) as image:
        assert image.format == "PNG"


def test_ordinal_classes_get_a_stage_slider(conditional):
    found = controls(explorers.class_explorer(conditional, STAGES, ordinal=True))
    assert isinstance(found["stage"], widgets.SelectionSlider)
    assert found["stage"].options == (("CN", 0), ("MCI", 1), ("AD", 2)) and "class" not in found


def test_unconditional_generator_gets_seed_and_count_only(unconditional):
    assert set(controls(explorers.class_explorer(unconditional))) == {"seed", "images"}


def test_every_control_change_redraws_the_picture(conditional, spy):
    explorer = explorers.class_explorer(conditional, STAGES)
    found = controls(explorer)
    assert len(spy["show_images"]) == 1  # drawn once when built
    before = picture(explorer)
    found["images"].value = 3
    (images,), kwargs = spy["show_images"][-1]
    assert images.shape[0] == 3 and kwargs["title"] == "CN, seed 0"
    assert picture(explorer) != before
    found["class"].value = 2
    assert spy["show_images"][-1][1]["title"] == "AD, seed 0"
    found["seed"].value = 42
    assert spy["show_images"][-1][1]["title"] == "AD, seed 42"
    assert len(spy["show_images"]) == 4


def test_class_names_must_match_the_generator(conditional):
    with pytest.raises(ValueError, match="2 class names for a generator with 3 classes"):
        explorers.class_explorer(conditional, ["a", "b"])


def test_interpolation_explorer_controls_and_redraws(conditional, spy):
    explorer = explorers.interpolation_explorer(conditional, STAGES)
    found = controls(explorer)
    assert set(found) == {"seed A", "seed B", "steps", "class"}
    assert (found["seed A"].value, found["seed B"].value, found["seed B"].max) == (0, 1, 9999)
    assert (found["steps"].min, found["steps"].max, found["steps"].value) == (2, 16, 8)
    before = picture(explorer)
    found["steps"].value = 4
    found["class"].value = 1
    found["seed B"].value = 7
    assert [call[0][1:5] for call in spy["plot_interpolation"]] == [
        (0, 1, 8, 0), (0, 1, 4, 0), (0, 1, 4, 1), (0, 7, 4, 1)]  # (seed_a, seed_b, steps, label)
    with Image.open(io.BytesIO(before)) as first, Image.open(io.BytesIO(picture(explorer))) as last:
        assert last.size[0] < first.size[0]  # 4 images per strip instead of 8


def test_interpolation_explorer_for_an_unconditional_generator(unconditional, spy):
    found = controls(explorers.interpolation_explorer(unconditional))
    assert set(found) == {"seed A", "seed B", "steps"}
    assert spy["plot_interpolation"][-1][0][4] is None  # no label


def test_truncation_explorer_redraws_with_the_chosen_psi(spy):
    from medgan_core.registry import build_model

    G = build_model("cstylegan2", image_size=32, z_dim=8, w_dim=8, channel_base=128, channel_max=8,
                    num_classes=3)[0].eval()
    explorer = explorers.truncation_explorer(G, STAGES)
    assert set(controls(explorer)) == {"psi", "seed", "images", "class"}
    before = picture(explorer)
    controls(explorer)["psi"].value = 0.0
    assert picture(explorer) != before and spy["show_images"][-1][1]["title"].startswith("psi 0.00")
    with pytest.raises(ValueError, match="needs a generator with a mapping network"):
        explorers.truncation_explorer(build_model("dcgan", image_size=32, g_features=4, d_features=4)[0])
