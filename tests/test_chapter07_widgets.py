"""Chapter 7's helpers in llm_lib.train_viz: the schedule the explorer draws must be the one train()
uses (llm_lib.train.lr_schedule, built on llm_lib.optim.cosine_lr), and the explorer must render a
static snapshot for the built book.
"""
import doctest
import math

import pytest

from llm_lib import train_viz
from llm_lib.optim import cosine_lr
from llm_lib.train import TrainConfig, lr_schedule
from llm_lib.display import figure_png
from llm_lib.train_viz import ScheduleExplorer, schedule_figure, schedule_stats


def test_docstring_examples_run():
    result = doctest.testmod(train_viz, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted >= 3


@pytest.mark.parametrize("warmup,max_lr,min_lr,iters", [(40, 3e-3, 3e-4, 500), (0, 1e-3, 0.0, 100), (10, 1.0, 1.0, 30)])
def test_schedule_stats_summarise_the_trainers_schedule(warmup, max_lr, min_lr, iters):
    config = TrainConfig(max_iters=iters, warmup_iters=warmup, max_lr=max_lr, min_lr=min_lr)
    lrs = lr_schedule(config)
    # The trainer's schedule is cosine_lr with its decay ending on the last step.
    assert lrs == [cosine_lr(it, max_lr, min_lr, warmup, iters - 1) for it in range(iters)]
    stats = schedule_stats(config)
    assert stats["peak_lr"] == pytest.approx(max_lr) and stats["final_lr"] == pytest.approx(min_lr)
    assert stats["mean_lr"] == pytest.approx(sum(lrs) / iters)
    assert 0.0 <= stats["frac_above_half"] <= 1.0


def test_a_cosine_without_warmup_spends_half_its_steps_above_half_the_peak():
    # With min_lr = 0, (1 + cos(pi x)) / 2 > 1/2 exactly for x < 1/2.
    stats = schedule_stats(TrainConfig(max_iters=1001, warmup_iters=0, max_lr=1.0, min_lr=0.0))
    assert stats["frac_above_half"] == pytest.approx(0.5, abs=2e-3)
    assert stats["mean_lr"] == pytest.approx(0.5, abs=2e-3)  # the mean of (1 + cos) / 2 over a half period
    assert not math.isnan(stats["mean_lr"])


def test_figure_and_explorer_render_and_refuse_bad_settings():
    assert figure_png(schedule_figure(warmup_iters=0, reference=None)).startswith(b"\x89PNG")
    explorer = ScheduleExplorer()
    snapshot = explorer.static_html()
    assert "data:image/png;base64," in snapshot and explorer._snapshot_class in snapshot
    assert "peak <b>3.00e-03</b> at step 40" in snapshot
    explorer.warmup.value = 100
    explorer.min_ratio.value = 0.0
    assert explorer.config().min_lr == 0.0 and "at step 100" in explorer.readout.value
    assert "last step <b>0.00e+00</b>" in explorer.readout.value
    assert bytes(explorer.image.value).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="warmup_iters"):
        schedule_figure(warmup_iters=600, max_iters=500)
    with pytest.raises(ValueError, match="min_lr"):
        ScheduleExplorer(max_lr=1e-3, min_lr=1e-2)
