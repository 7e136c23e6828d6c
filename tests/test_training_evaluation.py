"""Final-evaluation metrics: event-based F1 (against sed_eval), event extraction,
WER/CER, cross-validation summaries, accuracy on soft labels."""

import numpy as np
import pytest

from helpers import require_module, to_numpy
from keras_bat.training import (ClassAccuracy, cross_validation_summary, error_rates, event_based_f1,
                                frames_to_events)


def _random_events(rng, n, classes=3, length=20.0):
    onsets = np.round(rng.uniform(0, length, n), 3)
    return [(float(o), float(o + rng.uniform(0.1, 2.0)), int(rng.integers(classes))) for o in onsets]


def test_event_f1_equals_sed_eval():
    sed_eval = require_module("sed_eval")
    dcase_util = require_module("dcase_util")
    rng = np.random.default_rng(0)
    reference, estimated = {}, {}
    for f in range(4):
        ref = _random_events(rng, 12)
        # Estimates: jittered copies (some beyond the collar), misses and false alarms.
        est = [(on + rng.normal(0, 0.15), off, c) for on, off, c in ref if rng.random() < 0.8]
        est += _random_events(rng, 4)
        reference[f"file{f}.wav"], estimated[f"file{f}.wav"] = ref, est
    ours = event_based_f1(reference, estimated, collar=0.2)

    def container(events):
        return dcase_util.containers.MetaDataContainer(
            [{"filename": name, "event_label": str(c), "onset": on, "offset": off}
             for name, items in events.items() for on, off, c in items])

    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=["0", "1", "2"], t_collar=0.2,
                                                     evaluate_onset=True, evaluate_offset=False)
    ref_container, est_container = container(reference), container(estimated)
    for name in reference:
        metrics.evaluate(reference_event_list=ref_container.filter(filename=name),
                         estimated_event_list=est_container.filter(filename=name))
    overall = metrics.results_overall_metrics()
    assert 0.3 < ours["f1"] < 0.95
    assert ours["f1"] == pytest.approx(overall["f_measure"]["f_measure"], abs=1e-12)
    assert ours["precision"] == pytest.approx(overall["f_measure"]["precision"], abs=1e-12)
    assert ours["recall"] == pytest.approx(overall["f_measure"]["recall"], abs=1e-12)


def test_event_f1_hand_checked():
    reference = [(1.0, 2.0, 0), (5.0, 6.0, 0), (5.0, 7.0, 1)]
    estimated = [(1.15, 3.0, 0), (5.25, 6.0, 0), (5.0, 6.0, 0), (9.0, 9.5, 1)]
    result = event_based_f1(reference, estimated, collar=0.2)
    # Matches: 1.0~1.15 and 5.0~5.0 (class 0); 5.25 is outside the collar; class 1 unmatched.
    assert result["true_positives"] == 2
    assert result["precision"] == pytest.approx(2 / 4) and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 * 2 / (4 + 3))
    assert event_based_f1([], [])["f1"] == 0.0


def test_frames_to_events():
    probabilities = np.zeros((10, 2), "float32")
    probabilities[2:5, 0] = 0.9
    probabilities[7, 0] = 0.9  # a single-patch blip: removed by the median filter
    probabilities[6:10, 1] = 0.4
    events = frames_to_events(probabilities, patch_seconds=0.16, threshold=0.3, median_filter=3)
    assert [label for _, _, label in events] == [0, 1]
    np.testing.assert_allclose([(onset, offset) for onset, offset, _ in events], [(0.32, 0.8), (0.96, 1.6)],
                               atol=1e-9)
    unfiltered = frames_to_events(probabilities, 0.16, threshold=0.3, median_filter=1)
    assert len(unfiltered) == 3


def test_error_rates_known_values():
    rates = error_rates(["the cat sat", "hello world"], ["the cat sat down", "hello word"])
    # words: 1 insertion + 1 substitution over 5 reference words; characters: 5 + 1 over 22.
    assert rates["wer"] == pytest.approx(2 / 5)
    assert rates["cer"] == pytest.approx(6 / 22)
    with pytest.raises(ValueError, match="as many"):
        error_rates(["a"], [])


def test_cross_validation_summary():
    summary = cross_validation_summary([{"accuracy": 0.9}, {"accuracy": 0.8}, {"accuracy": 1.0}])
    assert summary["accuracy"]["mean"] == pytest.approx(0.9)
    assert summary["accuracy"]["std"] == pytest.approx(np.std([0.9, 0.8, 1.0]))
    assert summary["accuracy"]["folds"] == [0.9, 0.8, 1.0]


def test_class_accuracy_on_integer_and_soft_labels():
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 1.0]], "float32")
    for labels, expected in ((np.array([0, 2]), 0.5), (np.array([[0.7, 0.3, 0.0], [0.0, 0.6, 0.4]]), 1.0)):
        metric = ClassAccuracy()
        metric.update_state(labels, logits)
        assert float(to_numpy(metric.result())) == pytest.approx(expected)
