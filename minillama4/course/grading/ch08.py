"""Chapter 08 cases: the chat template, assistant-only labels, the masked SFT loss and judge pruning. Expected values
come from the package: `chat.format_chat`, `chat.sft_example`, `train.sft.masked_cross_entropy`, `train.sft.prune_easy`."""

import torch

from ...chat import encode_chat, format_chat, sft_example
from ..data import course_tokenizer
from ...train.sft import masked_cross_entropy, prune_easy
from .core import Case, Exercise, register
from .core import seeded as _g

_CONVERSATIONS = [
    [{"role": "user", "content": "Which is the largest: 3, 9?"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Which is the smallest: 4, 1?"}],
    [{"role": "user", "content": "  spaces stay  "}, {"role": "assistant", "content": "The answer is 2."}],
    [{"role": "user", "content": "run it"}, {"role": "tool", "content": "{\"result\": 4}"}],
]


def _template_cases():
    return [Case((m, gen), format_chat(m, gen)) for m in _CONVERSATIONS for gen in (True, False)]


def _label_cases():
    tok = course_tokenizer()
    convs = [[{"role": "user", "content": "Which is the largest: 3, 9?"}, {"role": "assistant", "content": "9"}],
             [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
              {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "2, 5?"},
              {"role": "assistant", "content": "The answer is 5."}]]
    cases = []
    for m in convs:
        ids, mask = encode_chat(tok, m)
        cases.append(Case((torch.tensor(ids), torch.tensor(mask)), sft_example(tok, m)))
    return cases


def _loss_cases():
    cases = []
    for seed, (B, T, V) in enumerate([(2, 7, 11), (3, 5, 20), (1, 9, 6)]):
        logits = torch.randn(B, T, V, generator=_g(seed)) * 2
        labels = torch.randint(0, V, (B, T), generator=_g(10 + seed))
        drop = torch.rand(B, T, generator=_g(20 + seed)) < 0.5
        drop[0, 0] = True
        drop[-1, -1] = False  # at least one counted position; rows with different counts
        labels = labels.masked_fill(drop, -100)
        cases.append(Case((logits, labels), masked_cross_entropy(logits, labels)))
    return cases


def _prune_cases():
    cases = []
    for seed, (n, f) in enumerate([(10, 0.5), (7, 0.3), (12, 0.75), (5, 1.0), (4, 0.01)]):
        scores = torch.randperm(100, generator=_g(30 + seed))[:n].float() / 7  # distinct
        cases.append(Case((scores, f), prune_easy(list(range(n)), scores, f)))
    return cases


register(Exercise("chat_template", 8, "format_chat", _template_cases,
                  "start with <|begin_of_text|>, then per message <|header_start|>role<|header_end|> + two newlines + "
                  "content + <|eot|> (role 'tool' → 'ipython'); with add_generation_prompt end on an open assistant "
                  "header (its two newlines included)"))
register(Exercise("assistant_labels", 8, "assistant_labels", _label_cases,
                  "labels = where(is_assistant, ids, -100), then shift: inputs = ids[:-1], labels = labels[1:] "
                  "(position t predicts token t+1)", exact=True))
register(Exercise("masked_cross_entropy", 8, "masked_cross_entropy", _loss_cases,
                  "select the positions with label != -100 across the whole batch, log_softmax in float32, gather the "
                  "label's log-prob, and average over all selected positions (not per row)"))
register(Exercise("prune_easy", 8, "prune_easy", _prune_cases,
                  "k = max(1, round(keep_fraction · N)); the indices of the k largest scores (topk), sorted ascending"))
