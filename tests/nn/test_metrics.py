"""Accuracy, confusion matrix, precision and recall against hand counts."""
from __future__ import annotations

import numpy as np
import pytest

from handgrad import engine, nn


def test_accuracy_from_logits_labels_and_one_hot():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    assert nn.accuracy(logits, y) == 0.75
    assert nn.accuracy(engine.Tensor(logits), np.eye(2)[y]) == 0.75
    assert nn.accuracy(np.array([0, 1, 0, 1]), y) == 0.75
    with pytest.raises(ValueError):
        nn.accuracy(logits, y[:3])


def test_class_labels_as_an_n_by_1_column_are_the_labels_not_one_hot_rows():
    """y.reshape(-1, 1) was read as one-hot rows of one class: the argmax made every label
    0 (accuracy 0.25 for a perfect classifier). A column is the labels, as in sklearn and
    Keras, in every metric; one score per example is never argmaxed into class 0."""
    scores = np.array([[0.1, 2.0, 0.3], [3.0, 0.0, 0.0], [0.0, 0.0, 5.0], [0.0, 4.0, 0.0]])
    labels = np.array([1, 0, 2, 1])
    column = labels.reshape(-1, 1)
    assert nn.accuracy(scores, column) == nn.accuracy(scores, labels) == 1.0
    assert nn.accuracy(column, labels) == nn.accuracy(labels, column) == 1.0   # predictions too
    flat = nn.confusion_matrix(labels, scores)
    np.testing.assert_array_equal(flat, np.diag([1, 2, 1]))
    for y, p in ((column, scores), (column, column), (labels, column), (column, labels)):
        np.testing.assert_array_equal(nn.confusion_matrix(y, p), flat)
    np.testing.assert_array_equal(nn.metrics.predictions(column), labels)
    with pytest.raises(ValueError, match=r"predictions: scores of shape \(4, 1\) hold one score "
                                         r"per example"):
        nn.metrics.predictions(np.array([[0.2], [0.9], [0.7], [0.1]]))
    with pytest.raises(ValueError, match=r"confusion_matrix: labels must be class indices of "
                                         r"shape \(N,\) or \(N, 1\), got shape \(4, 3\)"):
        nn.confusion_matrix(np.eye(3, dtype=int)[labels], np.eye(3, dtype=int)[labels])
    with pytest.raises(ValueError, match=r"accuracy: one-hot/probability labels of shape \(4, 5\)"):
        nn.accuracy(scores, np.eye(5)[labels])
    probs, truth = np.array([0.9, 0.2, 0.7]), np.array([1, 0, 0])
    assert nn.precision_recall(probs, truth[:, None]) == nn.precision_recall(probs, truth)


def test_binary_accuracy_refuses_a_label_other_than_0_or_1_in_any_dtype():
    """One score per example is a binary classifier: a label 2 has no meaning there. Float
    labels were refused; integer ones were compared with the 0/1 predictions (0.333)."""
    scores = np.array([0.0, 2.0, 1.0])
    for labels in (np.array([0.0, 2.0, 1.0]), np.array([0, 2, 1]), np.array([[0], [2], [1]])):
        with pytest.raises(ValueError, match=r"accuracy: binary targets must be 0 or 1 \(one "
                                             r"score per example is a binary classifier\), got 2"):
            nn.accuracy(scores, labels)
    assert nn.accuracy(scores, np.array([False, True, True])) == 2 / 3     # threshold 0: all 1
    assert nn.accuracy(scores[:, None], np.array([0, 1, 1], np.uint8)) == 2 / 3


def test_multiclass_accuracy_refuses_a_label_outside_the_classes():
    """Scores of 3 classes against a label 7 or -1 (an "ignore" marker) counted them as
    wrong predictions (0.0, 0.5) where the loss and PyTorch refuse them."""
    scores = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    for labels, bad in ((np.array([7, -1]), "7"), (np.array([1, 3]), "3"), (np.array([[1], [-1]]), "-1")):
        with pytest.raises(ValueError, match=rf"accuracy: class label {bad} is outside \[0, 3\) "
                                             rf"for scores of 3 classes"):
            nn.accuracy(scores, labels)
    with pytest.raises(ValueError, match=r"accuracy: class label -1 is negative"):
        nn.accuracy(np.array([1, 0]), np.array([1, -1]))      # predicted classes: count unknown
    assert nn.accuracy(scores, np.array([1, 2])) == 0.5
    assert nn.accuracy(np.array([1, 0]), np.array([1, 5])) == 0.5


def test_confusion_matrix_counts():
    y = np.array([0, 0, 1, 2, 2, 2])
    p = np.array([0, 1, 1, 2, 0, 2])
    cm = nn.confusion_matrix(y, p, num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.sum() == 6 and np.trace(cm) == 4
    with pytest.raises(ValueError, match="classes"):
        nn.confusion_matrix(y, p, num_classes=2)


@pytest.mark.parametrize("bad", [2.5, 3.0, True, "3", -2, 0, np.int64(0), [3]])
def test_confusion_matrix_num_classes_must_be_a_positive_integer(bad):
    """A float, a bool (True counted as 1 class), a string or a number below 1 was taken,
    or failed deep in numpy; it is an error naming num_classes, also with no examples."""
    y, p = np.array([0, 1, 1]), np.array([0, 1, 0])
    with pytest.raises(ValueError, match=r"confusion_matrix: num_classes must be a positive integer"):
        nn.confusion_matrix(y, p, bad)
    with pytest.raises(ValueError, match=r"num_classes"):
        nn.confusion_matrix(np.array([], int), np.array([], int), bad)
    assert nn.confusion_matrix(y, p, np.int64(2)).tolist() == [[1, 0], [1, 1]]   # numpy ints too
    assert nn.confusion_matrix(np.array([], int), np.array([], int), 4).shape == (4, 4)


def test_precision_recall_binary_and_multilabel():
    probs = np.array([0.9, 0.8, 0.3, 0.6, 0.1])
    truth = np.array([1, 0, 1, 1, 0])
    # predicted positive at 0.5: items 0, 1, 3 -> tp 2, fp 1, fn 1
    assert nn.precision_recall(probs, truth) == pytest.approx((2 / 3, 2 / 3))
    # at 0.25: items 0, 1, 2, 3 -> tp 3, fp 1, fn 0
    assert nn.precision_recall(probs, truth, threshold=0.25) == pytest.approx((3 / 4, 1.0))
    P = np.array([[0.9, 0.2], [0.7, 0.8], [0.1, 0.6]])
    T = np.array([[1, 0], [0, 1], [0, 0]])
    # label 0: tp 1 fp 1 fn 0; label 1: tp 1 fp 1 fn 0
    per_label = nn.precision_recall(P, T, average=None)
    np.testing.assert_allclose(per_label[0], [0.5, 0.5])
    np.testing.assert_allclose(per_label[1], [1.0, 1.0])
    assert nn.precision_recall(P, T, average="macro") == pytest.approx((0.5, 1.0))
    assert nn.precision_recall(P, T, average="micro") == pytest.approx((0.5, 1.0))
    # nothing predicted positive: precision is 0 by convention, not NaN
    assert nn.precision_recall(np.zeros(3), np.array([1, 0, 1])) == (0.0, 0.0)
    with pytest.raises(ValueError, match="average"):
        nn.precision_recall(P, T, average="weighted")


def test_precision_recall_never_reads_logits_as_probabilities():
    """Logits thresholded at 0.5 would count a logit of 0.3 (probability 0.57) negative:
    values outside [0, 1] without a threshold are an error; threshold=0 reads them."""
    logits = np.array([2.0, 0.3, -1.0, -0.2])
    truth = np.array([1, 1, 0, 1])
    with pytest.raises(ValueError, match=r"outside \[0, 1\]: logits\? Pass threshold=0"):
        nn.precision_recall(logits, truth)
    assert nn.precision_recall(logits, truth, threshold=0) == pytest.approx((1.0, 2 / 3))


NAN_SCORES = np.array([[np.nan, np.nan, np.nan]] * 4)      # argmax reads NaN as class 0


@pytest.mark.parametrize("score", [
    lambda: nn.accuracy(NAN_SCORES, np.zeros(4, np.int64)),                 # was 1.0
    lambda: nn.accuracy(np.array([0.2, np.inf, -3.0, 0.1]), np.array([0, 1, 0, 0])),
    lambda: nn.accuracy(np.array([[np.nan], [0.7]]), np.array([0, 1]), logits=False),
    lambda: nn.confusion_matrix(np.zeros(4, np.int64), NAN_SCORES),         # was all in [0, 0]
    lambda: nn.metrics.predictions(NAN_SCORES),
], ids=["argmax", "binary-logits", "binary-probabilities", "confusion-matrix", "predictions"])
def test_nan_or_inf_scores_are_an_error_not_class_0(score):
    with pytest.raises(ValueError, match=r"the scores are NaN/Inf for \d of \d examples \(the "
                                         r"first is example \d\)"):
        score()


def test_nan_probabilities_or_threshold_are_an_error_in_precision_recall():
    truth = np.array([1, 0, 1])
    with pytest.raises(ValueError, match=r"precision_recall: the probabilities are NaN/Inf for "
                                         r"1 of 3 examples \(the first is example 2\)"):
        nn.precision_recall(np.array([0.9, 0.1, np.nan]), truth)      # NaN read as negative
    with pytest.raises(ValueError, match="precision_recall: threshold must be a finite number, "
                                         "got nan"):
        nn.precision_recall(np.array([0.9, 0.1, 0.8]), truth, threshold=float("nan"))
    with pytest.raises(ValueError, match="accuracy: threshold must be a finite number"):
        nn.accuracy(np.array([0.9, 0.1, 0.8]), truth, threshold=float("nan"))
    with pytest.raises(ValueError, match=r"accuracy: the labels are NaN/Inf"):
        nn.accuracy(np.eye(3), np.array([[1.0, 0, 0], [0, np.nan, 0], [0, 0, 1]]))


def test_sequence_scores_with_one_step_take_labels_of_shape_n_by_1():
    """Scores (N, T, C) against labels (N, T): T = 1 was refused (the labels taken for a
    column of N labels) while T = 2 worked."""
    scores = np.array([[[0.1, 0.9]], [[0.8, 0.2]], [[0.3, 0.7]]])
    assert nn.accuracy(scores, np.array([[1], [0], [0]])) == pytest.approx(2 / 3)
    assert nn.accuracy(np.concatenate([scores, scores], axis=1),
                       np.array([[1, 1], [0, 0], [0, 0]])) == pytest.approx(2 / 3)


def test_a_float_label_beyond_int64_is_named_not_wrapped():
    with pytest.raises(ValueError, match=r"class label 1e\+20"):
        nn.accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1.0, 0.0, 1e20]))


def test_confusion_matrix_and_precision_recall_name_the_value_at_fault():
    with pytest.raises(ValueError, match="label -1 is outside"):
        nn.metrics.confusion_matrix([-1, 0], [0, 0])
    with pytest.raises(ValueError, match=r"prediction 3 is outside \[0, 2\) \(n = num_classes\)"):
        nn.metrics.confusion_matrix([1, 0], [3, 0], num_classes=2)
    with pytest.raises(ValueError, match="targets must be 0 or 1, got 2"):
        nn.metrics.precision_recall(np.array([0.2, 0.9]), np.array([0, 2]))


def test_threshold_and_logits_are_refused_for_multi_class_scores():
    """They apply to one score per example; with class scores they were ignored silently."""
    s, y = np.array([[0.1, 0.9], [0.8, 0.2]]), np.array([1, 0])
    for options in ({"threshold": 0.95}, {"logits": True}):
        with pytest.raises(ValueError, match="one score per example"):
            nn.accuracy(s, y, **options)


def test_metrics_take_arrays_of_other_libraries_through_numpy():
    """An object with a numpy() method of its own (a torch tensor) was called as a handgrad
    Tensor's (numpy(copy=True)) and failed with torch's TypeError."""
    torch = pytest.importorskip("torch")
    assert nn.accuracy(torch.tensor([[0.1, 0.9], [0.8, 0.2]]), torch.tensor([1, 0])) == 1.0


def test_a_uint64_label_beyond_int64_is_named_as_it_is():
    """2**63 as uint64 was reported as the label -9223372036854775808 (the int64 cast)."""
    with pytest.raises(ValueError, match="accuracy: class label 9223372036854775808 is beyond any class"):
        nn.accuracy(np.eye(3), np.array([0, 1, 2**63], np.uint64))


def test_accuracy_of_probabilities_outside_0_1_is_an_error_as_in_precision_recall():
    """accuracy(logits=False) thresholded logits at 0.5, silently: [-3, 0.2, 0.7] against
    [0, 1, 1] said 2/3 where the logits' own answer is 1 (precision_recall refused them)."""
    scores, labels = np.array([-3.0, 0.2, 0.7]), np.array([0, 1, 1])
    with pytest.raises(ValueError, match=r"logits=False, but the scores lie in \[-3, 0.7\]"):
        nn.accuracy(scores, labels, logits=False)
    assert nn.accuracy(scores, labels, logits=True) == 1.0
    assert nn.accuracy(np.array([0.1, 0.6, 0.9]), labels, logits=False) == 1.0
