"""The agreement report of a site: answers read from the database into `agreement.Judgement`s,
every figure computed, rendered as text (the `agreement` verb), table rows and a PNG plot (the
admin page)."""

from __future__ import annotations

import io
import math

from rlhf_jax.feedback import agreement as ag
from rlhf_jax.feedback.models import FLAG_KEYS, FLAGS, Answer, Task


def judgements(batch: str | None = None) -> list[ag.Judgement]:
  q = (Answer.objects.select_related("assignment__task", "assignment__labeler")
       .filter(assignment__task__kind__in=(Task.RANKING, Task.PAIRWISE)).order_by("id"))
  if batch:
    q = q.filter(assignment__task__batch=batch)
  out = []
  for ans in q.iterator():
    a, t = ans.assignment, ans.assignment.task
    out.append(ag.Judgement(
        task=t.pk, labeler=a.labeler.username, ranks=tuple(ans.ranks),
        ratings=tuple(ans.ratings), flags=tuple(frozenset(f) for f in ans.flags),
        shown=tuple(a.order), lengths=tuple(len(r.split()) for r in t.responses),
        seconds=ans.seconds, gold=tuple(t.gold["ranks"]) if t.gold else None))
  return out


def _system(src: dict) -> str:
  step = src.get("step")
  return f"{src.get('workdir')}" + (f"@{step}" if step is not None else "")


def checkpoint_games(batch: str | None = None):
  """(systems_a, systems_b, outcomes) from answers whose responses come from different
  checkpoints (workdir@step): every strictly ordered pair is one game, for the Elo table."""
  q = (Answer.objects.select_related("assignment__task")
       .filter(assignment__task__kind__in=(Task.RANKING, Task.PAIRWISE)))
  if batch:
    q = q.filter(assignment__task__batch=batch)
  sa, sb, ys = [], [], []
  for ans in q.iterator():
    names = [_system(s) for s in ans.assignment.task.sources]
    for (i, j), sign in ag.strict_pairs(ans.ranks).items():
      if len(names) == len(ans.ranks) and names[i] != names[j]:
        sa.append(names[i])
        sb.append(names[j])
        ys.append(1.0 if sign > 0 else 0.0)
  return sa, sb, ys


def elo_table(batch: str | None = None) -> list:
  """Elo ratings (rlhf_jax.reward.elo) of the checkpoints the answers compared; [] if < 2."""
  from rlhf_jax.reward import elo  # pylint: disable=g-import-not-at-top  (numpy only)
  sa, sb, ys = checkpoint_games(batch)
  return elo.fit_bradley_terry(sa, sb, ys) if len(set(sa) | set(sb)) >= 2 else []


def compute(batch: str | None = None) -> dict:
  js = judgements(batch)
  plain = [j for j in js if j.gold is None]  # agreement on real tasks; gold reported apart
  pair, pair_n = ag.pairwise_agreement(plain)
  tau, tau_n = ag.kendall_tau_b(plain)
  alpha, alpha_n = ag.ratings_alpha([j for j in plain if any(r is not None for r in j.ratings)])
  return {"answers": len(js), "overlap_tasks": len(ag.by_task(plain)),
          "pairwise_agreement": pair, "pairwise_n": pair_n, "kendall_tau_b": tau,
          "kendall_n": tau_n, "ratings_alpha": alpha, "alpha_units": alpha_n,
          "flag_kappa": ag.flag_kappas(plain, FLAG_KEYS),
          "majority": ag.majority_agreement(plain), "gold": ag.gold_agreement(js),
          "position_bias": ag.position_bias(js), "length_bias": ag.length_bias(js),
          "seconds": ag.seconds_per_task(js), "elo": elo_table(batch)}


def _f(x, digits=3) -> str:
  return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table_rows(r: dict) -> list[tuple[str, str, str]]:
  """(figure, value, over what) rows, for the page and the console."""
  pb, lb = r["position_bias"], r["length_bias"]
  rows = [("answers", str(r["answers"]), "ranking and pairwise"),
          ("overlap tasks", str(r["overlap_tasks"]), "tasks with >= 2 labelers (gold excluded)"),
          ("pairwise agreement", _f(r["pairwise_agreement"]), f"{r['pairwise_n']} pair judgements"),
          ("Kendall tau-b", _f(r["kendall_tau_b"]), f"{r['kendall_n']} labeler pairs x tasks"),
          ("Krippendorff alpha (ratings, ordinal)", _f(r["ratings_alpha"]),
           f"{r['alpha_units']} (task, response) units"),
          ("position bias: shown first wins", _f(pb.rate), f"{pb.n} pairs, p={_f(pb.p_value, 4)}"),
          ("length bias: longer wins", _f(lb.rate), f"{lb.n} pairs, p={_f(lb.p_value, 4)}")]
  labels = dict(FLAGS)
  for key, (kappa, n) in r["flag_kappa"].items():
    rows.append((f"Fleiss kappa: {labels[key]}", _f(kappa), f"{n} units"))
  for who, (rate, n) in r["majority"].items():
    rows.append((f"{who}: agrees with others' majority", _f(rate), f"{n} pairs"))
  for who, (rate, n) in r["gold"].items():
    rows.append((f"{who}: agrees with gold", _f(rate), f"{n} pairs"))
  for who, s in r["seconds"].items():
    rows.append((f"{who}: seconds per task (median)", _f(s["median"], 1), f"{s['n']} tasks"))
  for e in r.get("elo", []):
    rows.append((f"Elo {e.system}", f"{e.rating:.0f}", f"± {e.stderr:.0f}, {e.games} games"))
  return rows


def format_text(r: dict) -> str:
  rows = table_rows(r)
  w = max(len(a) for a, _, _ in rows)
  return "\n".join(f"{a:<{w}}  {b:>7}  {c}" for a, b, c in rows)


def plot_png(r: dict) -> bytes:
  """Per labeler: agreement with the others' majority and with gold, beside the overall rate."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  names = sorted(set(r["majority"]) | set(r["gold"]))
  fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
  x = range(len(names))
  ax.bar([i - 0.2 for i in x], [r["majority"].get(n, (math.nan, 0))[0] for n in names], 0.4,
         label="with others' majority", color="#3a6ea5")
  ax.bar([i + 0.2 for i in x], [r["gold"].get(n, (math.nan, 0))[0] for n in names], 0.4,
         label="with gold", color="#e09f3e")
  if not math.isnan(r["pairwise_agreement"]):
    ax.axhline(r["pairwise_agreement"], color="#444", ls="--", lw=1,
               label=f"pairwise agreement {r['pairwise_agreement']:.2f}")
  ax.axhline(0.5, color="#bbb", lw=1)
  ax.set_xticks(list(x), names)
  ax.set_ylim(0, 1.18)  # headroom so the legend sits above the bars
  ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
  ax.set_ylabel("agreement")
  ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
  ax.set_title("Labeler agreement (pairs of responses, ties excluded)", fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  plt.close(fig)
  return buf.getvalue()
