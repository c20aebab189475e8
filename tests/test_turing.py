"""The visual Turing test: seeded trials, answers appended per reader, exact-CI scoring, and the widget clicked."""
import pandas as pd
import pytest
import torch

from medgan_core.data import ImageSet
from medgan_core.turing import AnswerLog, build_trials, summarize
from medgan_core.widgets import turing_test


def image_set(n: int, value: int, names=("glioma", "notumor")) -> ImageSet:
    images = torch.full((n, 1, 8, 8), value, dtype=torch.uint8) + torch.arange(n, dtype=torch.uint8)[:, None, None, None]
    return ImageSet(images, torch.arange(n) % len(names), list(names), split="test")


@pytest.fixture
def trials():
    return build_trials(image_set(10, 0), {"dcgan": image_set(10, 100), "progan": image_set(10, 200)}, n_real=4,
                        n_per_model=3, seed=1)


def test_trials_mix_real_and_generated_images_in_one_seeded_order(trials):
    assert len(trials) == 10 and trials.images.shape == (10, 1, 8, 8)
    assert trials.table["source"].value_counts().to_dict() == {"real": 4, "dcgan": 3, "progan": 3}
    assert trials.table["source"].tolist() != sorted(trials.table["source"])  # shuffled
    again = build_trials(image_set(10, 0), {"dcgan": image_set(10, 100), "progan": image_set(10, 200)}, n_real=4,
                         n_per_model=3, seed=1)
    assert again.table.equals(trials.table) and torch.equal(again.images, trials.images)  # the same for every reader
    for row, image in zip(trials.table.itertuples(), trials.images):  # each image is the one its row names
        assert int(image.min()) // 100 * 100 == {"real": 0, "dcgan": 100, "progan": 200}[row.source]
    with pytest.raises(ValueError, match="one size"):
        build_trials(image_set(4, 0), {"big": ImageSet(torch.zeros(2, 1, 16, 16, dtype=torch.uint8),
                                                       torch.zeros(2, dtype=torch.long), ["glioma"])})
    with pytest.raises(ValueError, match="no model may be called 'real'"):
        build_trials(image_set(4, 0), {"real": image_set(4, 1)})


def test_answers_are_saved_as_given_and_a_reader_continues_where_they_stopped(trials, tmp_path):
    log = AnswerLog(tmp_path, "ann", trials)
    assert log.next_trial == 0
    log.record(0, "real", 4)
    log.record(1, "synthetic", 2)
    assert len(pd.read_csv(tmp_path / "turing-ann.csv")) == 2  # on disk before the next answer
    again = AnswerLog(tmp_path, "ann", trials)
    assert again.next_trial == 2 and len(again.answers) == 2
    with pytest.raises(ValueError, match="answer must be one of"):
        again.record(2, "maybe")
    with pytest.raises(ValueError, match="confidence must be 1-5"):
        again.record(2, "real", 9)
    saved = pd.read_csv(tmp_path / "turing-ann.csv")
    saved.loc[0, "source"] = "another-model"  # answers given to another seed's or another comparison's trials
    saved.to_csv(tmp_path / "turing-ann.csv", index=False)
    with pytest.raises(ValueError, match="holds answers to other trials"):
        AnswerLog(tmp_path, "ann", trials)
    with pytest.raises(ValueError, match="reader must be a name"):
        AnswerLog(tmp_path, "ann/../x", trials)


def test_summary_gives_accuracy_with_an_exact_ci_sensitivity_specificity_and_per_model_rates():
    answers = pd.DataFrame({
        "trial": [0, 1, 2, 3, 4, 5, 6, 7, 2, 3],
        "source": ["real", "real", "dcgan", "dcgan", "progan", "progan", "real", "progan", "dcgan", "dcgan"],
        "answer": ["real", "synthetic", "synthetic", "real", "real", "real", "real", "synthetic", "synthetic",
                   "real"]})
    summary = summarize(answers)
    assert summary.n == 10 and summary.accuracy == pytest.approx(5 / 10)
    assert summary.accuracy_ci == pytest.approx((0.187086, 0.812914), abs=1e-5)  # Clopper-Pearson 5/10
    assert summary.specificity == pytest.approx(2 / 3) and summary.sensitivity == pytest.approx(3 / 7)
    rates = summary.per_model.set_index("source")["taken_for_real"].to_dict()
    assert rates == pytest.approx({"dcgan": 0.5, "progan": 2 / 3, "real": 2 / 3})
    assert summary.most_real[["trial", "real_votes", "readers"]].values.tolist() == [[3, 2, 2], [4, 1, 1], [5, 1, 1]]
    assert "accuracy 0.50 (95% CI 0.19-0.81, n=10)" in summary.text()
    with pytest.raises(ValueError, match="no answers yet"):
        summarize(answers.iloc[:0])


def test_the_widget_shows_one_image_at_a_time_and_saves_each_click(trials, tmp_path):
    widget = turing_test(trials, tmp_path, "bob", ask_class=True)
    status, picture = widget.children[1], widget.children[2]
    real_button, synthetic_button = widget.children[3].children
    first = bytes(picture.value)
    assert "image 1 of 10" in status.value and first.startswith(b"\x89PNG")
    real_button.click()
    assert "image 2 of 10" in status.value and bytes(picture.value) != first
    synthetic_button.click()
    saved = pd.read_csv(tmp_path / "turing-bob.csv")
    assert saved["answer"].tolist() == ["real", "synthetic"] and saved["trial"].tolist() == [0, 1]
    assert saved["confidence"].tolist() == [3, 3] and saved["class_guess"].tolist() == ["glioma", "glioma"]
    resumed = turing_test(trials, tmp_path, "bob")  # the notebook was closed: the reader continues
    assert "image 3 of 10" in resumed.children[1].value
    for _ in range(8):
        resumed.children[3].children[0].click()
    assert "all 10 images answered" in resumed.children[1].value and resumed.children[3].children[0].disabled
    assert summarize(resumed.answers.answers).n == 10
