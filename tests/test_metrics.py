"""Metrics: hand-computed cases, agreement with scikit-learn and the official ISIC scorer,
bootstrap."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

from utils.data import datasets
from utils.errors import DataError
from utils.scoring import metrics, predictions

HAM = datasets.HAM10000.classes


def random_predictions(n: int, seed: int, signal: float = 1.5, classes=HAM) -> tuple:
    """Labels and softmax probabilities with some signal (continuous, so no tied maxima)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), y] += signal
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def predictions_frame(y, probs, classes=HAM, lesions=None) -> pd.DataFrame:
    ids = [f"ISIC_{i:07d}" for i in range(len(y))]
    frame = pd.DataFrame({
        "image_id": ids,
        "lesion_id": lesions if lesions is not None else ids,
        "label": [classes[k] for k in y],
        "label_index": y,
        "split": "test",
    })
    for k, code in enumerate(classes):
        frame[code] = probs[:, k]
    return frame


def test_hand_computed_three_class_case():
    classes = ("a", "b", "c")
    y = np.array([0, 0, 1, 1, 2])
    probs = np.array([
        [0.8, 0.1, 0.1],  # a -> a
        [0.2, 0.7, 0.1],  # a -> b
        [0.1, 0.8, 0.1],  # b -> b
        [0.1, 0.6, 0.3],  # b -> b
        [0.5, 0.1, 0.4],  # c -> a
    ])
    values = {k: float(v[0]) for k, v in metrics.metric_replicates(y, probs, classes).items()}
    assert values["accuracy"] == pytest.approx(3 / 5)
    assert values["balanced_accuracy"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    # precision a = 1/2, b = 2/3, c undefined (never predicted) -> NaN; F1 a = 1/2, b = 4/5, c = 0
    assert values["precision/a"] == pytest.approx(0.5)
    assert values["precision/b"] == pytest.approx(2 / 3)
    assert np.isnan(values["precision/c"])
    assert values["f1/b"] == pytest.approx(0.8)
    assert values["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert values["specificity/a"] == pytest.approx(2 / 3)  # negatives b, b, c; c predicted a
    # AUC of class c: positive score 0.4 against negatives 0.1, 0.1, 0.1, 0.3 -> 1.0
    assert values["auc/c"] == pytest.approx(1.0)
    np.testing.assert_array_equal(metrics.confusion_matrix(y, probs),
                                  [[1, 1, 0], [0, 2, 0], [1, 0, 0]])


def test_tied_maximum_counts_as_wrong():
    classes = ("a", "b")
    y = np.array([0, 1, 1])
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.3, 0.7]])
    assert metrics.predicted_labels(probs).tolist() == [metrics.UNDECIDED, 1, 1]
    values = metrics.metric_replicates(y, probs, classes)
    assert values["balanced_accuracy"][0] == pytest.approx((0 + 1) / 2)
    assert values["accuracy"][0] == pytest.approx(2 / 3)


def test_auc_with_tied_scores_counts_half():
    positive = np.array([1, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    # pairs: (0.9>0.5)=1, (0.9>0.1)=1, (0.5=0.5)=0.5, (0.5>0.1)=1 -> 3.5 / 4
    assert metrics.binary_auc(positive, scores)[0] == pytest.approx(0.875)
    assert metrics.binary_auc(positive, scores)[0] == pytest.approx(roc_auc_score(positive, scores))


def test_threshold_at_specificity_hand_case():
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.4, 0.35, 0.1, 0.05])
    # sorted: .05n .1n .2p .3p .35n .4n .7n .8p .9p; a rule "score >= t"
    # specificity >= 0.8 needs 4 of 5 negatives below t: lowest such t = 0.7 (sensitivity 2/4)
    assert metrics.threshold_at_specificity(positive, scores, 0.8) == 0.7
    assert metrics.threshold_at_specificity(positive, scores, 0.6) == 0.4
    # specificity >= 0.4 needs 2 negatives below: t = 0.2 catches all 4 positives
    assert metrics.threshold_at_specificity(positive, scores, 0.4) == 0.2
    assert metrics.threshold_at_specificity(positive, scores, 0.0) == 0.05
    # specificity 1.0 needs every negative below t: t = 0.8 (0.7 is the largest negative)
    assert metrics.threshold_at_specificity(positive, scores, 1.0) == 0.8
    # only "nothing positive" reaches 1.0 when a negative has the top score
    top_negative = scores.copy()
    top_negative[4] = 0.95
    assert metrics.threshold_at_specificity(positive, top_negative, 1.0) > 0.95
    sens, spec = metrics.rule_rates(positive, scores >= 0.7)
    assert sens[0] == pytest.approx(0.5) and spec[0] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="specificity"):
        metrics.threshold_at_specificity(positive, scores, 1.5)


def test_operating_point_is_fixed_on_validation_and_applied_to_test():
    y_val, p_val = random_predictions(300, seed=11)
    y_test, p_test = random_predictions(200, seed=12)
    mel = HAM.index("mel")
    point = metrics.fit_operating_point(y_val, p_val, HAM, 0.8)
    assert point.code == "mel" and point.sensitivity_name == "melanoma_sensitivity_at_val_spec80"
    assert metrics.operating_point_name(0.875) == "melanoma_sensitivity_at_val_spec87p5"
    # on validation the rule reaches the target, and no lower threshold does
    negatives = p_val[y_val != mel, mel]
    assert (negatives < point.threshold).mean() >= 0.8
    assert (negatives < negatives[negatives < point.threshold].max()).mean() < 0.8
    # on test, the same rule (not the test ROC) gives the reported numbers
    values = metrics.metric_replicates(y_test, p_test, HAM, operating_point=point)
    flagged = p_test[:, mel] >= point.threshold
    assert values[point.sensitivity_name][0] == pytest.approx(flagged[y_test == mel].mean())
    assert values[point.specificity_name][0] == pytest.approx((~flagged[y_test != mel]).mean())
    val_frame, test_frame = predictions_frame(y_val, p_val), predictions_frame(y_test, p_test)
    result = metrics.evaluate_predictions(test_frame, n_boot=50, val_frame=val_frame)
    assert result["operating_point"]["threshold"] == point.threshold
    assert result["operating_point"]["val_specificity"] >= 0.8
    assert result["metrics"][point.sensitivity_name]["value"] == pytest.approx(
        flagged[y_test == mel].mean())
    assert point.sensitivity_name not in metrics.evaluate_predictions(test_frame, n_boot=0)[
        "metrics"]  # no validation predictions: no operating point (the test chooses nothing)


def test_mcc_agrees_with_scikit_learn_one_vs_rest():
    from sklearn.metrics import matthews_corrcoef

    y, probs = random_predictions(300, seed=13)
    values = metrics.metric_replicates(y, probs, HAM)
    predicted = probs.argmax(axis=1)
    for k, code in enumerate(HAM):
        assert values[f"mcc/{code}"][0] == pytest.approx(
            matthews_corrcoef(y == k, predicted == k))


def test_fpr_at_tpr_hand_case_and_bootstrap_shape():
    positive = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.3, 0.2, 0.7, 0.4, 0.35, 0.1, 0.05])
    # catching all 4 positives needs t <= 0.2: negatives 0.7, 0.4, 0.35 flagged -> 3/5
    assert metrics.fpr_at_tpr(positive, scores, 0.95)[0] == pytest.approx(0.6)
    # half the positives: t = 0.8 flags no negative
    assert metrics.fpr_at_tpr(positive, scores, 0.5)[0] == pytest.approx(0.0)
    weights = metrics.bootstrap_weights(None, len(scores), n_boot=20, seed=0)
    assert metrics.fpr_at_tpr(positive, scores, 0.95, weights).shape == (20,)


def test_agrees_with_scikit_learn():
    y, probs = random_predictions(400, seed=1)
    values = metrics.metric_replicates(y, probs, HAM)
    predicted = probs.argmax(axis=1)
    assert values["balanced_accuracy"][0] == pytest.approx(balanced_accuracy_score(y, predicted))
    assert values["macro_f1"][0] == pytest.approx(f1_score(y, predicted, average="macro"))
    for k, code in enumerate(HAM):
        assert values[f"auc/{code}"][0] == pytest.approx(roc_auc_score(y == k, probs[:, k]))
    assert values["macro_auc"][0] == pytest.approx(
        roc_auc_score(y, probs, multi_class="ovr", average="macro"))


def official_score(y: np.ndarray, probs: np.ndarray):
    """The official isic-challenge-scoring 5.6.0 classification score on the same predictions,
    in the ISIC 2018 Task 3 column names (mapped from HAM10000 codes, never retyped)."""
    from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore

    columns = datasets.ISIC2018_TASK3_COLUMNS
    ham_index = [HAM.index(datasets.ISIC2018_TASK3_TO_HAM[c]) for c in columns]
    index = pd.Index([f"ISIC_{i:07d}" for i in range(len(y))], name="image")
    truth = pd.DataFrame(np.eye(len(HAM))[y][:, ham_index], index=index, columns=list(columns))
    prediction = pd.DataFrame(probs[:, ham_index], index=index, columns=list(columns))
    weights = pd.DataFrame({"score_weight": 1.0, "validation_weight": 1.0}, index=index)
    return ClassificationScore(truth, prediction, weights, ClassificationMetric.BALANCED_ACCURACY)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # the scorer calls DataFrame.applymap
@pytest.mark.parametrize("with_ties", [False, True])
def test_agrees_with_official_isic_challenge_scoring(with_ties):
    y, probs = random_predictions(600, seed=2, signal=1.0)
    if with_ties:  # 40 rows whose two largest probabilities are equal
        rows = np.arange(0, 600, 15)
        top2 = np.argsort(probs[rows], axis=1)[:, -2:]
        mean = probs[rows[:, None], top2].mean(axis=1, keepdims=True)
        probs[rows[:, None], top2] = mean
        assert (metrics.predicted_labels(probs) == metrics.UNDECIDED).sum() == len(rows)
    ours = metrics.metric_replicates(y, probs, HAM)
    official = official_score(y, probs)
    assert ours["balanced_accuracy"][0] == pytest.approx(
        official.aggregate["balanced_accuracy"], abs=1e-12)
    for isic_code in datasets.ISIC2018_TASK3_COLUMNS:
        ham_code = datasets.ISIC2018_TASK3_TO_HAM[isic_code]
        assert ours[f"auc/{ham_code}"][0] == pytest.approx(
            official.per_category.loc[isic_code, "auc"], abs=1e-12)
    assert ours["macro_auc"][0] == pytest.approx(official.macro_average["auc"], abs=1e-12)
    if with_ties:  # the tie rule matters: plain argmax would score differently
        plain = balanced_accuracy_score(y, probs.argmax(axis=1))
        assert plain != pytest.approx(ours["balanced_accuracy"][0])


def test_confidence_intervals_contain_point_and_shrink_with_more_data():
    small = metrics.evaluate_arrays(*random_predictions(150, seed=3), HAM, n_boot=400, seed=0)
    large = metrics.evaluate_arrays(*random_predictions(2400, seed=3), HAM, n_boot=400, seed=0)
    for result in (small, large):
        for name, stats in result["metrics"].items():
            if stats["value"] is not None and stats["ci_low"] is not None:
                assert stats["ci_low"] <= stats["value"] <= stats["ci_high"], name
    for name in ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy", "sensitivity/mel"):
        width_small = small["metrics"][name]["ci_high"] - small["metrics"][name]["ci_low"]
        width_large = large["metrics"][name]["ci_high"] - large["metrics"][name]["ci_low"]
        assert width_large < 0.6 * width_small, name


def test_bootstrap_is_seeded():
    y, probs = random_predictions(200, seed=4)
    first = metrics.evaluate_arrays(y, probs, HAM, n_boot=100, seed=7)
    again = metrics.evaluate_arrays(y, probs, HAM, n_boot=100, seed=7)
    other = metrics.evaluate_arrays(y, probs, HAM, n_boot=100, seed=8)
    assert first["metrics"] == again["metrics"]
    assert first["metrics"]["balanced_accuracy"] != other["metrics"]["balanced_accuracy"]
    no_ci = metrics.evaluate_arrays(y, probs, HAM, n_boot=0)["metrics"]["balanced_accuracy"]
    assert no_ci["value"] == first["metrics"]["balanced_accuracy"]["value"]
    assert no_ci["ci_low"] is None and no_ci["ci_high"] is None


def test_lesion_bootstrap_resamples_whole_groups():
    groups = np.repeat([f"L{i}" for i in range(50)], 4)
    weights = metrics.bootstrap_weights(groups, len(groups), n_boot=200, seed=0)
    by_group = weights.reshape(200, 50, 4)
    assert (by_group == by_group[:, :, :1]).all()  # every image of a lesion shares its count
    assert (by_group[:, :, 0].sum(axis=1) == 50).all()  # 50 lesions drawn per replicate
    image_weights = metrics.bootstrap_weights(None, len(groups), n_boot=200, seed=0)
    assert (image_weights.sum(axis=1) == len(groups)).all()
    assert not (
        image_weights.reshape(200, 50, 4) == image_weights.reshape(200, 50, 4)[:, :, :1]
    ).all()


def test_lesion_bootstrap_widens_intervals_when_images_repeat_a_lesion():
    y, probs = random_predictions(100, seed=5)
    y, probs = np.repeat(y, 5), np.repeat(probs, 5, axis=0)  # 5 identical images per lesion
    lesions = np.repeat(np.arange(100).astype(str), 5)
    frame = predictions_frame(y, probs, lesions=lesions)
    by_lesion = metrics.evaluate_predictions(frame, n_boot=300, seed=0)
    by_image = metrics.evaluate_predictions(frame.assign(lesion_id=frame["image_id"]), n_boot=300)
    assert by_lesion["bootstrap"]["unit"] == "lesion" and by_lesion["n_groups"] == 100
    assert by_image["bootstrap"]["unit"] == "image"
    width = {
        name: r["metrics"]["balanced_accuracy"]["ci_high"]
        - r["metrics"]["balanced_accuracy"]["ci_low"]
        for name, r in (("lesion", by_lesion), ("image", by_image))
    }
    assert width["lesion"] > 1.5 * width["image"]  # sqrt(5) ~ 2.2 in expectation


def test_evaluate_predictions_excludes_images_and_writes_a_table():
    y, probs = random_predictions(60, seed=6)
    frame = predictions_frame(y, probs)
    result = metrics.evaluate_predictions(frame, n_boot=50, exclude=[frame["image_id"].iloc[0]])
    assert result["n_images"] == 59
    table = metrics.metrics_table(result)
    assert list(table.columns) == ["metric", "class", "value", "ci_low", "ci_high"]
    assert set(table.loc[table["class"] == "", "metric"]) >= {
        "accuracy", "balanced_accuracy", "macro_f1", "macro_auc"}
    for metric in ("precision", "sensitivity", "specificity", "f1", "mcc", "auc"):
        assert set(table.loc[table["metric"] == metric, "class"]) == set(HAM), metric


def test_melanoma_class_found_in_both_datasets():
    assert metrics.melanoma_class(datasets.HAM10000.classes) == datasets.HAM10000.classes[4]
    assert metrics.melanoma_class(datasets.ISIC2019.classes) == datasets.ISIC2019.classes[0]
    assert metrics.melanoma_class(("x", "y")) is None


def test_bad_predictions_name_the_row(tmp_path):
    y, probs = random_predictions(5, seed=0)
    frame = predictions_frame(y, probs)
    frame.loc[3, "label"] = "melanoma?"
    path = tmp_path / "predictions_test.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(DataError, match=r"row 5 .*melanoma\?"):
        predictions.read_predictions(path)
    with pytest.raises(DataError, match="lacks column"):
        predictions.validate_predictions(frame.drop(columns="split"))
    with pytest.raises(DataError, match="not found"):
        predictions.read_predictions(tmp_path / "missing.csv")
