"""Chapter 12's widget: one GRPO group, G sampled answers to a prompt with their rewards and advantages.

    >>> group_explorer({"SFT": load("sft"), "GRPO": load("grpo")}, load("tokenizer"), tasks)

Displaying it gives a static HTML snapshot of its first state (what a reader of the built book sees)
and the live widget, which hides the snapshot when it renders (llm_lib.display.SnapshotExplorer).
IPython and ipywidgets are imported inside the functions that need them.
"""
from __future__ import annotations

import html

import torch

from llm_lib.display import SnapshotExplorer
from llm_lib.grpo import default_reward, group_normalized_advantages, sample_group

RIGHT, WRONG = "\u2713", "\u2717"

__all__ = ["sample_scored_group", "group_html", "GroupExplorer", "group_explorer"]


def sample_scored_group(model, tok, task, group_size=8, seed=0, temperature=1.0, max_new_tokens=8,
                        format_bonus=0.1, check=None):
    """G replies to task.prompt with what GRPO computes from them: rows of dicts with keys
    reply, finished, correct, reward, advantage (std-normalised) and dr_advantage (mean only)."""
    if check is None:
        from llm_lib.sft import is_correct as check
    gen = torch.Generator().manual_seed(seed)
    _, _, texts, finished = sample_group(model, tok, task.prompt, group_size, max_new_tokens, temperature,
                                         generator=gen)
    rewards = torch.tensor([default_reward(task, t, f, check, format_bonus) for t, f in zip(texts, finished)])
    adv = group_normalized_advantages(rewards, group_size)
    dr = group_normalized_advantages(rewards, group_size, scale_by_std=False)
    return [{"reply": t, "finished": f, "correct": bool(check(task, t)), "reward": float(r), "advantage": float(a),
             "dr_advantage": float(d)} for t, f, r, a, d in zip(texts, finished, rewards, adv, dr)]


def _bar(value, scale=2.5):
    """A small horizontal bar for an advantage: blue to the right (reinforced), vermillion to the left."""
    width = min(abs(value) / scale, 1.0) * 60
    colour = "#0072b2" if value >= 0 else "#d55e00"
    left = 60 if value >= 0 else 60 - width
    return (f'<div style="position:relative;width:120px;height:10px;background:#f2f2f2">'
            f'<div style="position:absolute;left:60px;top:0;width:1px;height:10px;background:#555"></div>'
            f'<div style="position:absolute;left:{left:.1f}px;top:1px;width:{width:.1f}px;height:8px;'
            f'background:{colour}"></div></div>')


def group_html(task, rows, title=""):
    """An HTML table of one scored group (rows from sample_scored_group)."""
    n_right = sum(r["correct"] for r in rows)
    head = ("<tr><th>#</th><th style='text-align:left'>sampled reply</th><th>right?</th><th>&lt;|end|&gt;?</th>"
            "<th>reward</th><th>advantage<br>(r - mean) / std</th><th></th><th>Dr. GRPO<br>r - mean</th></tr>")
    body = []
    for i, r in enumerate(rows):
        reply = html.escape(r["reply"].replace("\n", "\u21b5")) or "<i>(empty)</i>"
        body.append(f"<tr><td>{i + 1}</td><td style='text-align:left;white-space:pre;font-family:ui-monospace,"
                    f"Menlo,Consolas,monospace'>{reply}</td><td>{RIGHT if r['correct'] else WRONG}</td>"
                    f"<td>{'yes' if r['finished'] else 'no'}</td><td>{r['reward']:.2f}</td>"
                    f"<td>{r['advantage']:+.2f}</td><td>{_bar(r['advantage'])}</td><td>{r['dr_advantage']:+.2f}</td></tr>")
    note = ("every answer got the same reward: all advantages are 0 and this group teaches nothing"
            if len({round(r["reward"], 6) for r in rows}) == 1 else
            "answers above the group's mean reward are made more likely, those below less likely")
    return (f'<div style="color:#111;font-size:13px">'
            f'<div style="margin:4px 0"><b>{html.escape(title)}</b> Prompt: <code>{html.escape(task.prompt)}</code> '
            f'(answer <code>{html.escape(task.answer)}</code>): {n_right} of {len(rows)} right; {note}.</div>'
            f'<table style="border-collapse:collapse;text-align:center">{head}{"".join(body)}</table></div>')


class GroupExplorer(SnapshotExplorer):
    """Pick a model, a prompt and a sampling seed; see the group GRPO would learn from."""

    def __init__(self, models: dict, tok, tasks, group_size=8, seed=0, temperature=1.0):
        import ipywidgets as widgets

        if not models or not tasks:
            raise ValueError("GroupExplorer needs at least one model and one task")
        self.models, self.tok, self.tasks, self.group_size = models, tok, list(tasks), group_size
        self.temperature = temperature
        self.model = widgets.Dropdown(options=list(models), description="Model")
        self.task = widgets.Dropdown(options=[(t.prompt, i) for i, t in enumerate(self.tasks)], description="Prompt",
                                     layout=widgets.Layout(width="380px"))
        self.seed = widgets.IntSlider(value=seed, min=0, max=99, description="Seed")
        self.view = widgets.HTML()
        hide = self._hide_snapshot()
        self.widget = widgets.VBox([widgets.HBox([self.model, self.task, self.seed]), self.view, hide])
        for control in (self.model, self.task, self.seed):
            control.observe(lambda change: self._redraw(), names="value")
        self._redraw()

    def _html(self):
        task = self.tasks[self.task.value]
        rows = sample_scored_group(self.models[self.model.value], self.tok, task, self.group_size, self.seed.value,
                                   self.temperature)
        return group_html(task, rows, title=f"{self.model.value}, seed {self.seed.value}.")

    def _redraw(self):
        self.view.value = self._html()

    def static_html(self) -> str:
        return self._snapshot(self.view.value, "run the notebook to pick the model, prompt and seed yourself.")


def group_explorer(models: dict, tok, tasks, group_size=8, seed=0, temperature=1.0) -> GroupExplorer:
    """An interactive view of one GRPO group: `group_explorer({"SFT": sft, "GRPO": grpo}, tok, tasks)`."""
    return GroupExplorer(models, tok, tasks, group_size, seed, temperature)
