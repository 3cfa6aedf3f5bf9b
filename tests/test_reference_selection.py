"""Algorithm 1 reference selection (src/data/reference_selection.py): the formulas of docs/design.md, "Stage 2" on
hand-computed examples, ranges over whole clips, the edges (i = 0, i = T - 1, T < n), and bad input."""
import numpy as np
import pytest

from src.data.reference_selection import (
    inference_face_references,
    inference_lip_references,
    training_references,
)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.mark.parametrize(
    "i, T, expected",
    [
        (20, 100, [10, 15, 20, 25, 30]),  # linspace(10, 30, 5): the unclipped window, i in the middle
        (0, 100, [0, 3, 5, 8, 10]),  # linspace(0, 10, 5) = 0, 2.5, 5, 7.5, 10, halves round up
        (99, 100, [89, 92, 94, 97, 99]),  # linspace(89, 99, 5) = 89, 91.5, 94, 96.5, 99
        (3, 100, [0, 3, 7, 10, 13]),  # linspace(0, 13, 5) = 0, 3.25, 6.5, 9.75, 13
        (1, 3, [0, 1, 1, 2, 2]),  # T < n_face: linspace(0, 2, 5), frames repeat
        (0, 1, [0, 0, 0, 0, 0]),
    ],
)
def test_training_face_references_examples(i, T, expected):
    face, _ = training_references(i, T, rng=rng())
    assert face.dtype == np.int64 and face.tolist() == expected


def test_training_face_window_scales_with_n_face():
    face, lip = training_references(50, 200, n_face=3, n_lip=7, rng=rng())
    assert face.tolist() == [44, 50, 56]  # linspace(50 - 6, 50 + 6, 3)
    assert len(lip) == 7


@pytest.mark.parametrize("T", [1, 2, 4, 5, 37])
def test_training_references_in_range_for_every_frame(T):
    g = rng(T)
    for i in range(T):
        face, lip = training_references(i, T, rng=g)
        assert face.shape == (5,) and lip.shape == (5,)
        assert face.min() >= 0 and face.max() <= T - 1 and np.all(np.diff(face) >= 0)
        assert lip.min() >= 0 and lip.max() <= T - 1
        assert face.min() >= i - 10 and face.max() <= i + 10
        if T >= 5:
            assert len(set(lip.tolist())) == 5  # without replacement


def test_training_lip_references_cover_the_clip_and_are_reproducible():
    g = rng(0)
    draws = np.concatenate([training_references(0, 50, rng=g)[1] for _ in range(200)])
    assert draws.min() < 5 and draws.max() > 45  # the whole clip, not a window around i = 0
    a = training_references(10, 50, rng=rng(3))[1]
    b = training_references(10, 50, rng=rng(3))[1]
    assert a.tolist() == b.tolist()


def test_training_lip_references_with_replacement_when_short():
    _, lip = training_references(0, 3, n_lip=8, rng=rng())
    assert lip.shape == (8,) and set(lip.tolist()) <= {0, 1, 2}


def test_training_exclude_target():
    g = rng()
    for i in range(6):
        _, lip = training_references(i, 6, n_lip=5, rng=g, exclude_target=True)
        assert i not in lip.tolist() and len(set(lip.tolist())) == 5
    with pytest.raises(ValueError, match="exclude_target needs T >= 2"):
        training_references(0, 1, rng=g, exclude_target=True)


@pytest.mark.parametrize(
    "i, T, n, expected",
    [
        (50, 100, 5, [48, 49, 50, 51, 52]),
        (0, 100, 5, [0, 1, 2, 3, 4]),  # shifted inside the video at the start
        (1, 100, 5, [0, 1, 2, 3, 4]),
        (99, 100, 5, [95, 96, 97, 98, 99]),  # and at the end
        (50, 100, 4, [48, 49, 50, 51]),  # even n: one more frame before i than after
        (2, 5, 5, [0, 1, 2, 3, 4]),  # T == n: the whole video
        (1, 3, 5, [0, 0, 1, 2, 2]),  # T < n: the window clipped, edge frames repeat
        (0, 1, 5, [0, 0, 0, 0, 0]),
    ],
)
def test_inference_face_references_examples(i, T, n, expected):
    face = inference_face_references(i, T, n)
    assert face.dtype == np.int64 and face.tolist() == expected


def test_inference_face_references_contain_i_and_stay_in_range():
    for T in (1, 3, 5, 6, 40):
        for i in range(T):
            face = inference_face_references(i, T)
            assert face.shape == (5,) and i in face.tolist()
            assert face.min() >= 0 and face.max() <= T - 1


def test_inference_lip_references_example():
    opening = np.array([0.3, 0.1, 0.5, 0.2, 0.4, 0.0, 0.6])  # sorted: frames 5 1 3 0 4 2 6
    assert inference_lip_references(opening, 4).tolist() == [5, 3, 4, 6]  # positions 0, 2, 4, 6
    assert inference_lip_references(opening, 3).tolist() == [5, 0, 6]  # positions 0, 3, 6
    assert inference_lip_references(opening, 7).tolist() == [5, 1, 3, 0, 4, 2, 6]  # every frame


def test_inference_lip_references_span_closed_to_open():
    opening = rng().random(300)
    lip = inference_lip_references(opening)
    assert lip.shape == (25,) and lip.dtype == np.int64
    assert lip[0] == opening.argmin() and lip[-1] == opening.argmax()
    assert np.all(np.diff(opening[lip]) > 0) and len(set(lip.tolist())) == 25


def test_inference_lip_references_short_video_repeats():
    lip = inference_lip_references(np.array([0.2, 0.1, 0.3]), 5)  # positions round(0, .5, 1, 1.5, 2)
    assert lip.tolist() == [1, 0, 0, 2, 2]
    assert inference_lip_references(np.array([1.0]), 25).tolist() == [0] * 25


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: training_references(-1, 10, rng=rng()), r"i must be a 0-based frame index in \[0, T - 1\]"),
        (lambda: training_references(10, 10, rng=rng()), "i must be a 0-based frame index"),
        (lambda: training_references(0, 0, rng=rng()), "T .video length. must be >= 1"),
        (lambda: training_references(2.5, 10, rng=rng()), "i must be an integer"),
        (lambda: training_references(True, 10, rng=rng()), "i must be an integer"),
        (lambda: training_references(0, 10, n_face=0, rng=rng()), "n_face must be >= 1"),
        (lambda: training_references(0, 10, n_lip=0, rng=rng()), "n_lip must be >= 1"),
        (lambda: training_references(0, 10, rng=np.random.RandomState(0)), "rng must be a numpy.random.Generator"),
        (lambda: inference_face_references(5, 5), "i must be a 0-based frame index"),
        (lambda: inference_face_references(0, 5, n_face=-1), "n_face must be >= 1"),
        (lambda: inference_lip_references(np.zeros((3, 2))), r"mouth_opening must be a numeric \(T,\) array"),
        (lambda: inference_lip_references(np.zeros(0)), "T >= 1"),
        (lambda: inference_lip_references(np.array([0.1, np.nan])), "must be finite"),
        (lambda: inference_lip_references(np.zeros(4), n_lip=0), "n_lip must be >= 1"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_integers_are_accepted():
    face, _ = training_references(np.int64(20), np.int32(100), rng=rng())
    assert face.tolist() == [10, 15, 20, 25, 30]
