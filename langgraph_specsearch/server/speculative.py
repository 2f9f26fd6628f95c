"""Draft-model speculative decoding of one request (`specsearch serve --draft-model`).

The rule (speculative sampling: Leviathan et al. 2023, Chen et al. 2023). Each round the draft
proposes up to γ tokens x_1..x_γ and the target scores all of them in ONE forward pass, which
gives its distributions p_1..p_{γ+1}. Draft token x_i is accepted with probability
min(1, p_i(x_i) / q_i(x_i)), q_i being the distribution x_i was drawn from; at the first
rejection one token is drawn from norm(max(0, p_i - q_i)) and the round ends; when all γ are
accepted one more token is drawn from p_{γ+1}. So every round commits at least one token, and
every committed token is distributed exactly as the target alone would draw it (`verify`).

p and q are the distributions the plain engine samples from (`row_logprobs`,
`sampling_probs`): logits / temperature, then top-k and top-p, with the request's seed in the
row's own generator. A greedy request has one-hot p at the argmax, so a draft token is kept iff
it is the target's argmax and the output equals plain greedy decoding.

Proposals:
- shared vocabulary (the draft's token ids mean the target's): x_i ~ q_i, the draft's own
  distribution under the same temperature / top-k / top-p (argmax when greedy);
- different vocabularies (e.g. Gemma target, SmolLM2 draft): the draft continues the committed
  text, re-tokenised with its own tokenizer, greedily; its new text is re-tokenised with the
  target's tokenizer and those target tokens are the proposal. Given the committed prefix the
  proposal is fixed, i.e. q_i is one-hot at x_i, and the same rule reads: keep x_i with
  probability p_i(x_i), else draw from p_i without x_i. Still exact, with a lower acceptance
  rate than a shared vocabulary gives. (transformers' universal speculative decoding maps the
  draft's distribution onto the two vocabularies' intersection instead, but prunes the
  draft's LM head in place, which a server that keeps using the draft cannot afford.)

γ starts at `draft_tokens`, grows by 2 after a round whose drafts were all kept and shrinks by
1 otherwise, within [1, `max_draft_tokens`] (transformers' "heuristic" schedule). Both models
keep a KV cache of the committed tokens, cropped after each round to what was kept. Inputs go
to each model's device; the rule runs on the CPU (logits of γ + 1 positions are copied there),
with the row's CPU generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import DynamicCache

from langgraph_specsearch.backends.prefix import CachedForward, common_prefix_length
from langgraph_specsearch.backends.transformers import input_device

if TYPE_CHECKING:
    from langgraph_specsearch.server.engine import Row

FLOOR_LOGPROB = -1e4
Push = Callable[["Row", int, float, list[tuple[int, float]]], bool]
"""Records one committed token (id, logprob, top tokens); True when the row is finished."""
Top = Callable[[torch.Tensor, int], list[tuple[int, float]]]


def row_logprobs(logits: torch.Tensor, row: Row) -> torch.Tensor:
    """The reported log-probabilities: `log_softmax(logits / temperature)` (raw if greedy)."""
    logits = logits.float()
    if row.do_sample:
        logits = logits / max(row.temperature, 1e-4)
    lp = torch.log_softmax(logits, dim=-1)
    return torch.nan_to_num(lp, nan=-math.inf, neginf=FLOOR_LOGPROB)


def sampling_probs(lp: torch.Tensor, row: Row) -> torch.Tensor:
    """The distribution a row's token is drawn from: top-k, then top-p; one-hot if greedy."""
    if not row.do_sample:
        return torch.nn.functional.one_hot(torch.argmax(lp), lp.shape[-1]).to(lp.dtype)
    probs = lp.exp()
    if row.top_k > 0 and row.top_k < probs.shape[-1]:
        kth = torch.topk(probs, row.top_k).values[-1]
        probs = torch.where(probs >= kth, probs, torch.zeros_like(probs))
    if row.top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cumulative = torch.cumsum(sorted_probs, dim=-1)
        drop = cumulative - sorted_probs > row.top_p * cumulative[-1]
        sorted_probs[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return probs / probs.sum()


def verify(
    ps: list[torch.Tensor],
    proposal: list[int],
    qs: list[torch.Tensor] | None,
    generator: torch.Generator | None,
) -> tuple[int, int]:
    """The speculative-sampling rule: (number of draft tokens kept, the token drawn after them).

    Args:
        ps: The target's distributions, one per proposed token plus one (`len(proposal) + 1`).
        proposal: The draft tokens x_1..x_γ.
        qs: The distributions they were drawn from; None: one-hot at each x_i (a fixed proposal).
        generator: The row's random generator (the request's seed).
    """
    for i, x in enumerate(proposal):
        p = ps[i]
        px = float(p[x])
        qx = float(qs[i][x]) if qs is not None else 1.0
        if px >= qx:
            continue
        if px > 0.0 and float(torch.rand((), generator=generator, device="cpu")) * qx < px:
            continue
        if qs is not None:
            residual = torch.clamp(p - qs[i], min=0.0)
        else:
            residual = p.clone()
            residual[x] = 0.0
        if float(residual.sum()) <= 0.0:  # p == q up to rounding: nothing left to correct
            residual = p
        return i, int(torch.multinomial(residual, 1, generator=generator))
    return len(proposal), int(torch.multinomial(ps[len(proposal)], 1, generator=generator))


@dataclass
class _Cache:
    """One model's KV cache over a batch-1 sequence and the token ids it holds."""

    forward: CachedForward
    cache: Any
    ids: list[int]
    device: Any

    @classmethod
    def of(cls, model: Any) -> _Cache:
        return cls(CachedForward.of(model), DynamicCache(), [], input_device(model))

    def crop(self, length: int) -> None:
        """Keep the first `length` tokens."""
        if length < len(self.ids):
            self.cache.crop(length - len(self.ids))  # negative: tokens to remove (any version)
            self.ids = self.ids[:length]

    def feed(self, ids: list[int], keep: int) -> torch.Tensor:
        """Append `ids`; the last `keep` positions' logits (`[keep, vocab]`, float32, CPU)."""
        past = len(self.ids)
        kwargs: dict[str, Any] = {self.forward.cache_kw: self.cache, "use_cache": True}
        if self.forward.logits_to_keep:
            kwargs["logits_to_keep"] = keep
        out = self.forward.model(  # one unpadded row: the causal mask needs no attention mask
            input_ids=torch.tensor([ids], dtype=torch.long, device=self.device),
            position_ids=torch.arange(past, past + len(ids), device=self.device)[None],
            **kwargs,
        )
        self.ids.extend(ids)
        return out.logits[0, -keep:].float().cpu()


@dataclass
class SpeculativeDecoder:
    """Decodes one row with the draft model's proposals and the target's verification."""

    target: Any
    target_tokenizer: Any
    draft: Any
    draft_tokenizer: Any
    eos_ids: set[int]
    draft_tokens: int = 4
    max_draft_tokens: int = 16

    def __post_init__(self) -> None:
        self.shared_vocab = self.draft_tokenizer.get_vocab() == self.target_tokenizer.get_vocab()
        ids = getattr(self.draft.generation_config, "eos_token_id", None)
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.draft_tokenizer.eos_token_id is not None:
            ids.append(self.draft_tokenizer.eos_token_id)
        self.draft_eos = {int(i) for i in ids}

    def run(self, row: Row, push: Push, top: Top) -> None:
        """Generate `row` to the end (worker thread); counts kept drafts and target calls."""
        row.accepted_draft_tokens = row.drafted_tokens = row.target_calls = 0
        target, draft = _Cache.of(self.target), _Cache.of(self.draft)
        seq = list(row.ids)
        gamma = self.draft_tokens
        while not row.cancelled:
            room = row.max_new_tokens - len(row.tokens)
            g = max(0, min(gamma, room - 1))
            proposal, qs = self._propose(draft, seq, g, row)
            logits = target.feed(seq[len(target.ids) :] + proposal, len(proposal) + 1)
            row.target_calls += 1
            lps = [row_logprobs(logits[i], row) for i in range(len(proposal) + 1)]
            ps = [sampling_probs(lp, row) for lp in lps]
            kept, token = verify(ps, proposal, qs, row.generator)
            row.drafted_tokens += len(proposal)
            target.crop(len(seq) + kept)
            if self.shared_vocab:
                draft.crop(len(seq) + kept)
            for i, tok in enumerate([*proposal[:kept], token]):
                seq.append(tok)
                row.accepted_draft_tokens += int(i < kept)
                if push(row, tok, float(lps[i][tok]), top(lps[i], row.top_n)):
                    return
            if proposal:
                full = kept == len(proposal)
                gamma = min(self.max_draft_tokens, gamma + 2) if full else max(1, gamma - 1)
        if row.finish_reason is None:
            row.finish_reason = "length"

    def _propose(
        self, draft: _Cache, seq: list[int], g: int, row: Row
    ) -> tuple[list[int], list[torch.Tensor] | None]:
        """Up to `g` target-token proposals and their distributions (None: one-hot)."""
        if g <= 0:
            return [], [] if self.shared_vocab else None
        if self.shared_vocab:
            proposal: list[int] = []
            qs: list[torch.Tensor] = []
            feed = seq[len(draft.ids) :]
            for _ in range(g):
                q = sampling_probs(row_logprobs(draft.feed(feed, 1)[0], row), row)
                x = int(torch.multinomial(q, 1, generator=row.generator))
                proposal.append(x)
                qs.append(q)
                if x in self.eos_ids:
                    break
                feed = [x]
            return proposal, qs
        return self._propose_across_vocabularies(draft, seq, g), None

    def _propose_across_vocabularies(self, draft: _Cache, seq: list[int], g: int) -> list[int]:
        """The draft's greedy continuation of the committed text, as target tokens."""
        text = self.target_tokenizer.decode(seq, skip_special_tokens=True)
        context = list(self.draft_tokenizer(text)["input_ids"])
        if not context:
            return []
        draft.crop(min(common_prefix_length(draft.ids, context), len(context) - 1))
        feed = context[len(draft.ids) :]
        new: list[int] = []
        ended = False
        for _ in range(g):
            x = int(torch.argmax(draft.feed(feed, 1)[0]))
            if x in self.draft_eos:
                ended = True
                break
            new.append(x)
            feed = [x]
        words = self.draft_tokenizer.decode(new, skip_special_tokens=True).rstrip("\ufffd")
        proposal = self._target_tokens(seq, words) if words else []
        if ended and len(proposal) < g and self.eos_ids:
            proposal.append(min(self.eos_ids))
        return proposal[:g]

    def _target_tokens(self, seq: list[int], words: str) -> list[int]:
        """`words` as target tokens following `seq` (joined at the last few tokens' text)."""
        encode = self.target_tokenizer.encode
        tail = seq[-3:]
        joined = list(encode(self.target_tokenizer.decode(tail) + words, add_special_tokens=False))
        if joined[: len(tail)] == tail:
            return joined[len(tail) :]
        return list(encode(words, add_special_tokens=False))
