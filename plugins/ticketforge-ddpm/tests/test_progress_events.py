"""Sampling and the featurizer's training report progress (they take minutes on a CPU)."""

from __future__ import annotations

import torch

from ticketforge.progress import ProgressEvent, using
from ticketforge_ddpm.evaluation.data import ImageSet, generate
from ticketforge_ddpm.evaluation.featurizer import FeaturizerConfig, train_classifier


def _tasks(events: list[ProgressEvent]) -> dict[str, tuple[int | None, int]]:
    """Task name -> (total, done at its end)."""
    return {e.task: (e.total, e.done) for e in events if e.kind == "end"}


def test_sampling_reports_every_denoising_step_of_every_batch(tiny_spec, tiny_net):
    events: list[ProgressEvent] = []
    with using(events.append):
        generate(tiny_spec, tiny_net, 3, generator=torch.Generator().manual_seed(0), batch_size=2, steps=4)
    assert _tasks(events) == {"denoising 2 images": (4, 4), "denoising 1 image": (4, 4),
                              "sampling 3 images": (3, 3)}


def test_sampling_without_a_display_draws_the_same_images(tiny_spec, tiny_net):
    def draw():
        return tiny_spec.sample(tiny_net, 2, generator=torch.Generator().manual_seed(0), steps=3)

    with using(lambda event: None):
        shown = draw()
    assert torch.equal(shown, draw())


def test_featurizer_training_reports_its_steps():
    gen = torch.Generator().manual_seed(0)
    data = ImageSet(torch.randint(0, 256, (40, 1, 28, 28), generator=gen, dtype=torch.uint8),
                    torch.arange(40) % 2)
    events: list[ProgressEvent] = []
    with using(events.append):
        train_classifier(data, FeaturizerConfig(max_steps=3, batch_size=8))
    assert _tasks(events) == {"training the lenet featurizer (once per dataset)": (3, 3)}
