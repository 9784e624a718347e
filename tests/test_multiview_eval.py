"""Multi-view testing (paper section 4) and mean per-class accuracy (issue 17 items 4, 6).

The softmax of each sample averaged over views that arrive as separate passes, in any
batch order; scored per sample (per video); the pass list explicit. Two ranks summing
their views: tests/test_engine_ddp.py validates through the same averager under torchrun.
"""

from __future__ import annotations

import pytest
import torch
from media import make_tiny_beton

from vicmae.config import FinetuneConfig, load_config
from vicmae.engine.evaluation import (
    ClassifierEval,
    EvalView,
    ViewAverager,
    augmented_views,
    classification_metrics,
    mean_class_accuracy,
    multi_view_views,
)
from vicmae.engine.setup import start_run
from vicmae.jobs.finetune import Classifier
from vicmae.model.vit import ViTEncoder


def _onehot_scores(pred: list[int], classes: int) -> torch.Tensor:
    return torch.eye(classes)[pred] * 0.9 + 0.1 / classes  # (n, C), argmax = pred


def test_mean_class_accuracy_by_hand_where_it_differs_from_top1():
    # Class 0: 4 samples, 3 right; class 1: 2 samples, 1 right; class 2: 1 sample, right.
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    scores = _onehot_scores([0, 0, 0, 1, 1, 0, 2], 3)
    assert mean_class_accuracy(scores, labels) == pytest.approx(100 * (3 / 4 + 1 / 2 + 1) / 3)
    m = classification_metrics(scores, labels)
    assert m["val_top1"] == pytest.approx(100 * 5 / 7)  # 71.4 against 75.0
    assert m["val_mean_class_acc"] == pytest.approx(75.0)
    # Always answering the majority class: top-1 80%, mean per class 50%.
    labels = torch.tensor([0, 0, 0, 0, 1])
    assert mean_class_accuracy(_onehot_scores([0] * 5, 2), labels) == pytest.approx(50.0)
    # A class absent from the labels is left out, not counted as 0%.
    assert mean_class_accuracy(_onehot_scores([0, 1, 1], 4), torch.tensor([0, 1, 1])) == 100.0


def test_mean_class_accuracy_is_top1_when_classes_are_balanced():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(60, 6, generator=g)
    labels = torch.arange(60) % 6
    m = classification_metrics(scores.softmax(1), labels)
    assert m["val_mean_class_acc"] == pytest.approx(m["val_top1"])


def _views_of(n: int, views: int, classes: int, seed: int = 0) -> torch.Tensor:
    """(views, n, C) softmax probabilities, reproducible."""
    g = torch.Generator().manual_seed(seed)
    return (3 * torch.randn(views, n, classes, generator=g)).softmax(-1)


def _reference(probs: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Per-video top-1 and top-5 of the view-averaged softmax, in plain Python."""
    views, n, _ = probs.shape
    top1 = top5 = 0
    for i in range(n):
        avg = [sum(float(probs[v, i, c]) for v in range(views)) / views
               for c in range(probs.shape[2])]  # fmt: skip
        ranked = sorted(range(len(avg)), key=lambda c: -avg[c])
        top1 += ranked[0] == int(labels[i])
        top5 += int(labels[i]) in ranked[:5]
    return 100 * top1 / n, 100 * top5 / n


def test_views_averaged_by_sample_index_whatever_the_batch_order():
    n, views, classes = 23, 6, 8  # e.g. K = 2 clips x 3 crops
    probs = _views_of(n, views, classes)
    labels = torch.arange(n) % classes
    avg = ViewAverager(n)
    for v in range(views):  # one pass per view, each in its own shuffled batches of 5
        order = torch.randperm(n, generator=torch.Generator().manual_seed(v))
        for chunk in order.split(5):
            avg.add(chunk, probs[v, chunk].log(), labels[chunk])  # log: softmax gives probs back
    got_probs, got_labels = avg.averaged()
    torch.testing.assert_close(got_probs, probs.mean(0))
    assert torch.equal(got_labels, labels) and torch.equal(avg.counts, torch.full((n,), 6.0))
    m = avg.metrics()
    top1, top5 = _reference(probs, labels)
    assert m["val_top1"] == pytest.approx(top1) and m["val_top5"] == pytest.approx(top5)
    assert m["val_samples"] == n


def test_the_average_of_views_can_be_right_where_most_views_are_wrong():
    # One video, label 0, three views: two lean to class 1, one is sure of class 0.
    probs = torch.tensor([[0.4, 0.6], [0.45, 0.55], [0.95, 0.05]])
    avg = ViewAverager(1)
    for v in range(3):
        avg.add(torch.tensor([0]), probs[v : v + 1].log(), torch.tensor([0]))
    assert avg.metrics()["val_top1"] == 100.0  # mean (0.6, 0.4): right
    assert classification_metrics(probs, torch.zeros(3, dtype=torch.long))["val_top1"] < 50


def test_samples_never_seen_are_left_out_and_an_empty_averager_says_so():
    avg = ViewAverager(5)
    with pytest.raises(ValueError, match="no samples"):
        avg.averaged()
    avg.add(torch.tensor([1, 3]), torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 0]))
    probs, labels = avg.averaged()
    assert probs.shape == (2, 2) and labels.tolist() == [0, 0]
    assert avg.metrics()["val_samples"] == 2 and avg.metrics()["val_top1"] == 50.0


def test_the_pass_lists():
    assert multi_view_views(7, 3)[:4] == (
        EvalView(test_view=(0, 7, 0, 3)), EvalView(test_view=(0, 7, 1, 3)),
        EvalView(test_view=(0, 7, 2, 3)), EvalView(test_view=(1, 7, 0, 3)),
    )  # fmt: skip
    views = multi_view_views(7, 3)
    assert len(views) == 21 and len(set(views)) == 21
    assert all(not v.train and v.epoch == 0 for v in views)
    assert views[-1].loader_kwargs() == {"train": False, "test_view": (6, 7, 2, 3)}
    assert augmented_views(3) == (EvalView(), EvalView(True, 1), EvalView(True, 2))
    assert augmented_views(1)[0].loader_kwargs() == {"train": False}
    with pytest.raises(ValueError):
        multi_view_views(0)


@pytest.fixture(scope="module")
def eval_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("views")
    beton = str(make_tiny_beton(root / "tiny.beton"))
    cfg = load_config(
        None,
        ["model.arch=vit_pico_patch8", "data.resolution=32", "data.num_workers=1",
         f"run.out={root / 'run'}", "run.progress=false"],
        cls=FinetuneConfig,
    )  # fmt: skip
    torch.manual_seed(0)
    model = Classifier(ViTEncoder.from_arch("vit_pico_patch8", 32), 2).eval()
    with torch.no_grad():
        model.head.weight.normal_()  # a head whose answers depend on the view
    with start_run(cfg, "finetune", overwrite=True) as run:
        yield run, beton, model


def test_classifier_eval_with_an_explicit_pass_list(eval_run):
    """Through the real loader: every sample once per pass, views averaged by index."""
    run, beton, model = eval_run
    once = ClassifierEval(run, beton, 32, 8)(model, epoch=0)
    assert once["val_samples"] == 32 and "val_mean_class_acc" in once
    # The centre view twice averages to the centre view once.
    twice = ClassifierEval(run, beton, 32, 8, views=[EvalView(), EvalView()])(model, epoch=0)
    assert twice["val_top1"] == once["val_top1"] and twice["val_samples"] == 32
    assert twice["val_loss"] == pytest.approx(once["val_loss"], rel=1e-6)
    # views=2 is today's centre + one training-augmented view: another view, the average moves.
    two = ClassifierEval(run, beton, 32, 8, views=2)
    assert two.views == augmented_views(2)
    assert two(model, epoch=0)["val_loss"] != pytest.approx(once["val_loss"], rel=1e-6)
