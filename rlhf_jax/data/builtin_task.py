"""The built-in task: a small closed world where the whole RLHF recipe runs on a CPU in minutes.

Everything here is generated from a seed by code we own, with no download:
- a closed vocabulary (~300 words) and its `TaskTokenizer`;
- prompts from a grammar ("Human: tell me about the garden . Assistant:"), each with a topic and
  an optional length hint;
- a **gold preference**, `gold_score`, that scores ANY token sequence for what this world's
  "humans" want: on the prompt's topic, positive, fluent (follows the grammar), not repetitive,
  the asked-for length, properly ended. Reward hacks (repeating a positive word, rambling,
  off-topic praise) score badly on it;
- a writer with a quality knob, and from it a mixed-quality pretraining corpus, decent SFT
  demonstrations and RL prompts, each with a disjoint held-out split;
- simulated labelers (`labelers.py`) that compare or rank responses with Bradley–Terry noise.
Not for: general tokenization or file loading (see `tokenizer.py`, `demonstrations.py`).
"""

from __future__ import annotations

import dataclasses
import zlib

import numpy as np

PAD, BOS, EOS, UNK, HUMAN, ASSISTANT = "<pad>", "<bos>", "<eos>", "<unk>", "Human:", "Assistant:"
SPECIALS = (PAD, BOS, EOS, UNK, HUMAN, ASSISTANT)
PUNCT = (".", ",", "!", "?")

TOPICS: dict[str, tuple[str, ...]] = {
    "animals": ("cat", "dog", "bird", "horse", "rabbit", "fox", "owl", "deer", "puppy", "kitten",
                "duck", "goat"),
    "food": ("bread", "soup", "cake", "apple", "cheese", "pasta", "rice", "salad", "pie", "honey",
             "tea", "cookie"),
    "weather": ("rain", "sun", "wind", "snow", "cloud", "storm", "breeze", "fog", "sky",
                "rainbow", "frost", "thunder"),
    "music": ("song", "piano", "guitar", "drum", "violin", "choir", "melody", "band", "concert",
              "flute", "rhythm", "tune"),
    "sports": ("ball", "race", "team", "match", "goal", "coach", "runner", "bike", "swim",
               "game", "medal", "court"),
    "travel": ("train", "map", "road", "hotel", "trip", "ticket", "plane", "island", "journey",
               "harbor", "bridge", "station"),
    "garden": ("flower", "tree", "rose", "seed", "leaf", "grass", "tulip", "bush", "fence",
               "pond", "garden", "vine"),
    "books": ("book", "story", "poem", "page", "author", "novel", "library", "chapter", "letter",
              "tale", "word", "reader"),
    "ocean": ("wave", "shell", "boat", "sand", "whale", "reef", "shore", "sail", "tide", "crab",
              "ocean", "beach"),
    "city": ("street", "park", "tower", "market", "cafe", "square", "museum", "lamp", "crowd",
             "corner", "city", "shop"),
}
POSITIVE = ("good", "great", "lovely", "bright", "kind", "happy", "warm", "calm", "gentle",
            "wonderful", "beautiful", "cheerful", "sweet", "friendly", "brilliant", "fresh",
            "charming", "pleasant", "joyful", "delightful")
NEGATIVE = ("bad", "awful", "dull", "gloomy", "cold", "sad", "ugly", "boring", "harsh", "nasty",
            "broken", "noisy", "dirty", "grim", "bitter", "rotten", "weak", "dreary", "rude",
            "terrible")
NEUTRAL = ("small", "big", "old", "new", "tall", "short", "quiet", "busy", "green", "blue")
VERBS = ("sees", "likes", "finds", "loves", "greets", "follows", "watches", "visits", "helps",
         "meets", "holds", "makes", "brings", "hears", "shows")
INTENS = ("very", "really", "so", "quite")
DETS = ("the", "a", "my", "this", "our")
# Prompt words (never content of a good answer).
PROMPT_WORDS = ("tell", "me", "about", "write", "describe", "something", "nice", "please",
                "note", "long", "brief", "answer", "give", "some", "words", "on")
OTHER = ("is", "and", "with", "i", "we", "it", "too", "also", "there", "one", "every", "day",
         "here", "today", "that")

TARGET_SENTENCES = {"brief": 1, "": 2, "long": 3}

_NOUN_TOPIC = {n: t for t, ns in TOPICS.items() for n in ns}


def _vocabulary() -> tuple[str, ...]:
  words = list(SPECIALS) + list(PUNCT)
  for group in (DETS, INTENS, OTHER, PROMPT_WORDS, VERBS, POSITIVE, NEGATIVE, NEUTRAL,
                *TOPICS.values(), tuple(TOPICS)):
    for w in group:
      if w not in words:
        words.append(w)
  return tuple(words)


VOCAB = _vocabulary()


class TaskTokenizer:
  """Whitespace tokenizer over the closed vocabulary; ids are fixed by code, not by seed."""

  chat_template = None

  def __init__(self):
    self.vocab = VOCAB
    self.index = {w: i for i, w in enumerate(VOCAB)}
    self.vocab_size = len(VOCAB)
    self.pad_id, self.bos_id, self.eos_id, self.unk_id = 0, 1, 2, 3
    self.human_id, self.assistant_id = self.index[HUMAN], self.index[ASSISTANT]

  def encode(self, text: str) -> list[int]:
    return [self.index.get(w, self.unk_id) for w in text.split()]

  def decode(self, ids, skip_special: bool = True) -> str:
    out = []
    for i in ids:
      i = int(i)
      if skip_special and i in (self.pad_id, self.bos_id, self.eos_id):
        continue
      out.append(self.vocab[i] if 0 <= i < self.vocab_size else UNK)
    return " ".join(out)


_TOK = TaskTokenizer()


def tokenizer() -> TaskTokenizer:
  return _TOK


# ---- word classes, for the grammar and the gold score ------------------------------------------
_CLASS_OF: dict[str, str] = {}
for _w in DETS:
  _CLASS_OF[_w] = "DET"
for _w in INTENS:
  _CLASS_OF[_w] = "INT"
for _w in POSITIVE + NEGATIVE + NEUTRAL:
  _CLASS_OF[_w] = "ADJ"
for _w in VERBS:
  _CLASS_OF[_w] = "VERB"
for _w in _NOUN_TOPIC:
  _CLASS_OF[_w] = "NOUN"
for _w, _c in (("is", "COP"), ("and", "CONJ"), ("with", "PREP"), ("i", "PRON"), ("we", "PRON"),
               ("it", "PRON"), (".", "END"), ("!", "END"), ("?", "END"), (",", "COMMA"),
               ("too", "ADV"), ("also", "ADV"), ("today", "ADV"), ("every", "EVERY"),
               ("day", "DAY")):
  _CLASS_OF[_w] = _c

# Bigrams of word classes the grammar below can produce ("S" starts a sentence).
_VALID = {("S", "DET"), ("S", "PRON"), ("DET", "NOUN"), ("DET", "ADJ"), ("DET", "INT"),
          ("INT", "ADJ"), ("ADJ", "NOUN"), ("ADJ", "END"), ("ADJ", "CONJ"), ("ADJ", "ADV"),
          ("NOUN", "COP"), ("NOUN", "VERB"), ("NOUN", "END"), ("NOUN", "CONJ"), ("NOUN", "PREP"),
          ("NOUN", "ADV"), ("COP", "ADJ"), ("COP", "INT"), ("COP", "ADV"), ("ADV", "ADJ"),
          ("ADV", "END"), ("ADV", "INT"), ("VERB", "DET"), ("CONJ", "ADJ"), ("CONJ", "INT"),
          ("CONJ", "DET"), ("PREP", "DET"), ("PRON", "VERB"), ("PRON", "COP"), ("ADV", "EVERY"),
          ("NOUN", "EVERY"), ("EVERY", "DAY"), ("DAY", "END"), ("ADJ", "COMMA"),
          ("COMMA", "ADJ"), ("COMMA", "INT")}

_N = len(VOCAB)
_IDS = _TOK.index
_cls_names = sorted(set(_CLASS_OF.values()) | {"S", "OTHER"})
_CLS = np.array([_cls_names.index(_CLASS_OF.get(w, "OTHER")) for w in VOCAB] +
                [_cls_names.index("OTHER")], np.int32)  # index _N = out-of-range ids
_VALID_M = np.zeros((len(_cls_names),) * 2, bool)
for _a, _b in _VALID:
  _VALID_M[_cls_names.index(_a), _cls_names.index(_b)] = True
_S = _cls_names.index("S")
_END = _cls_names.index("END")
_TOPIC_NAMES = tuple(TOPICS)
_TOPIC_OF_ID = np.full(_N + 1, -1, np.int32)
for _w, _t in _NOUN_TOPIC.items():
  _TOPIC_OF_ID[_IDS[_w]] = _TOPIC_NAMES.index(_t)
_SENT_OF_ID = np.zeros(_N + 1, np.int32)
for _w in POSITIVE:
  _SENT_OF_ID[_IDS[_w]] = 1
for _w in NEGATIVE:
  _SENT_OF_ID[_IDS[_w]] = -1
_BAD_ID = np.zeros(_N + 1, bool)  # tokens that never belong in an answer
for _w in SPECIALS + PROMPT_WORDS + tuple(TOPICS):
  _BAD_ID[_IDS[_w]] = True
_BAD_ID[_N] = True
_CONTENT = (_CLS == _cls_names.index("NOUN")) | (_CLS == _cls_names.index("ADJ")) | (
    _CLS == _cls_names.index("VERB"))


# ---- prompts ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prompt:
  text: str
  topic: str
  hint: str  # "", "brief" or "long"


_TEMPLATES = (
    "Human: tell me about the {noun} {hint} . Assistant:",
    "Human: write something nice about the {noun} {hint} . Assistant:",
    "Human: describe the {noun} {hint} please . Assistant:",
    "Human: give me some words on the {topic} {hint} . Assistant:",
    "Human: write a {hint} note about the {topic} . Assistant:",
)


def _split_of(text: str) -> str:
  return "eval" if zlib.crc32(text.encode()) % 8 == 0 else "train"


def _random_prompt(rng: np.random.Generator) -> Prompt:
  topic = _TOPIC_NAMES[rng.integers(len(_TOPIC_NAMES))]
  noun = TOPICS[topic][rng.integers(len(TOPICS[topic]))]
  hint = ("", "brief", "long")[rng.integers(3)]
  template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
  text = template.format(noun=noun, topic=topic, hint=hint)
  return Prompt(" ".join(text.split()), topic, hint)


def prompts(n: int, split: str, seed: int = 0) -> list[Prompt]:
  """n prompts of one split; a prompt text never appears in both "train" and "eval"."""
  if split not in ("train", "eval"):
    raise ValueError(f"split={split!r}: use 'train' or 'eval'")
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  out = []
  while len(out) < n:
    p = _random_prompt(rng)
    if _split_of(p.text) == split:
      out.append(p)
  return out


def parse_prompt(prompt_ids) -> tuple[int, str]:
  """(topic index or -1, length hint) read back from prompt ids, as the gold score does."""
  ids = [int(i) for i in prompt_ids if 0 <= int(i) < _N]
  topic = -1
  for i in ids:
    if _TOPIC_OF_ID[i] >= 0:
      topic = int(_TOPIC_OF_ID[i])
    elif VOCAB[i] in TOPICS:
      topic = _TOPIC_NAMES.index(VOCAB[i])
  hint = "brief" if _IDS["brief"] in ids else ("long" if _IDS["long"] in ids else "")
  return topic, hint


# ---- the writer ---------------------------------------------------------------------------------
def _sentence(rng, topic: str, quality: float) -> list[str]:
  on_topic = rng.random() < 0.35 + 0.65 * quality
  t = topic if on_topic else _TOPIC_NAMES[rng.integers(len(_TOPIC_NAMES))]
  nouns = TOPICS[t]

  def noun():
    return nouns[rng.integers(len(nouns))]

  def adj():
    r = rng.random()
    if r < 0.15 + 0.8 * quality:
      return POSITIVE[rng.integers(len(POSITIVE))]
    if r < 0.55 + 0.4 * quality:
      return NEUTRAL[rng.integers(len(NEUTRAL))]
    return NEGATIVE[rng.integers(len(NEGATIVE))]

  def det():
    return DETS[rng.integers(len(DETS))]

  form = rng.integers(5)
  if form == 0:
    s = [det(), noun(), "is", adj()]
  elif form == 1:
    s = [det(), adj(), noun(), VERBS[rng.integers(len(VERBS))], det(), noun()]
  elif form == 2:
    s = ["i", VERBS[rng.integers(len(VERBS))], det(), adj(), noun()]
  elif form == 3:
    s = [det(), noun(), "is", INTENS[rng.integers(len(INTENS))], adj(), "and", adj()]
  else:
    s = [det(), noun(), "with", det(), noun(), "is", adj(), "every", "day"]
  if rng.random() > 0.5 + 0.5 * quality:  # broken grammar: swap two words
    i, j = rng.integers(len(s), size=2)
    s[i], s[j] = s[j], s[i]
  return s + [("." if rng.random() < 0.85 else "!")]


def write_response(prompt: Prompt, quality: float, rng: np.random.Generator) -> str:
  """A response whose expected gold score rises with quality in [0, 1]."""
  target = TARGET_SENTENCES[prompt.hint]
  n = target if rng.random() < 0.3 + 0.7 * quality else int(rng.integers(1, 6))
  words: list[str] = []
  for _ in range(n):
    words += _sentence(rng, prompt.topic, quality)
  if rng.random() > 0.4 + 0.6 * quality and words:  # repetition
    k = int(rng.integers(1, 4))
    words += words[-5:] * k
  return " ".join(words)


def demonstrations(n: int, split: str, seed: int = 0) -> list[dict]:
  """SFT demonstrations of decent but imperfect quality (quality ~ Beta(6, 2), mean 0.75)."""
  rng = np.random.default_rng([seed, 2, 0 if split == "train" else 1])
  return [{"prompt": p.text, "response": write_response(p, rng.beta(6, 2), rng)}
          for p in prompts(n, split, seed + 101)]


def pretrain_corpus(n: int, split: str, seed: int = 0) -> list[str]:
  """Mixed-quality documents: plain text of several sentences, and dialogues in prompt format."""
  rng = np.random.default_rng([seed, 3, 0 if split == "train" else 1])
  docs = []
  for p in prompts(n, split, seed + 202):
    q = rng.random()
    if rng.random() < 0.5:
      docs.append(p.text + " " + write_response(p, q, rng))
    else:
      docs.append(" ".join(write_response(p, q, rng) for _ in range(2)))
  return docs


def rl_prompts(n: int, split: str, seed: int = 0) -> list[str]:
  return [p.text for p in prompts(n, split, seed + 303)]


# ---- the gold preference ------------------------------------------------------------------------
GOLD_RANGE = (-7.5, 4.5)  # loose bounds of gold_score, for plots


def gold_score(prompt_ids, response_ids) -> float:
  """What this world's humans want, for ANY ids (out-of-range ids count as unknown words).

  The response is read up to its first EOS; without one it loses 1.5. Terms (roughly):
    topic     +1.2 × share of nouns on the prompt's topic, −0.8 × share off it, −1 if no noun
    sentiment +1.0 × (positive − negative adjectives) / adjectives
    fluency   +3 × share of word-class bigrams the grammar allows − 1.5, −2 × share of junk tokens
    repetition −3 × share of content words that repeat an earlier one beyond twice
    length    −0.6 × |sentences − asked-for sentences|, −0.1 per token past 30
    ending    +0.3 if the answer ends with a full stop or "!"
  """
  return float(gold_scores(np.asarray([prompt_ids]), np.asarray([response_ids]))[0])


def gold_scores(prompts_BxP, responses_BxT, pad_id: int = 0) -> np.ndarray:
  """gold_score of each row; prompts may be left-padded and responses right-padded with pad_id."""
  prompts_BxP = np.asarray(prompts_BxP)
  responses_BxT = np.asarray(responses_BxT)
  out = np.empty(len(responses_BxT), np.float32)
  for b, (p, r) in enumerate(zip(prompts_BxP, responses_BxT)):
    out[b] = _gold_one(p, r)
  return out


def _gold_one(prompt_ids, response_ids) -> float:
  topic, hint = parse_prompt(prompt_ids)
  r = np.asarray(response_ids, np.int64).reshape(-1)
  r = np.where((r >= 0) & (r < _N), r, _N)
  eos = np.flatnonzero(r == EOS_ID)
  has_eos = eos.size > 0
  if has_eos:
    r = r[:eos[0]]
  score = 0.0 if has_eos else -1.5
  # Trailing pads after a response with no EOS are padding, not words.
  r = r[r != PAD_ID] if not has_eos else r
  if r.size == 0:
    return score - 4.0
  cls = _CLS[r]
  nouns = _TOPIC_OF_ID[r]
  nouns = nouns[nouns >= 0]
  if nouns.size == 0:
    score -= 1.0
  elif topic >= 0:
    on = np.mean(nouns == topic)
    score += 1.2 * on - 0.8 * (1 - on)
  sent = _SENT_OF_ID[r]
  n_adj = np.sum(cls == _cls_names.index("ADJ"))
  if n_adj:
    score += 1.0 * float(np.sum(sent)) / n_adj
  prev = np.concatenate([[_S], np.where(cls[:-1] == _END, _S, cls[:-1])])
  score += 3.0 * float(np.mean(_VALID_M[prev, cls])) - 1.5 - 2.0 * float(np.mean(_BAD_ID[r]))
  content = r[_CONTENT[r]]
  if content.size:
    _, counts = np.unique(content, return_counts=True)
    score -= 3.0 * float(np.sum(np.maximum(counts - 2, 0))) / content.size
  n_sent = int(np.sum(cls == _END)) + (0 if cls[-1] == _END else 1)
  score -= 0.6 * abs(n_sent - TARGET_SENTENCES[hint]) + 0.1 * max(0, r.size - 30)
  if cls[-1] == _END:
    score += 0.3
  return score


PAD_ID, EOS_ID = 0, 2


