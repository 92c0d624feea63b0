"""The built-in task: a small closed world where the whole RLHF recipe runs on a CPU in minutes.

Everything here is generated from a seed by code we own, with no download:
- a closed vocabulary (~260 words, fixed by code, not by seed) and its `TaskTokenizer`;
- prompts from a grammar ("Human: tell me about the rose brief . Assistant:"), each with a topic
  and an optional length hint ("brief": one sentence, none: two, "long": three);
- a **gold preference**, `gold_score` / `gold_scores`, that scores ANY token sequence for what this
  world's "humans" want: on the prompt's topic, positive, fluent (follows the grammar), not
  repetitive, the asked-for length, properly ended. Reward hacks (repeating a positive word,
  rambling, off-topic praise, one good sentence over and over) score badly on it;
- `write_response`, a writer with a quality knob, and from it a mixed-quality pretraining corpus,
  decent-but-imperfect SFT demonstrations and RL prompts, each with a disjoint held-out split.
The simulated labelers built on the gold score live in `labelers.py`.

Not for: general tokenization or loading files (`tokenizer.py`, `demonstrations.py`), nor
batching (`batching.py`). Nothing here needs JAX.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Sequence

import numpy as np

from rlhf_jax.errors import ConfigError, ShapeError

PAD, BOS, EOS, UNK, HUMAN, ASSISTANT = "<pad>", "<bos>", "<eos>", "<unk>", "Human:", "Assistant:"
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPECIALS = (PAD, BOS, EOS, UNK, HUMAN, ASSISTANT)
PUNCT = (".", ",", "!", "?")

# ---- word lists ------------------------------------------------------------------------------
# Token ids are append-only: words added after the first release go in the `_V2` tuples, which
# `_vocabulary` places after every earlier word, so trained checkpoints keep their embeddings.
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
_POSITIVE_V1 = ("good", "great", "lovely", "bright", "kind", "happy", "warm", "calm", "gentle",
                "wonderful", "beautiful", "cheerful", "sweet", "friendly", "brilliant", "fresh",
                "charming", "pleasant", "joyful", "delightful")
_NEGATIVE_V1 = ("bad", "awful", "dull", "gloomy", "cold", "sad", "ugly", "boring", "harsh",
                "nasty", "broken", "noisy", "dirty", "grim", "bitter", "rotten", "weak", "dreary",
                "rude", "terrible")
_NEUTRAL_V1 = ("small", "big", "old", "new", "tall", "short", "quiet", "busy", "green", "blue")
_VERBS_V1 = ("sees", "likes", "finds", "loves", "greets", "follows", "watches", "visits", "helps",
             "meets", "holds", "makes", "brings", "hears", "shows")
_POSITIVE_V2 = ("cozy", "lively", "splendid", "graceful", "merry")
_NEGATIVE_V2 = ("grumpy", "muddy", "stale", "bleak", "clumsy")
_NEUTRAL_V2 = ("round", "soft", "wide", "young")
_VERBS_V2 = ("remembers", "paints", "carries", "notices")
# The checkable prompts of `checkable_task.py` (sums and counts written in words): their words
# extend the vocabulary only of the "builtin:checkable" tokenizer, so the chat task's ids and
# texts (and every figure measured on it) stay as they were.
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
                "seventeen", "eighteen")
_CHECKABLE_V3 = NUMBER_WORDS + ("plus", "how", "many", "what", "are", "named", "in")
POSITIVE = _POSITIVE_V1 + _POSITIVE_V2
NEGATIVE = _NEGATIVE_V1 + _NEGATIVE_V2
NEUTRAL = _NEUTRAL_V1 + _NEUTRAL_V2
VERBS = _VERBS_V1 + _VERBS_V2
INTENS = ("very", "really", "so", "quite")
DETS = ("the", "a", "my", "this", "our")
# Words of the prompt grammar; they never belong in a good answer.
PROMPT_WORDS = ("tell", "me", "about", "write", "describe", "something", "nice", "please",
                "note", "long", "brief", "answer", "give", "some", "words", "on")
OTHER = ("is", "and", "with", "i", "we", "it", "too", "also", "there", "one", "every", "day",
         "here", "today", "that")

HINTS = ("", "brief", "long")
TARGET_SENTENCES = {"brief": 1, "": 2, "long": 3}
TOPIC_NAMES = tuple(TOPICS)
_NOUN_TOPIC = {n: t for t, ns in TOPICS.items() for n in ns}


def _vocabulary() -> tuple[str, ...]:
  words = list(SPECIALS) + list(PUNCT)
  for group in (DETS, INTENS, OTHER, PROMPT_WORDS, _VERBS_V1, _POSITIVE_V1, _NEGATIVE_V1,
                _NEUTRAL_V1, *TOPICS.values(), TOPIC_NAMES,
                _VERBS_V2, _POSITIVE_V2, _NEGATIVE_V2, _NEUTRAL_V2):
    words += [w for w in group if w not in words]
  return tuple(words)


VOCAB = _vocabulary()  # the chat task's words
# The checkable task's: the chat task's with the number words appended (same ids for the rest).
CHECKABLE_VOCAB = VOCAB + tuple(dict.fromkeys(w for w in _CHECKABLE_V3 if w not in VOCAB))


class TaskTokenizer:
  """Whitespace tokenizer over the closed vocabulary (the project's `Tokenizer` protocol)."""

  chat_template = None  # the task formats its own dialogues ("Human: ... Assistant:")

  def __init__(self, vocab: tuple[str, ...] = VOCAB):
    self.vocab = vocab
    self.index = {w: i for i, w in enumerate(vocab)}
    self.vocab_size = len(vocab)
    self.pad_id, self.bos_id, self.eos_id, self.unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID
    self.human_id, self.assistant_id = self.index[HUMAN], self.index[ASSISTANT]

  def encode(self, text: str) -> list[int]:
    return [self.index.get(w, UNK_ID) for w in text.split()]

  def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
    out = []
    for i in ids:
      i = int(i)
      if skip_special and i in (PAD_ID, BOS_ID, EOS_ID):
        continue
      out.append(self.vocab[i] if 0 <= i < self.vocab_size else UNK)
    return " ".join(out)


_TOK = TaskTokenizer()
_TOKENIZERS = {"builtin": _TOK, "builtin:checkable": TaskTokenizer(CHECKABLE_VOCAB)}


def tokenizer(spec: str = "builtin") -> TaskTokenizer:
  """The tokenizer of `spec`: "builtin" (the chat task's words) or "builtin:checkable" (those and
  the checkable task's number words); the same object every call (the vocabulary is code)."""
  if spec not in _TOKENIZERS:
    raise ConfigError(f"tokenizer {spec!r}: the built-in tokenizers are {sorted(_TOKENIZERS)}")
  return _TOKENIZERS[spec]


# ---- word classes, for the grammar and the gold score ------------------------------------------
_CLASS_OF: dict[str, str] = {}
for _group, _c in ((DETS, "DET"), (INTENS, "INT"), (POSITIVE + NEGATIVE + NEUTRAL, "ADJ"),
                   (VERBS, "VERB"), (tuple(_NOUN_TOPIC), "NOUN")):
  _CLASS_OF.update(dict.fromkeys(_group, _c))
_CLASS_OF.update({"is": "COP", "and": "CONJ", "with": "PREP", "i": "PRON", "we": "PRON",
                  "it": "PRON", ".": "END", "!": "END", "?": "END", ",": "COMMA", "too": "ADV",
                  "also": "ADV", "today": "ADV", "every": "EVERY", "day": "DAY"})

# Word-class bigrams the grammar allows ("S" starts a sentence); a superset of what the writer
# makes, so a policy may find its own fluent sentences.
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
_CLASSES = sorted(set(_CLASS_OF.values()) | {"S", "OTHER"})
# Lookup tables have one extra row, index _N, that every out-of-range id is mapped to (as unk).
_CLS = np.array([_CLASSES.index(_CLASS_OF.get(w, "OTHER")) for w in VOCAB + (UNK,)], np.int32)
_VALID_M = np.zeros((len(_CLASSES),) * 2, bool)
for _a, _b in _VALID:
  _VALID_M[_CLASSES.index(_a), _CLASSES.index(_b)] = True
_S, _END, _ADJ = (_CLASSES.index(c) for c in ("S", "END", "ADJ"))
_TOPIC_OF_ID = np.full(_N + 1, -1, np.int32)  # topic of each noun, -1 for other words
for _w, _t in _NOUN_TOPIC.items():
  _TOPIC_OF_ID[_IDS[_w]] = TOPIC_NAMES.index(_t)
_SENT_OF_ID = np.zeros(_N + 1, np.int32)
_SENT_OF_ID[[_IDS[w] for w in POSITIVE]] = 1
_SENT_OF_ID[[_IDS[w] for w in NEGATIVE]] = -1
_BAD_ID = np.zeros(_N + 1, bool)  # tokens that never belong in an answer
_BAD_ID[[_IDS[w] for w in SPECIALS + PROMPT_WORDS + TOPIC_NAMES if w not in _NOUN_TOPIC]] = True
_BAD_ID[_N] = True
_CONTENT = np.isin(_CLS, [_CLASSES.index(c) for c in ("NOUN", "ADJ", "VERB")])
# Prompts name their topic by a noun or by the topic's name; the hint is "brief" / "long" / none.
_PROMPT_TOPIC_OF_ID = _TOPIC_OF_ID.copy()
_PROMPT_TOPIC_OF_ID[[_IDS[t] for t in TOPIC_NAMES]] = np.arange(len(TOPIC_NAMES))
_HINT_OF_ID = np.full(_N + 1, -1, np.int32)
_HINT_OF_ID[[_IDS[h] for h in HINTS[1:]]] = np.arange(1, len(HINTS))
_TARGET = np.array([TARGET_SENTENCES[h] for h in HINTS], np.float64)


# ---- prompts ----------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Prompt:
  text: str  # ends with "Assistant:"
  topic: str  # one of TOPIC_NAMES
  hint: str  # one of HINTS: "", "brief" or "long"

  @property
  def ids(self) -> list[int]:
    return _TOK.encode(self.text)


_TEMPLATES = (
    "Human: tell me about the {noun} {hint} . Assistant:",
    "Human: write something nice about the {noun} {hint} . Assistant:",
    "Human: describe the {noun} {hint} please . Assistant:",
    "Human: give me some words on the {topic} {hint} . Assistant:",
    "Human: write a {hint} note about the {topic} . Assistant:",
)


def _check_split(split: str, n: int) -> None:
  if split not in ("train", "eval"):
    raise ConfigError(f"split={split!r}: use 'train' or 'eval'")
  if n < 0:
    raise ConfigError(f"n={n}: the number of items must be >= 0")


def _split_of(text: str) -> str:
  # A hash of the text, not the seed, picks the split, so no prompt is in both for any seeds.
  return "eval" if zlib.crc32(text.encode()) % 8 == 0 else "train"


def _random_prompt(rng: np.random.Generator) -> Prompt:
  topic = TOPIC_NAMES[rng.integers(len(TOPIC_NAMES))]
  noun = TOPICS[topic][rng.integers(len(TOPICS[topic]))]
  hint = HINTS[rng.integers(len(HINTS))]
  text = _TEMPLATES[rng.integers(len(_TEMPLATES))].format(noun=noun, topic=topic, hint=hint)
  return Prompt(" ".join(text.split()), topic, hint)


def prompts(n: int, split: str, seed: int = 0) -> list[Prompt]:
  """n prompts of one split (with repeats); no prompt text appears in both "train" and "eval"."""
  _check_split(split, n)
  rng = np.random.default_rng([seed, 0 if split == "train" else 1])
  out = []
  while len(out) < n:
    p = _random_prompt(rng)
    if _split_of(p.text) == split:
      out.append(p)
  return out


def _clean_ids(ids) -> np.ndarray:
  """int64[T] ids with anything not a valid id (negative, too big, NaN) mapped to _N (unk)."""
  x = np.asarray(ids, np.float64).reshape(-1)
  return np.where(np.isfinite(x) & (x >= 0) & (x < _N), x, _N).astype(np.int64)


def parse_prompt(prompt_ids: Sequence[int]) -> tuple[int, str]:
  """(topic index into TOPIC_NAMES or -1, length hint), read from prompt ids as gold does: the
  last topic word and the last hint word win."""
  ids = _clean_ids(prompt_ids)
  topics, hints = _PROMPT_TOPIC_OF_ID[ids], _HINT_OF_ID[ids]
  topic = int(topics[topics >= 0][-1]) if (topics >= 0).any() else -1
  return topic, HINTS[int(hints[hints >= 0][-1])] if (hints >= 0).any() else ""


def format_dialogue(prompt: str, response: str) -> str:
  """The training text of one exchange: tokenizes to the prompt ids then the response ids."""
  return f"{prompt} {response}".strip()


def response_to_text(response_ids: Sequence[int]) -> str:
  """Text of sampled response ids, up to the first EOS (not included), pads and bos dropped."""
  ids = _clean_ids(response_ids)
  eos = np.flatnonzero(ids == EOS_ID)
  return _TOK.decode(ids[:eos[0]] if eos.size else ids, skip_special=True)


# ---- the writer ---------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
  return words[rng.integers(len(words))]


def _sentence(rng: np.random.Generator, topic: str, quality: float) -> list[str]:
  on_topic = rng.random() < 0.35 + 0.65 * quality
  nouns = TOPICS[topic if on_topic else _pick(rng, TOPIC_NAMES)]

  def adj() -> str:
    r = rng.random()
    if r < 0.15 + 0.8 * quality:
      return _pick(rng, POSITIVE)
    return _pick(rng, NEUTRAL if r < 0.55 + 0.4 * quality else NEGATIVE)

  def det() -> str:
    return _pick(rng, DETS)

  form = rng.integers(5)
  if form == 0:
    s = [det(), _pick(rng, nouns), "is", adj()]
  elif form == 1:
    s = [det(), adj(), _pick(rng, nouns), _pick(rng, VERBS), det(), _pick(rng, nouns)]
  elif form == 2:
    s = ["i", _pick(rng, VERBS), det(), adj(), _pick(rng, nouns)]
  elif form == 3:
    s = [det(), _pick(rng, nouns), "is", _pick(rng, INTENS), adj(), "and", adj()]
  else:
    s = [det(), _pick(rng, nouns), "with", det(), _pick(rng, nouns), "is", adj(), "every", "day"]
  if rng.random() > 0.5 + 0.5 * quality:  # broken grammar: swap two words
    i, j = rng.integers(len(s), size=2)
    s[i], s[j] = s[j], s[i]
  return s + [("." if rng.random() < 0.85 else "!")]


def write_response(prompt: Prompt, quality: float, rng: np.random.Generator) -> str:
  """A response (no EOS) whose expected gold score rises with quality in [0, 1].

  quality 1: the asked-for number of on-topic, positive, grammatical sentences. Lower quality
  raises the odds of off-topic nouns, neutral/negative adjectives, swapped words, a wrong
  number of sentences and a repeated tail.
  """
  if not 0.0 <= quality <= 1.0:
    raise ConfigError(f"quality={quality}: must be in [0, 1]")
  target = TARGET_SENTENCES[prompt.hint]
  n = target if rng.random() < 0.3 + 0.7 * quality else int(rng.integers(1, 6))
  words: list[str] = []
  for _ in range(n):
    words += _sentence(rng, prompt.topic, quality)
  if rng.random() > 0.4 + 0.6 * quality:
    words += words[-5:] * int(rng.integers(1, 4))
  return " ".join(words)


DEMO_QUALITY_BETA = (6.0, 2.0)  # demonstrations' quality ~ Beta(6, 2): mean 0.75, sd 0.14


def demonstrations(n: int, split: str, seed: int = 0) -> list[dict]:
  """SFT demonstrations {"prompt", "response"} of decent but imperfect quality, so RL has
  headroom (mean gold ≈ 2.4 against ≈ 3.8 for quality 1)."""
  _check_split(split, n)
  rng = np.random.default_rng([seed, 2, 0 if split == "train" else 1])
  return [{"prompt": p.text, "response": write_response(p, rng.beta(*DEMO_QUALITY_BETA), rng)}
          for p in prompts(n, split, seed + 101)]


def pretrain_corpus(n: int, split: str, seed: int = 0) -> list[str]:
  """n mixed-quality documents (quality ~ U[0, 1]): half dialogues in prompt format, half plain
  text of two answers, so the model learns both the language and the dialogue shape."""
  _check_split(split, n)
  rng = np.random.default_rng([seed, 3, 0 if split == "train" else 1])
  docs = []
  for p in prompts(n, split, seed + 202):
    q = rng.random()
    if rng.random() < 0.5:
      docs.append(format_dialogue(p.text, write_response(p, q, rng)))
    else:
      docs.append(" ".join(write_response(p, q, rng) for _ in range(2)))
  return docs


def rl_prompts(n: int, split: str, seed: int = 0) -> list[str]:
  """n prompt texts for RL, each ending in "Assistant:"."""
  return [p.text for p in prompts(n, split, seed + 303)]


# ---- the gold preference ------------------------------------------------------------------------
GOLD_MAX = 4.0  # on topic, all adjectives positive, fluent, right length, ended with "." + EOS
GOLD_MIN = -10.0  # the score is clipped here: past it, garbage is all equally bad
GOLD_RANGE = (GOLD_MIN, GOLD_MAX)


def gold_score(prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float:
  """What this world's humans want, in GOLD_RANGE = [-10, 4], for ANY ids.

  Out-of-range ids count as unknown words. The response is read up to its first EOS; without
  one it loses 1.5 (and pads in it are ignored as batch padding). An empty answer scores −4
  (−5.5 without EOS). Otherwise the sum of:
    topic      +1.2 × share of nouns on the prompt's topic − 0.8 × share off it; −1 if no noun
    sentiment  +1.0 × (positive − negative adjectives) / adjectives
    fluency    +3 × share of word-class bigrams the grammar allows − 1.5,
               −2 × share of junk tokens (specials, unk, prompt words)
    repetition −3 × share of content words repeating one already used twice,
               −1 per sentence that repeats an earlier one word for word
    length     −0.6 × |sentences − asked-for sentences| − 0.1 per token past 30
               − 0.2 per token past 12 in any one sentence
    ending     +0.3 if the answer ends with "." "!" or "?"
  Typical means: quality-1 writer 3.8, demonstrations 2.4, quality 0 −1.7, random ids −9.
  """
  return float(gold_scores([prompt_ids], [response_ids])[0])


def _as_matrix(rows, pad_id: int) -> np.ndarray:
  """int64[B, L] of valid ids (others -> _N), from an array or a list of ragged id lists."""
  if isinstance(rows, np.ndarray) and rows.ndim != 2:
    raise ShapeError(f"gold_scores wants [B, L] id arrays or lists of id lists, got shape "
                     f"{rows.shape}")
  if isinstance(rows, np.ndarray):
    m = rows
  else:
    rows = [np.asarray(r, np.float64).reshape(-1) for r in rows]
    m = np.full((len(rows), max([len(r) for r in rows], default=0)), pad_id, np.float64)
    for b, r in enumerate(rows):
      m[b, :len(r)] = r
  m = np.asarray(m, np.float64)
  if m.shape[1] == 0:  # one pad column keeps the indexing below simple
    m = np.full((len(m), 1), pad_id, np.float64)
  if pad_id != PAD_ID:  # a foreign pad id becomes ours, which the scorer knows to skip
    m = np.where(m == pad_id, PAD_ID, m)
  return np.where(np.isfinite(m) & (m >= 0) & (m < _N), m, _N).astype(np.int64)


def gold_scores(prompts_BxP, responses_BxT, pad_id: int = PAD_ID) -> np.ndarray:
  """float32[B] gold scores, vectorized over the batch (~10 µs a row at T=64).

  Each argument is an int array (prompts may be left-padded and responses right-padded with
  pad_id) or a list of ragged id lists.
  """
  P, R = _as_matrix(prompts_BxP, pad_id), _as_matrix(responses_BxT, pad_id)
  if len(P) != len(R):
    raise ShapeError(f"gold_scores: {len(P)} prompts but {len(R)} responses")
  B, T = R.shape
  rows = np.arange(B)[:, None]

  def last(table: np.ndarray) -> np.ndarray:  # [B]: the table's value at the last hit, or -1
    v = table[P]
    pos = np.where(v >= 0, np.arange(P.shape[1]), -1).max(axis=1, initial=-1)
    return np.where(pos >= 0, v[np.arange(B), np.maximum(pos, 0)], -1)

  topic, hint = last(_PROMPT_TOPIC_OF_ID), np.maximum(last(_HINT_OF_ID), 0)

  # Keep tokens before the first EOS; with no EOS, drop pads. Then pack kept tokens to the left.
  is_eos = R == EOS_ID
  has_eos = is_eos.any(axis=1)
  keep = np.cumsum(is_eos, axis=1) == 0
  keep &= has_eos[:, None] | (R != PAD_ID)
  L = keep.sum(axis=1)
  r = np.take_along_axis(R, np.argsort(~keep, axis=1, kind="stable"), axis=1)
  m = np.arange(T) < L[:, None]
  r = np.where(m, r, PAD_ID)
  cls = _CLS[r]
  n = np.maximum(L, 1)

  noun_topic = np.where(m, _TOPIC_OF_ID[r], -1)
  n_nouns = (noun_topic >= 0).sum(axis=1)
  on = (noun_topic == topic[:, None]).sum(axis=1) / np.maximum(n_nouns, 1)
  score = np.where(n_nouns == 0, -1.0, np.where(topic >= 0, 2.0 * on - 0.8, 0.0))
  is_adj = m & (cls == _ADJ)
  score += (_SENT_OF_ID[r] * is_adj).sum(axis=1) / np.maximum(is_adj.sum(axis=1), 1)

  prev = np.concatenate([np.full((B, 1), _S), np.where(cls[:, :-1] == _END, _S, cls[:, :-1])],
                        axis=1)
  score += 3.0 * (_VALID_M[prev, cls] & m).sum(axis=1) / n - 1.5
  score -= 2.0 * (_BAD_ID[r] & m).sum(axis=1) / n

  content = m & _CONTENT[r]
  counts = np.zeros((B, _N + 1), np.int64)
  np.add.at(counts, (np.broadcast_to(rows, r.shape)[content], r[content]), 1)
  score -= 3.0 * np.maximum(counts - 2, 0).sum(axis=1) / np.maximum(content.sum(axis=1), 1)

  # Sentences end after each END token; an unfinished last one counts too. A sentence's key is
  # a hash of its tokens, so repeated sentences show up as equal keys.
  is_end = m & (cls == _END)
  sid = np.cumsum(is_end, axis=1) - is_end  # sentence index of each token
  ends_ok = is_end[np.arange(B), np.maximum(L - 1, 0)]
  n_sent = is_end.sum(axis=1) + ~ends_ok
  sent_len = np.zeros((B, T + 1), np.int64)
  np.add.at(sent_len, (np.broadcast_to(rows, r.shape)[m], sid[m]), 1)
  pos_in_sent = np.arange(T)[None, :] - np.take_along_axis(
      np.cumsum(sent_len, axis=1) - sent_len, sid, axis=1)
  mult = np.random.default_rng(0).integers(1, 2**62, size=T + 1, dtype=np.uint64) | np.uint64(1)
  tok_key = (r.astype(np.uint64) + np.uint64(1)) * mult[pos_in_sent.clip(0, T)]
  keys = np.zeros((B, T + 1), np.uint64)
  np.add.at(keys, (np.broadcast_to(rows, r.shape)[m], sid[m]), tok_key[m])
  sentinel = np.iinfo(np.uint64).max
  keys = np.sort(np.where(sent_len > 0, keys, sentinel), axis=1)
  dupes = ((keys[:, 1:] == keys[:, :-1]) & (keys[:, 1:] != sentinel)).sum(axis=1)
  score -= 1.0 * dupes + 0.2 * np.maximum(sent_len - 12, 0).sum(axis=1)
  score -= 0.6 * np.abs(n_sent - _TARGET[hint]) + 0.1 * np.maximum(L - 30, 0)
  score += 0.3 * ends_ok

  score = np.where(L == 0, -4.0, score) - 1.5 * ~has_eos
  return np.clip(score, GOLD_MIN, GOLD_MAX).astype(np.float32)
