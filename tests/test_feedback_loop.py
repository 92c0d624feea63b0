"""The loop closed through the app, offline: built-in prompts and answers -> import -> the
simulated labelers log in and answer over HTTP -> export -> a reward model trained on the export
with no conversion step, against one trained on the same labelers' comparisons written directly;
and the agreement report recovers the simulated labelers' configured agreement."""

import itertools
import json
import os
import sys

import numpy as np
import pytest

import feedback_live as fl

fl.need_feedback_deps()

from rlhf_jax import stages  # noqa: E402  pylint: disable=wrong-import-position
from rlhf_jax.data import builtin_task as bt  # noqa: E402  pylint: disable=wrong-import-position
from rlhf_jax.data import labelers as lab  # noqa: E402  pylint: disable=wrong-import-position
from rlhf_jax.feedback import simulate  # noqa: E402  pylint: disable=wrong-import-position

sys.path.insert(0, os.path.join(fl.REPO, "configs"))
import reward  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

K = 4
USERS = [(f"sim{i}", f"sim{i}-pass-123") for i in range(3)]


def _tasks(n, split, seed):
  """n built-in prompts with K answers of mixed quality (ended and short enough to fit)."""
  rng = np.random.default_rng(seed)
  out = []
  for p in bt.prompts(n, split, seed):
    out.append({"prompt": p.text, "responses": list(dict.fromkeys(
        " ".join(bt.write_response(p, rng.uniform(0.1, 1.0), rng).split()[:40])
        for _ in range(K)))})
  return [t for t in out if len(t["responses"]) == K]


def _direct(labeler, tasks):
  recs = []
  for t in tasks:
    ranks = simulate.rank_as(labeler, t["prompt"], t["responses"])
    recs.append(dict(t, ranks=ranks, ranking=sorted(range(K), key=ranks.__getitem__)))
  return recs


@pytest.fixture(scope="module")
def site(tmp_path_factory):
  home = tmp_path_factory.mktemp("loop_site")
  fl.make_site(home, None, USERS)
  train = _tasks(160, "train", 1)
  fl.cli(home, "import", fl.write_jsonl(home / "train.jsonl", train), "--batch", "train")
  with fl.live_server(home) as url:
    yield {"home": home, "url": url, "train": train}


def test_reward_model_from_the_export_matches_one_from_direct_comparisons(site, tmp_path):
  counts = simulate.run(site["url"], USERS[:1])  # one labeler: the direct file is the same labels
  assert counts == {"sim0": len(site["train"])}
  fl.cli(site["home"], "export", "--out", str(tmp_path / "exp"), "--batch", "train")
  exported = [json.loads(x) for x in open(tmp_path / "exp" / "comparisons.jsonl")]
  labeler = lab.default_labelers(1)[0]
  direct = _direct(labeler, site["train"])
  assert len(exported) == len(direct)
  assert ({(r["prompt"], tuple(r["ranks"])) for r in exported} ==
          {(r["prompt"], tuple(r["ranks"])) for r in direct})
  direct_path = fl.write_jsonl(tmp_path / "direct.jsonl", direct)
  held_out = fl.write_jsonl(tmp_path / "eval.jsonl", _direct(labeler, _tasks(80, "eval", 2)))
  acc = {}
  for name, src in (("app", str(tmp_path / "exp" / "comparisons.jsonl")), ("direct", direct_path)):
    c = reward.get_config()
    c.init.from_workdir = ""
    c.data.update(source=src, format="ranked", eval_split=held_out, tokenizer="builtin",
                  max_len=64, truncation="truncate_prompt_left")
    c.model.update(hidden=32, mlp_dim=64, num_layers=1, max_seq_len=64, tie_embeddings=False)
    c.train.update(steps=120, batch_size=16, log_every=60, eval_every=1000,
                   checkpoint_every=1000)
    c.optim.update(learning_rate=3e-3, warmup_steps=10)
    acc[name] = stages.run(c, str(tmp_path / f"rm_{name}"))["report"]["accuracy"]
  print(f"held-out accuracy: app {acc['app']:.3f}, direct {acc['direct']:.3f}")
  assert abs(acc["app"] - acc["direct"]) <= 0.05
  assert acc["direct"] > 0.6  # both learnt the labeler's preference, not a coin toss


def test_agreement_report_recovers_the_labelers_configured_agreement(site, tmp_path):
  tasks = _tasks(40, "train", 3)
  fl.cli(site["home"], "import", fl.write_jsonl(tmp_path / "o.jsonl", tasks), "--batch", "overlap",
         "--overlap-fraction", "1", "--overlap", "3")
  simulate.run(site["url"], USERS)
  rep = json.loads(fl.cli(site["home"], "agreement", "--batch", "overlap", "--json").stdout)
  labelers = lab.default_labelers(3)
  tok = bt.tokenizer()
  expect = []
  for t in tasks:
    pid = tok.encode(t["prompt"])
    rids = [tok.encode(r) + [tok.eos_id] for r in t["responses"]]
    for i, j in itertools.combinations(range(K), 2):
      p = [lb.prefer_prob(pid, rids[i], rids[j]) for lb in labelers]
      expect += [pa * pb + (1 - pa) * (1 - pb) for pa, pb in itertools.combinations(p, 2)]
  expected = float(np.mean(expect))
  print(f"pairwise agreement {rep['pairwise_agreement']:.3f}, configured {expected:.3f}")
  assert rep["overlap_tasks"] == len(tasks) and rep["pairwise_n"] == len(expect)
  assert abs(rep["pairwise_agreement"] - expected) < 0.06


def test_iterated_rlhf_human_round_stops_then_continues_after_labelling(site, tmp_path):
  from rlhf_jax.data import comparisons as cmp  # pylint: disable=g-import-not-at-top
  from rlhf_jax.train import human_round  # pylint: disable=g-import-not-at-top
  tok, rng, calls = bt.tokenizer(), np.random.default_rng(5), []
  prompts = bt.prompts(10, "train", 5)
  ids = [p.ids for p in prompts]
  responses = [[tok.encode(bt.write_response(p, rng.uniform(0.2, 1), rng)) + [tok.eos_id]
                for _ in range(3)] for p in prompts]

  def make_tasks():
    calls.append(1)
    return human_round.task_records(prompts, ids, responses, tok, "runs/iterative/rl")
  path = str(tmp_path / "comparisons" / "train" / "round_1.jsonl")
  batch = "iterative-round1-train"
  with pytest.raises(human_round.FeedbackPending, match="rerun this command"):
    human_round.collect(str(site["home"]), batch, path, make_tasks)
  with pytest.raises(human_round.FeedbackPending, match="not labelled yet"):
    human_round.collect(str(site["home"]), batch, path, make_tasks)
  assert calls == [1] and not os.path.exists(path)  # sampled and imported once
  simulate.run(site["url"], USERS[:1])
  human_round.collect(str(site["home"]), batch, path, make_tasks)
  recs = [json.loads(x) for x in open(path)]
  assert len(recs) == len(make_tasks()) and all("response_ids" in r for r in recs)
  comps, stats = cmp.comparisons_from_records(
      ((path, i, r) for i, r in enumerate(recs)), tok,
      cmp.ComparisonConfig(source=path, format="ranked", max_len=128))
  assert stats.kept == len(recs)
  for c, r in zip(comps, recs):  # the reward stage reads the sampled tokens and the human ranks
    assert list(c.ranks) == r["ranks"]
    np.testing.assert_array_equal(c.response_ids(0), r["response_ids"][0])
