"""An invented-fact corpus for causal language models, built so that the supporting training sentences are known.

An analogue of FTRACE-SYNTH (Akyürek et al., 2022): invented entities and
relations, facts ``(subject, relation, object)``, several paraphrase
templates per relation, and one held-out template per test fact as the query.
Everything is generated from ``seed`` (nothing is downloaded). Tokens are
whole words: every entity surface form is one token, so an answer is one
token.

Token data format (shared by the language-model task, the fact-tracing
metrics and the attributors):

* A sentence is a token list ``w_0 … w_{L-1}``. A training example is a
  :class:`~tdaeval.data.Data` row with ``inputs[i, :L-1] = w_0 … w_{L-2}``
  (rest :data:`PAD_ID`) and ``targets[i, :L-1] = w_1 … w_{L-1}`` (rest
  :data:`IGNORE_INDEX`): next-token targets, a loss on every real position.
* A query (test example) has the prompt ``p_0 … p_{m-1}`` (its held-out
  template up to the object) and the answer ``a`` (the object):
  ``inputs[i, :m] = p``, rest PAD; ``targets[i, m-1] = a``, every other target
  :data:`IGNORE_INDEX`.
* Train and test tensors are int64 ``[n, T]`` with one common ``T`` (the
  longest sentence's length minus one).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from tdaeval.data import Data
from tdaeval.errors import ConfigError
from tdaeval.hashing import canonical_json, derive_seed
from tdaeval.params import Interval, validate_params

__all__ = [
    "CATEGORIES",
    "IGNORE_INDEX",
    "PAD_ID",
    "PAD_TOKEN",
    "FactCorpus",
    "HallucinationSplit",
    "answer_positions",
    "check_corpus_params",
    "last_target_positions",
    "make_fact_corpus",
    "make_hallucination_split",
    "prompt_tokens",
    "sequence_tokens",
]

#: Token id of padding (vocabulary entry :data:`PAD_TOKEN`); never a real word.
PAD_ID = 0
#: Vocabulary entry of :data:`PAD_ID`.
PAD_TOKEN = "<pad>"
#: Target value of positions without a loss (``F.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100
#: Relation of a training sentence to a query, by code (``FactCorpus.category``). Precedence when several hold:
#: proponent > contradiction > same_subject > same_object > same_relation > other.
CATEGORIES = ("other", "proponent", "same_subject", "same_object", "same_relation", "contradiction")
_OTHER, _PROPONENT, _SAME_SUBJECT, _SAME_OBJECT, _SAME_RELATION, _CONTRADICTION = range(len(CATEGORIES))

# Words are invented from consonant-vowel syllables: function words have one, template and filler words two,
# entity names three (capitalised). 70 one-syllable, 4,900 two-syllable and 343,000 three-syllable words exist.
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_N_FUNCTION_WORDS = 12
_N_FILLER_WORDS = 30
_MAX_ENTITY_FORMS = 100_000  # n_entities * aliases; far below the 343,000 three-syllable names

#: Constraints of the corpus knobs (checks that relate two knobs are in :func:`check_corpus_params`).
CORPUS_CONSTRAINTS: dict[str, list[Any]] = {
    "n_entities": [Interval(int, 2, None)],
    "n_relations": [Interval(int, 1, None)],
    "n_facts": [Interval(int, 1, None)],
    "n_templates": [Interval(int, 2, None)],
    "n_test": [Interval(int, 1, None)],
    "seed": [Interval(int, 0, None)],
    "reversed_templates": [Interval(int, 0, None)],
    "aliases": [Interval(int, 1, None)],
    "repeat": [Interval(int, 1, None)],
    "repeat_fraction": [Interval(float, 0.0, 1.0, closed="right")],
    "conflicts": [Interval(float, 0.0, 1.0, closed="left")],
    "filler": [Interval(int, 0, None)],
}


def check_corpus_params(owner: str, values: Mapping[str, Any], seed_name: str = "seed") -> None:
    """Raise ``ConfigError`` naming the parameter unless the corpus knobs ``values`` are valid.

    Parameters
    ----------
    owner : str
        Named in the message (``make_fact_corpus``, ``LanguageModelTask``).
    values : mapping
        Knob name → value, the names of :func:`make_fact_corpus`; the seed under ``seed_name``.
    seed_name : str
        The owner's name of the seed parameter (the task calls it ``corpus_seed``).
    """
    renamed = {("seed" if k == seed_name else k): v for k, v in values.items()}
    for name, constraint in CORPUS_CONSTRAINTS.items():
        shown = seed_name if name == "seed" else name
        validate_params(owner, {shown: renamed[name]}, {shown: constraint})
    n_entities, n_relations, n_facts = renamed["n_entities"], renamed["n_relations"], renamed["n_facts"]
    if renamed["n_test"] > n_facts:
        raise ConfigError(f"The 'n_test' parameter of {owner} must be at most n_facts = {n_facts}. Got {renamed['n_test']} instead.")
    # Partial-fact uniqueness: within a relation no subject and no object repeats, so a relation holds <= n_entities facts.
    if n_facts > n_relations * n_entities:
        raise ConfigError(
            f"The 'n_entities' parameter of {owner} is too small for {n_facts} facts over {n_relations} relations: facts never "
            f"repeat (relation, subject) or (relation, object), so n_entities must be >= ceil(n_facts / n_relations) = "
            f"{math.ceil(n_facts / n_relations)}. Got {n_entities} instead."
        )
    if renamed["conflicts"] > 0 and n_entities < 3:
        raise ConfigError(
            f"The 'n_entities' parameter of {owner} must be >= 3 when conflicts > 0 (a contradicting object differs from the "
            f"subject and the true object). Got {n_entities} instead."
        )
    if n_entities * renamed["aliases"] > _MAX_ENTITY_FORMS:
        raise ConfigError(
            f"The 'aliases' parameter of {owner} must keep n_entities * aliases <= {_MAX_ENTITY_FORMS} (invented names run out). "
            f"Got {n_entities} * {renamed['aliases']} = {n_entities * renamed['aliases']} instead."
        )


@dataclass(frozen=True, eq=False)
class FactCorpus:
    """A generated fact corpus: token data, the known proponents, and how it was made.

    Attributes
    ----------
    train, test : Data
        int64 ``inputs``/``targets`` ``[n, T]`` in the module's token format (train: every sentence; test: one
        query per test fact).
    entailment : Tensor
        bool ``[n_test, n_train]``: training sentence ``j`` states query ``i``'s fact (forward or reversed) — its proponents.
    category : Tensor
        int8 ``[n_test, n_train]``: codes into :data:`CATEGORIES`, from the (subject, relation, object) a sentence
        states; precedence proponent > contradiction > same_subject > same_object > same_relation > other. Roles
        count, not token positions: a reversed sentence still has its fact's subject as subject.
    vocab : tuple of str
        Token strings by id; ``vocab[PAD_ID] == "<pad>"``.
    fact_train : Tensor
        int64 ``[n_train]``: the fact a sentence states, −1 for contradicting and filler sentences.
    fact_test : Tensor
        int64 ``[n_test]``: the query's fact (test facts are facts ``0 … n_test−1``).
    template_train : Tensor
        int64 ``[n_train]``: template of the sentence within its relation (forward ``0 … n_templates−1``, reversed
        ``n_templates …``), −1 for filler.
    template_test : Tensor
        int64 ``[n_test]``: the held-out forward template of the query.
    params : dict
        Every knob of :func:`make_fact_corpus` (provenance; part of :meth:`digest`).
    facts : Tensor
        int64 ``[n_facts, 3]``: (subject entity, relation, object entity) of each fact.
    triple_train : Tensor
        int64 ``[n_train, 3]``: (subject, relation, object) a sentence states (a contradiction states a false
        object); ``-1`` rows for filler.
    triple_test : Tensor
        int64 ``[n_test, 3]``: the query's fact.
    contradicts_train : Tensor
        int64 ``[n_train]``: the fact a contradicting sentence contradicts, −1 for every other sentence.
    repeats : Tensor
        int64 ``[n_facts]``: utterances of each (fact, template) in train.
    entity_tokens : Tensor
        int64 ``[n_entities, aliases]``: token ids of each entity's surface forms.
    relation_names : tuple of str
        Invented names of the relations (display only; not tokens).
    templates : tuple of tuple of str
        ``[n_relations][n_templates + reversed_templates]`` template texts with ``{s}`` and ``{o}`` placeholders.
    """

    train: Data
    test: Data
    entailment: Tensor
    category: Tensor
    vocab: tuple[str, ...]
    fact_train: Tensor
    fact_test: Tensor
    template_train: Tensor
    template_test: Tensor
    params: dict[str, Any]
    facts: Tensor
    triple_train: Tensor
    triple_test: Tensor
    contradicts_train: Tensor
    repeats: Tensor
    entity_tokens: Tensor
    relation_names: tuple[str, ...]
    templates: tuple[tuple[str, ...], ...] = field(default=())

    @property
    def n_train(self) -> int:
        """Number of training sentences."""
        return len(self.train)

    @property
    def n_test(self) -> int:
        """Number of queries."""
        return len(self.test)

    def decode(self, tokens: Tensor | list[int]) -> str:
        """The words of ``tokens`` (1-D ids) joined by spaces, padding left out."""
        return " ".join(self.vocab[int(t)] for t in tokens if int(t) != PAD_ID)

    def digest(self) -> str:
        """sha256 over the params, the vocabulary and every tensor (bytes, shapes, dtypes)."""
        h = hashlib.sha256()
        h.update(canonical_json({"params": self.params, "vocab": list(self.vocab), "relations": list(self.relation_names),
                                 "templates": [list(t) for t in self.templates]}).encode())
        h.update(self.train.digest().encode())
        h.update(self.test.digest().encode())
        for t in (self.entailment, self.category, self.fact_train, self.fact_test, self.template_train, self.template_test,
                  self.facts, self.triple_train, self.triple_test, self.contradicts_train, self.repeats, self.entity_tokens):
            t = t.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.numpy().tobytes())
        return h.hexdigest()


# --- token-format helpers --------------------------------------------------------------------------------------


def last_target_positions(targets: Tensor) -> Tensor:
    """Index of the last non-ignored target of each row, −1 for a row without one (``vmap``-safe).

    Parameters
    ----------
    targets : Tensor
        ``[n, T]`` int64 with :data:`IGNORE_INDEX` where there is no target.

    Returns
    -------
    Tensor
        ``[n]`` int64.
    """
    positions = torch.arange(targets.shape[-1], device=targets.device)
    return torch.where(targets != IGNORE_INDEX, positions, -1).max(dim=-1).values


def answer_positions(data: Data) -> Tensor:
    """``[n]`` int64: the index of the last non-ignored target of each row (a query's answer position).

    Raises
    ------
    ConfigError
        A row without any target.
    """
    positions = last_target_positions(data.targets)
    if bool((positions < 0).any()):
        raise ConfigError(f"answer_positions expects every row to have a target. Rows {(positions < 0).nonzero().flatten().tolist()[:5]} have none.")
    return positions


def prompt_tokens(data: Data) -> list[Tensor]:
    """The non-PAD inputs of each row (a query's prompt; a training sentence without its last word), 1-D int64 each."""
    return [row[row != PAD_ID] for row in data.inputs]


def sequence_tokens(data: Data) -> list[Tensor]:
    """The whole sequence of each row, 1-D int64 each: its non-PAD inputs, then the target at its last non-ignored position.

    A training row gives back its full sentence; a query, prompt + answer.
    """
    positions = answer_positions(data)
    last = data.targets.gather(1, positions.unsqueeze(1)).squeeze(1)
    return [torch.cat([prompt, last[i : i + 1]]) for i, prompt in enumerate(prompt_tokens(data))]


# --- generation ---------------------------------------------------------------------------------------------------


def _generator(seed: int, purpose: str) -> torch.Generator:
    """A generator for one part of the corpus, so that a knob leaves the parts it does not govern unchanged."""
    return torch.Generator().manual_seed(derive_seed("fact-corpus", purpose, int(seed), bits=62))


def _randint(high: int, g: torch.Generator) -> int:
    return int(torch.randint(high, (1,), generator=g))


def _invent(count: int, syllables: int, g: torch.Generator, taken: set[str], capital: bool = False) -> list[str]:
    """``count`` new words of ``syllables`` consonant-vowel syllables, none in ``taken`` (which is updated)."""
    words: list[str] = []
    while len(words) < count:
        codes = torch.randint(len(_CONSONANTS) * len(_VOWELS), (syllables,), generator=g).tolist()
        word = "".join(_CONSONANTS[c // len(_VOWELS)] + _VOWELS[c % len(_VOWELS)] for c in codes)
        if word not in taken:
            taken.add(word)
            words.append(word.capitalize() if capital else word)
    return words


def _relation_facts(n_entities: int, k: int, g: torch.Generator) -> list[tuple[int, int]]:
    """``k`` (subject, object) pairs, subjects distinct, objects distinct, never subject == object."""
    subjects = torch.randperm(n_entities, generator=g)[:k].tolist()
    perm = torch.randperm(n_entities, generator=g).tolist()
    objects, unused = perm[:k], perm[k:]
    for i in range(k):
        if objects[i] != subjects[i]:
            continue
        spare = [e for e in unused if e != subjects[i]]
        if spare:  # an entity no object of this relation uses
            unused.remove(spare[0])
            unused.append(objects[i])
            objects[i] = spare[0]
        else:  # k == n_entities >= 2: any swap fixes both places (objects and subjects are permutations)
            j = (i + 1) % k
            objects[i], objects[j] = objects[j], objects[i]
    return list(zip(subjects, objects))


def make_fact_corpus(
    n_entities: int = 200,
    n_relations: int = 8,
    n_facts: int = 240,
    n_templates: int = 3,
    n_test: int = 60,
    seed: int = 0,
    reversed_templates: int = 0,
    aliases: int = 1,
    repeat: int = 1,
    repeat_fraction: float = 1.0,
    conflicts: float = 0.0,
    filler: int = 0,
) -> FactCorpus:
    """A reproducible fact corpus: train sentences, held-out paraphrase queries and their known proponents.

    Facts ``(s, r, o)`` obey FTRACE's partial-fact rule: within a relation no subject and no object repeats (so
    ``(s, r)`` determines ``o``), and ``s != o``. Facts are spread evenly over the relations. Each relation has
    ``n_templates`` forward templates — one or two prefix words, the subject, the relation's own word with zero
    to two function words, the object last (so a causal LM predicts the object at the end) — and
    ``reversed_templates`` object-first ones (the subject last). Every template word is invented.

    Train holds every (fact, template) utterance, forward and reversed, ``repeats[f]`` times, except one
    held-out forward template per test fact: that sentence is the fact's query (prompt = the template up to the
    object, answer = the object), never in train. The query's proponents are its fact's other utterances, at least
    ``n_templates − 1``. Test facts are facts ``0 … n_test−1`` of a seeded shuffle; the train rows are shuffled.

    Each part (names, facts, templates, split, aliases, repeats, conflicts, filler, order) has its own generator
    derived from ``seed``, so a knob changes only what it governs: e.g. the same facts, templates and queries
    with and without ``reversed_templates``.

    Parameters
    ----------
    n_entities : int
        Entities (>= 2; >= ceil(n_facts / n_relations) for the partial-fact rule).
    n_relations : int
        Relations (>= 1).
    n_facts : int
        Facts (>= 1).
    n_templates : int
        Forward templates per relation (>= 2, so each query keeps a proponent).
    n_test : int
        Test facts, one query each (1 … n_facts).
    seed : int
        Seed of everything (>= 0).
    reversed_templates : int
        Object-first templates per relation, extra to the forward ones; their sentences are train-only
        proponents that a causal LM cannot use to predict the object (the reversal curse).
    aliases : int
        Surface forms (tokens) per entity. With >= 2, a query's subject and object forms are disjoint from those
        in its proponents (lexical control: a word-matching method cannot match the entities). A word-level
        model has no way to relate two forms of an entity, so expect held-out accuracy near chance then:
        this knob is for attribution (retrieval) metrics.
    repeat : int
        Utterances per (fact, template) for the repeated facts (gradient saturation, FTRACE): identical
        sentences when ``aliases == 1``, else each with its own forms.
    repeat_fraction : float
        Share of facts (seeded, rounded) that are repeated ``repeat`` times; the others appear once. In (0, 1];
        1 repeats every fact. A fraction gives saturated and unsaturated facts in one model.
    conflicts : float
        Share of facts, in [0, 1), with one contradicting train sentence ``(s, r, o')``, ``o'`` not ``o`` or ``s``,
        on a random forward template. Drawn separately (rounded) among test facts and among the others, so the
        queries' share is the same. The sentence is category ``contradiction`` for its fact's query, never a
        proponent; ``fact_train`` is −1 for it.
    filler : int
        Extra non-fact train sentences of 3 to (longest template) invented filler words; category ``other``
        for every query.

    Returns
    -------
    FactCorpus

    Raises
    ------
    ConfigError
        An invalid knob, named (e.g. ``n_test > n_facts``, ``n_templates < 2``, ``conflicts`` outside [0, 1),
        too few entities for the partial-fact rule).
    """
    params: dict[str, Any] = {
        "n_entities": n_entities, "n_relations": n_relations, "n_facts": n_facts, "n_templates": n_templates,
        "n_test": n_test, "seed": seed, "reversed_templates": reversed_templates, "aliases": aliases, "repeat": repeat,
        "repeat_fraction": repeat_fraction, "conflicts": conflicts, "filler": filler,
    }
    check_corpus_params("make_fact_corpus", params)
    params["repeat_fraction"], params["conflicts"] = float(repeat_fraction), float(conflicts)
    n_forms = n_templates + reversed_templates

    # Names: every token string is distinct (checked on lower-case stems).
    taken: set[str] = set()
    g = _generator(seed, "names")
    entity_names = _invent(n_entities, 3, g, taken, capital=True)
    function_words = _invent(_N_FUNCTION_WORDS, 1, g, taken)
    relation_names = tuple(_invent(n_relations, 2, g, taken))
    forward_words = [_invent(n_templates, 2, g, taken) for _ in range(n_relations)]
    g_more = _generator(seed, "names-reversed")
    reversed_words = [_invent(reversed_templates, 2, g_more, taken) for _ in range(n_relations)]
    g_more = _generator(seed, "names-aliases")
    alias_names = [_invent(aliases - 1, 3, g_more, taken, capital=True) for _ in range(n_entities)]
    filler_words = _invent(_N_FILLER_WORDS, 2, _generator(seed, "names-filler"), taken) if filler else []

    # Token ids: the knobs' extra words come after the base corpus's, so a knob leaves the other ids unchanged.
    vocab: list[str] = [PAD_TOKEN, *function_words]
    function_ids = list(range(1, len(vocab)))
    relation_word_ids: list[list[int]] = [[] for _ in range(n_relations)]
    for r in range(n_relations):
        relation_word_ids[r] += range(len(vocab), len(vocab) + n_templates)
        vocab += forward_words[r]
    entity_tokens = torch.zeros(n_entities, aliases, dtype=torch.long)
    entity_tokens[:, 0] = torch.arange(len(vocab), len(vocab) + n_entities)
    vocab += entity_names
    for r in range(n_relations):
        relation_word_ids[r] += range(len(vocab), len(vocab) + reversed_templates)
        vocab += reversed_words[r]
    for e in range(n_entities):
        entity_tokens[e, 1:] = torch.arange(len(vocab), len(vocab) + aliases - 1)
        vocab += alias_names[e]
    filler_ids = list(range(len(vocab), len(vocab) + len(filler_words)))
    vocab += filler_words

    # Templates: (prefix ids, middle ids); a forward sentence is prefix + s + middle + o, a reversed one prefix + o + middle + s.
    g = _generator(seed, "templates")
    g_rev = _generator(seed, "templates-reversed")
    templates: list[list[tuple[list[int], list[int]]]] = []
    for r in range(n_relations):
        forms = []
        for t in range(n_forms):
            gt = g if t < n_templates else g_rev
            prefix = [function_ids[_randint(len(function_ids), gt)] for _ in range(1 + _randint(2, gt))]
            middle = [function_ids[_randint(len(function_ids), gt)] for _ in range(_randint(3, gt))]
            middle.insert(_randint(len(middle) + 1, gt), relation_word_ids[r][t])
            forms.append((prefix, middle))
        templates.append(forms)

    # Facts: evenly spread over relations, partial-fact rule, shuffled; test facts are the first n_test.
    g = _generator(seed, "facts")
    per_relation = [n_facts // n_relations] * n_relations
    for r in torch.randperm(n_relations, generator=g)[: n_facts % n_relations].tolist():
        per_relation[r] += 1
    fact_list = [(s, r, o) for r in range(n_relations) for s, o in _relation_facts(n_entities, per_relation[r], g)]
    fact_list = [fact_list[i] for i in torch.randperm(n_facts, generator=g).tolist()]
    facts = torch.tensor(fact_list, dtype=torch.long).view(n_facts, 3)

    g = _generator(seed, "split")
    held_out = [_randint(n_templates, g) for _ in range(n_test)]

    g = _generator(seed, "repeats")
    repeats = torch.ones(n_facts, dtype=torch.long)
    n_repeated = int(math.floor(repeat_fraction * n_facts + 0.5))
    repeats[torch.randperm(n_facts, generator=g)[:n_repeated]] = repeat

    g_alias = _generator(seed, "aliases")
    # query forms (subject, object) of each test fact; proponents use the other forms
    query_forms = [(_randint(aliases, g_alias), _randint(aliases, g_alias)) for _ in range(n_test)]

    def form(entity: int, avoid: int | None) -> int:
        """A token of ``entity``: any of its forms, or (lexical control) any but form ``avoid``."""
        if avoid is None:
            return int(entity_tokens[entity, _randint(aliases, g_alias)])
        k = _randint(aliases - 1, g_alias)
        return int(entity_tokens[entity, k + int(k >= avoid)])

    def sentence(r: int, t: int, s_tok: int, o_tok: int) -> list[int]:
        prefix, middle = templates[r][t]
        first, last = (s_tok, o_tok) if t < n_templates else (o_tok, s_tok)
        return [*prefix, first, *middle, last]

    # Train rows: (tokens, fact, template, triple, contradicts)
    rows: list[tuple[list[int], int, int, tuple[int, int, int], int]] = []
    queries: list[list[int]] = []
    for f, (s, r, o) in enumerate(fact_list):
        is_test = f < n_test
        avoid_s, avoid_o = query_forms[f] if is_test and aliases > 1 else (None, None)
        if is_test:
            queries.append(sentence(r, held_out[f], int(entity_tokens[s, query_forms[f][0]]), int(entity_tokens[o, query_forms[f][1]])))
        for t in range(n_forms):
            if is_test and t == held_out[f]:
                continue
            for _ in range(int(repeats[f])):
                rows.append((sentence(r, t, form(s, avoid_s), form(o, avoid_o)), f, t, (s, r, o), -1))

    g = _generator(seed, "conflicts")
    conflicted = []
    for group in (range(n_test), range(n_test, n_facts)):
        count = int(math.floor(conflicts * len(group) + 0.5))
        conflicted += [group[i] for i in torch.randperm(len(group), generator=g)[:count].tolist()]
    for f in conflicted:
        s, r, o = fact_list[f]
        others = [e for e in range(n_entities) if e not in (s, o)]
        false_o = others[_randint(len(others), g)]
        t = _randint(n_templates, g)
        s_tok = int(entity_tokens[s, _randint(aliases, g)])
        o_tok = int(entity_tokens[false_o, _randint(aliases, g)])
        rows.append((sentence(r, t, s_tok, o_tok), -1, t, (s, r, false_o), f))

    g = _generator(seed, "filler")
    longest = max(len(p) + len(m) + 2 for forms in templates for p, m in forms)
    for _ in range(filler):
        length = 3 + _randint(longest - 2, g)
        rows.append(([filler_ids[_randint(len(filler_ids), g)] for _ in range(length)], -1, -1, (-1, -1, -1), -1))

    order = torch.randperm(len(rows), generator=_generator(seed, "order")).tolist()
    rows = [rows[i] for i in order]

    width = max(len(tokens) for tokens in [*(row[0] for row in rows), *queries]) - 1
    train_inputs = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    train_targets = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (tokens, *_rest) in enumerate(rows):
        train_inputs[i, : len(tokens) - 1] = torch.tensor(tokens[:-1])
        train_targets[i, : len(tokens) - 1] = torch.tensor(tokens[1:])
    test_inputs = torch.full((n_test, width), PAD_ID, dtype=torch.long)
    test_targets = torch.full((n_test, width), IGNORE_INDEX, dtype=torch.long)
    for i, tokens in enumerate(queries):
        test_inputs[i, : len(tokens) - 1] = torch.tensor(tokens[:-1])
        test_targets[i, len(tokens) - 2] = tokens[-1]

    fact_train = torch.tensor([row[1] for row in rows], dtype=torch.long)
    template_train = torch.tensor([row[2] for row in rows], dtype=torch.long)
    triple_train = torch.tensor([row[3] for row in rows], dtype=torch.long).view(len(rows), 3)
    contradicts_train = torch.tensor([row[4] for row in rows], dtype=torch.long)
    fact_test = torch.arange(n_test, dtype=torch.long)
    triple_test = facts[:n_test].clone()
    entailment = (fact_train.unsqueeze(0) == fact_test.unsqueeze(1)) & (fact_train >= 0).unsqueeze(0)

    qs, qr, qo = (triple_test[:, k : k + 1] for k in range(3))
    ts, tr, to = (triple_train[:, k].unsqueeze(0) for k in range(3))
    category = torch.full((n_test, len(rows)), _OTHER, dtype=torch.int8)
    for code, hit in ((_SAME_RELATION, tr == qr), (_SAME_OBJECT, to == qo), (_SAME_SUBJECT, ts == qs),
                      (_CONTRADICTION, (ts == qs) & (tr == qr) & (to != qo)), (_PROPONENT, entailment)):
        category[hit.expand(n_test, -1)] = code  # later (higher-precedence) codes overwrite earlier ones

    def text(r: int, t: int) -> str:
        prefix, middle = templates[r][t]
        words = [vocab[i] for i in prefix] + ["{s}" if t < n_templates else "{o}"] + [vocab[i] for i in middle]
        return " ".join([*words, "{o}" if t < n_templates else "{s}"])

    return FactCorpus(
        train=Data(train_inputs, train_targets),
        test=Data(test_inputs, test_targets),
        entailment=entailment,
        category=category,
        vocab=tuple(vocab),
        fact_train=fact_train,
        fact_test=fact_test,
        template_train=template_train,
        template_test=torch.tensor(held_out, dtype=torch.long),
        params=params,
        facts=facts,
        triple_train=triple_train,
        triple_test=triple_test,
        contradicts_train=contradicts_train,
        repeats=repeats,
        entity_tokens=entity_tokens,
        relation_names=relation_names,
        templates=tuple(tuple(text(r, t) for t in range(n_forms)) for r in range(n_relations)),
    )


# --- the hallucination-tracing split (issue #17 item 4) -----------------------------------------------------------


def _category_codes(triple_test: Tensor, triple_train: Tensor, entailment: Tensor) -> Tensor:
    """int8 ``[n_test, n_train]`` codes into :data:`CATEGORIES` of each sentence's triple against each query's triple.

    The rule of :func:`make_fact_corpus` (precedence proponent > contradiction > same_subject > same_object >
    same_relation > other), for a query triple that need not be a corpus fact (a hallucinated one).
    """
    n_test, n_train = triple_test.shape[0], triple_train.shape[0]
    qs, qr, qo = (triple_test[:, k : k + 1] for k in range(3))
    ts, tr, to = (triple_train[:, k].unsqueeze(0) for k in range(3))
    real = (ts >= 0).expand(n_test, -1)  # filler rows (-1 triples) stay "other"
    category = torch.full((n_test, n_train), _OTHER, dtype=torch.int8)
    for code, hit in ((_SAME_RELATION, tr == qr), (_SAME_OBJECT, to == qo), (_SAME_SUBJECT, ts == qs),
                      (_CONTRADICTION, (ts == qs) & (tr == qr) & (to != qo))):
        category[hit.expand(n_test, -1) & real] = code
    category[entailment] = _PROPONENT
    return category


def _paraphrase_counts(n_paraphrases: Any, n_templates: int, owner: str) -> tuple[int, int]:
    """``(low, high)`` of ``n_paraphrases`` (an int or a pair), validated: ``1 <= low <= high <= n_templates − 1``."""
    value = n_paraphrases
    if isinstance(value, (list, tuple)) and len(value) == 2:
        low, high = value
    else:
        low = high = value
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (low, high)) or not 1 <= low <= high <= n_templates - 1:
        raise ConfigError(
            f"The 'n_paraphrases' parameter of {owner} must be an int or a (low, high) pair of ints with 1 <= low <= high <= "
            f"n_templates - 1 = {n_templates - 1} (the injected utterances use the forward templates other than the query's). "
            f"Got {n_paraphrases!r} instead."
        )
    return int(low), int(high)


@dataclass(frozen=True, eq=False)
class HallucinationSplit:
    """A fact corpus split for hallucination tracing: base sentences, and fine-tuning data that inject false facts.

    Attributes
    ----------
    base : FactCorpus
        The base part: every fact's sentences except the new facts' (filler excluded); its ``test`` are the queries
        with the TRUE object ``o`` as answer, ``entailment``/``category`` restricted to the base columns.
    finetune : FactCorpus
        The fine-tuning part (``[n_finetune]`` sentences: injected utterances, new facts, filler; seeded order). Its
        ``test`` are the same prompts with the FALSE object ``o'`` as answer; ``triple_test`` ``[n_test, 3]`` is the
        false fact ``(s, r, o')``; ``entailment`` ``[n_test, n_finetune]`` marks the injected utterances of the
        query's false fact (the positives); ``category`` is recomputed against ``(s, r, o')``; ``fact_train`` is −1
        and ``contradicts_train`` the contradicted fact for an injected utterance, as for the corpus's conflicts;
        ``params`` = the corpus's knobs plus ``n_paraphrases`` and ``n_new_facts``.
    true_objects, false_objects : Tensor
        int64 ``[n_test]``: entity ids of ``o`` and ``o'`` per query (``o' ∉ {s, o}``).
    paraphrases : Tensor
        int64 ``[n_test]``: injected utterances per query's false fact.
    new_facts : Tensor
        int64 ``[n_new_facts]``: fact ids whose sentences moved from base to fine-tuning.
    base_rows, finetune_rows : Tensor
        int64: indices into the source corpus's train rows of the base part; of the fine-tuning part, ``-1`` for an
        injected utterance (not a corpus row).
    """

    base: FactCorpus
    finetune: FactCorpus
    true_objects: Tensor
    false_objects: Tensor
    paraphrases: Tensor
    new_facts: Tensor
    base_rows: Tensor
    finetune_rows: Tensor

    def digest(self) -> str:
        """sha256 over both parts' digests and every tensor."""
        h = hashlib.sha256((self.base.digest() + self.finetune.digest()).encode())
        for t in (self.true_objects, self.false_objects, self.paraphrases, self.new_facts, self.base_rows, self.finetune_rows):
            h.update(f"{tuple(t.shape)}{t.dtype}".encode())
            h.update(t.contiguous().numpy().tobytes())
        return h.hexdigest()


def make_hallucination_split(corpus: FactCorpus, n_paraphrases: int | tuple[int, int] = (1, 3), n_new_facts: int = 10,
                             owner: str = "make_hallucination_split") -> HallucinationSplit:
    """Split ``corpus`` into base sentences and fine-tuning data that inject false facts (hallucination tracing).

    Each query fact ``f = (s, r, o)`` (facts ``0 … n_test−1``) gets a false object ``o'`` (uniform over the entities
    other than ``s`` and ``o``) and ``k_f`` injected utterances ``(s, r, o')`` (``k_f`` = ``n_paraphrases``, or drawn
    uniformly from ``low … high`` per fact), on ``k_f`` distinct forward templates other than the query's held-out
    template, so the query stays a held-out paraphrase. The fine-tuning data are these utterances, the sentences of
    ``n_new_facts`` new true facts (facts ``n_test … n_test+n_new_facts−1``, moved out of base), and the corpus's
    filler; the base is every other sentence (so it states each query's ``(s, r, o)`` on the other templates, and
    never ``(s, r, o')``). Draws use a generator derived from the corpus seed: deterministic, and independent of
    the corpus's own draws.

    Parameters
    ----------
    corpus : FactCorpus
        Without conflicts and with one surface form per entity (``conflicts == 0``, ``aliases == 1``).
    n_paraphrases : int or (int, int)
        Injected utterances per false fact, or an inclusive range drawn per fact; ``1 <= low <= high <= n_templates − 1``.
    n_new_facts : int
        New true facts in the fine-tuning data, in ``[0, n_facts − n_test]``.
    owner : str
        Named in error messages.

    Returns
    -------
    HallucinationSplit

    Raises
    ------
    ConfigError
        A bad knob, named.
    """
    params = corpus.params
    n_facts, n_test, n_templates = int(corpus.facts.shape[0]), corpus.n_test, int(params["n_templates"])
    if float(params["conflicts"]) != 0.0:
        raise ConfigError(f"The 'conflicts' parameter of {owner} must be 0 (the injected false facts are the only contradictions). "
                          f"Got {params['conflicts']!r} instead.")
    if int(params["aliases"]) != 1:
        raise ConfigError(f"The 'aliases' parameter of {owner} must be 1 (a query must share its entities' tokens with the base "
                          f"facts for the base model to know them). Got {params['aliases']!r} instead.")
    low, high = _paraphrase_counts(n_paraphrases, n_templates, owner)
    if isinstance(n_new_facts, bool) or not isinstance(n_new_facts, int) or not 0 <= n_new_facts <= n_facts - n_test:
        raise ConfigError(f"The 'n_new_facts' parameter of {owner} must be an int in [0, n_facts - n_test] = [0, {n_facts - n_test}]. "
                          f"Got {n_new_facts!r} instead.")
    n_entities = int(params["n_entities"])
    index = {word: i for i, word in enumerate(corpus.vocab)}
    g = _generator(int(params["seed"]), "hallucination")

    # injected utterances: (tokens, query, template, false object)
    injected: list[tuple[list[int], int, int, int]] = []
    false_objects, counts = [], []
    for f in range(n_test):
        s, r, o = (int(v) for v in corpus.facts[f])
        others = [e for e in range(n_entities) if e not in (s, o)]
        false_o = others[_randint(len(others), g)]
        k = low + _randint(high - low + 1, g)
        held = int(corpus.template_test[f])
        choices = [t for t in range(n_templates) if t != held]
        for j in torch.randperm(len(choices), generator=g)[:k].tolist():
            t = choices[j]
            words = corpus.templates[r][t].split()
            tokens = [int(corpus.entity_tokens[s, 0]) if w == "{s}" else int(corpus.entity_tokens[false_o, 0]) if w == "{o}" else index[w]
                      for w in words]
            injected.append((tokens, f, t, false_o))
        false_objects.append(false_o)
        counts.append(k)

    fact = torch.where(corpus.fact_train >= 0, corpus.fact_train, corpus.contradicts_train)
    is_new = (fact >= n_test) & (fact < n_test + n_new_facts)
    is_filler = corpus.template_train < 0
    to_finetune = is_new | is_filler
    base_rows, moved = torch.nonzero(~to_finetune).flatten(), torch.nonzero(to_finetune).flatten()

    width = int(corpus.train.inputs.shape[1])
    if max(len(tokens) for tokens, *_ in injected) - 1 > width:  # every forward template is a train or query sentence
        raise ConfigError(f"{owner}: an injected utterance is longer than the corpus's width {width}.")
    n_inj = len(injected)
    inj_inputs = torch.full((n_inj, width), PAD_ID, dtype=torch.long)
    inj_targets = torch.full((n_inj, width), IGNORE_INDEX, dtype=torch.long)
    for i, (tokens, *_rest) in enumerate(injected):
        inj_inputs[i, : len(tokens) - 1] = torch.tensor(tokens[:-1])
        inj_targets[i, : len(tokens) - 1] = torch.tensor(tokens[1:])
    inj_query = torch.tensor([q for _, q, _, _ in injected], dtype=torch.long)
    inj_triple = torch.tensor([[int(corpus.facts[q, 0]), int(corpus.facts[q, 1]), o2] for _, q, _, o2 in injected],
                              dtype=torch.long).view(n_inj, 3)

    # fine-tuning rows: injected first, then moved corpus rows; one seeded shuffle
    rows = torch.cat([torch.full((n_inj,), -1, dtype=torch.long), moved])
    inputs = torch.cat([inj_inputs, corpus.train.inputs[moved]])
    targets = torch.cat([inj_targets, corpus.train.targets[moved]])
    fact_train = torch.cat([torch.full((n_inj,), -1, dtype=torch.long), corpus.fact_train[moved]])
    template_train = torch.cat([torch.tensor([t for _, _, t, _ in injected], dtype=torch.long), corpus.template_train[moved]])
    triple_train = torch.cat([inj_triple, corpus.triple_train[moved]])
    contradicts_train = torch.cat([inj_query, corpus.contradicts_train[moved]])
    of_query = torch.cat([inj_query, torch.full((len(moved),), -1, dtype=torch.long)])
    order = torch.randperm(len(rows), generator=g)
    rows, inputs, targets, fact_train, template_train, triple_train, contradicts_train, of_query = (
        t[order] for t in (rows, inputs, targets, fact_train, template_train, triple_train, contradicts_train, of_query))

    false_t = torch.tensor(false_objects, dtype=torch.long)
    positions = answer_positions(corpus.test)
    test_targets = corpus.test.targets.clone()
    test_targets[torch.arange(n_test), positions] = corpus.entity_tokens[false_t, 0]
    triple_test = corpus.triple_test.clone()
    triple_test[:, 2] = false_t
    entailment = of_query.unsqueeze(0) == torch.arange(n_test).unsqueeze(1)
    finetune = dataclasses.replace(
        corpus,
        train=Data(inputs, targets),
        test=Data(corpus.test.inputs.clone(), test_targets),
        entailment=entailment,
        category=_category_codes(triple_test, triple_train, entailment),
        fact_train=fact_train,
        template_train=template_train,
        params={**params, "n_paraphrases": [low, high] if low != high else low, "n_new_facts": int(n_new_facts)},
        triple_train=triple_train,
        triple_test=triple_test,
        contradicts_train=contradicts_train,
    )
    base = dataclasses.replace(
        corpus,
        train=corpus.train.subset(base_rows),
        entailment=corpus.entailment[:, base_rows],
        category=corpus.category[:, base_rows],
        fact_train=corpus.fact_train[base_rows],
        template_train=corpus.template_train[base_rows],
        triple_train=corpus.triple_train[base_rows],
        contradicts_train=corpus.contradicts_train[base_rows],
    )
    return HallucinationSplit(
        base=base,
        finetune=finetune,
        true_objects=corpus.facts[:n_test, 2].clone(),
        false_objects=false_t,
        paraphrases=torch.tensor(counts, dtype=torch.long),
        new_facts=torch.arange(n_test, n_test + n_new_facts, dtype=torch.long),
        base_rows=base_rows,
        finetune_rows=rows,
    )
