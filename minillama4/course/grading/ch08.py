"""Chapter 08 cases: the chat template, assistant-only labels, the masked SFT loss and judge pruning. Expected values
come from the package: `chat.format_chat`, `chat.sft_example`, `train.sft.masked_cross_entropy`, `train.sft.prune_easy`.
Below them, the common wrong versions the grader recognises, with what it tells the learner."""

import math
import re

import torch

from ...chat import BEGIN, EOT, HEADER_END, encode_chat, format_chat, header, sft_example
from ...train.sft import masked_cross_entropy, prune_easy
from ..data import course_tokenizer
from .core import Case, Exercise, Mistake, register
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


def _loss_case(seed: int, B: int, T: int, V: int, scale: float = 2.0, dtype=torch.float32):
    logits = (torch.randn(B, T, V, generator=_g(seed)) * scale).to(dtype)
    labels = torch.randint(0, V, (B, T), generator=_g(10 + seed))
    drop = torch.rand(B, T, generator=_g(20 + seed)) < 0.5
    drop[0, 0] = True
    drop[-1, -1] = False  # at least one counted position; rows with different counts
    return logits, labels.masked_fill(drop, -100)


def _loss_cases():
    cases = []
    for seed, (B, T, V) in enumerate([(2, 7, 11), (3, 5, 20), (1, 9, 6)]):
        logits, labels = _loss_case(seed, B, T, V)
        cases.append(Case((logits, labels), masked_cross_entropy(logits, labels)))
    # bfloat16 logits over a larger vocabulary: the loss must still be computed in float32. Rounding errors partly
    # average out over the counted positions; with this seed a bfloat16 log-softmax is off by over 10 times the
    # tolerance (tests/mistakes/wrong_ch08.py holds such a version, which must fail here)
    logits, labels = _loss_case(203, 2, 6, 300, 4.0, torch.bfloat16)
    cases.append(Case((logits, labels), masked_cross_entropy(logits, labels)))
    return cases


def _prune_cases():
    cases = []
    # keep_fraction · N: 2.1 (rounds down), 2.7 (rounds up), 0.04 (at least one); no exact halves, where rounding
    # rules differ (round() sends 2.5 to 2)
    for seed, (n, f) in enumerate([(10, 0.5), (7, 0.3), (12, 0.75), (5, 1.0), (4, 0.01), (9, 0.3)]):
        scores = torch.randperm(100, generator=_g(30 + seed))[:n].float() / 7  # distinct
        cases.append(Case((scores, f), prune_easy(list(range(n)), scores, f)))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch08.py holds independently written wrong learner files for each of them.
def _is_text(got) -> bool:
    return isinstance(got, str)


def _strip_content(messages, add_generation_prompt=True):
    return format_chat([{**m, "content": m["content"].strip()} for m in messages], add_generation_prompt)


def _tool_kept(messages, add_generation_prompt=True):
    text = BEGIN + "".join(header(m["role"]) + m["content"] + EOT for m in messages)
    return text + (header("assistant") if add_generation_prompt else "")


def _header_newlines(case, got) -> bool:
    """Right once every header is followed by exactly two newlines: the blank line after a header is missing or
    has another length."""
    return _is_text(got) and re.sub(re.escape(HEADER_END) + r"\n*", HEADER_END + "\n\n", got) == case.expected


def _no_generation_prompt(case, got) -> bool:
    return _is_text(got) and case.args[1] and got == case.expected[:-len(header("assistant"))]


def _prompt_without_newlines(case, got) -> bool:
    return _is_text(got) and case.args[1] and got + "\n\n" == case.expected


def _labels_unshifted(ids_T, mask_T):
    labels = torch.where(mask_T, ids_T, -100)
    return ids_T[:-1], labels[:-1]


def _labels_backwards(ids_T, mask_T):
    labels = torch.where(mask_T, ids_T, -100)
    return ids_T[1:], labels[:-1]


def _labels_everywhere(ids_T, mask_T):
    return ids_T[:-1], ids_T[1:]


def _mask_of_input(ids_T, mask_T):
    return ids_T[:-1], torch.where(mask_T[:-1], ids_T[1:], -100)


def _mask_inverted(ids_T, mask_T):
    return ids_T[:-1], torch.where(~mask_T[1:], ids_T[1:], -100)


def _ignored_as_zero(ids_T, mask_T):
    return ids_T[:-1], torch.where(mask_T[1:], ids_T[1:], 0)


def _not_shifted_at_all(case, got) -> bool:
    ids, mask = case.args
    return (isinstance(got, (tuple, list)) and len(got) == 2 and got[1].shape == ids.shape
            and torch.equal(got[1].long(), torch.where(mask, ids, -100)))


def _logp_kept(logits, labels):
    keep = labels != -100
    return logits[keep].float().log_softmax(-1).gather(-1, labels[keep][:, None])[:, 0], keep


def _ce_per_row(logits, labels):
    rows = [-_logp_kept(logits[b:b + 1], labels[b:b + 1])[0].mean() for b in range(logits.shape[0])]
    return torch.stack(rows).mean()


def _ce_over_all_positions(logits, labels):
    lp, keep = _logp_kept(logits, labels)
    return -lp.sum() / keep.numel()


def _ce_sum(logits, labels):
    return -_logp_kept(logits, labels)[0].sum()


def _ce_no_minus(logits, labels):
    return _logp_kept(logits, labels)[0].mean()


def _ce_shifted_again(logits, labels):
    return _logp_kept(logits[:, :-1], labels[:, 1:])[0].neg().mean()


def _in_bfloat16(case, got) -> bool:
    """Every float32 case passed; the bfloat16 one does not: the loss was computed in the logits' dtype."""
    return case.args[0].dtype == torch.bfloat16


def _prune_k(rule):
    def wrong(scores, keep_fraction):
        k = rule(keep_fraction * len(scores))
        return sorted(scores.topk(k).indices.tolist())
    return wrong


def _prune_easiest(scores, keep_fraction):
    k = max(1, round(keep_fraction * len(scores)))
    return sorted(scores.topk(k, largest=False).indices.tolist())


def _prune_unsorted(scores, keep_fraction):
    return scores.topk(max(1, round(keep_fraction * len(scores)))).indices.tolist()


def _prune_removed_fraction(scores, keep_fraction):
    return sorted(scores.topk(max(1, round((1 - keep_fraction) * len(scores)))).indices.tolist())


register(Exercise(
    "chat_template", 8, "format_chat", _template_cases,
    "start with <|begin_of_text|>, then per message <|header_start|>role<|header_end|> + two newlines + "
    "content + <|eot|> (role 'tool' → 'ipython'); with add_generation_prompt end on an open assistant "
    "header (its two newlines included)",
    nudge="Print your text for one user message and compare it character by character with the docstring: what "
          "comes first, what follows each header, what ends each message, and what is left open for the model?",
    mistakes=[
        Mistake("those are Llama 3's tokens (<|start_header_id|>, <|eot_id|>): Llama 4 writes <|header_start|>, "
                "<|header_end|> and <|eot|>",
                test=lambda case, got: _is_text(got) and ("<|start_header_id|>" in got or "<|eot_id|>" in got)),
        Mistake("the text must start with <|begin_of_text|>, once, before the first message",
                test=lambda case, got: _is_text(got) and not got.startswith(BEGIN)),
        Mistake("<|begin_of_text|> opens the whole conversation once, not every message",
                test=lambda case, got: _is_text(got) and got.count(BEGIN) > 1),
        Mistake("a message with role 'tool' is written with the role 'ipython' (Llama 4's name for tool results)",
                wrong=_tool_kept),
        Mistake("with add_generation_prompt the open assistant header needs its blank line too: end on "
                "<|header_start|>assistant<|header_end|>\\n\\n", test=_prompt_without_newlines),
        Mistake("every header is followed by exactly two newlines (a blank line) before the content: "
                "<|header_end|>\\n\\n", test=_header_newlines),
        Mistake("with add_generation_prompt=True the text ends on an open assistant header, "
                "<|header_start|>assistant<|header_end|>\\n\\n, for the model to continue",
                test=_no_generation_prompt),
        Mistake("with add_generation_prompt=False there is no open assistant header at the end",
                test=lambda case, got: _is_text(got) and not case.args[1]
                and got == case.expected + header("assistant")),
        Mistake("every message ends with <|eot|>, the last one too (it is not a separator between messages)",
                test=lambda case, got: _is_text(got) and got.count(EOT) < case.expected.count(EOT)),
        Mistake("the content is written exactly as given: do not strip its spaces", wrong=_strip_content),
    ]))
register(Exercise(
    "assistant_labels", 8, "assistant_labels", _label_cases,
    "labels = where(is_assistant, ids, -100), then shift: inputs = ids[:-1], labels = labels[1:] "
    "(position t predicts token t+1)", exact=True,
    nudge="Write out a 4-token conversation by hand: which token does input position t have to predict, and who "
          "wrote that token?",
    mistakes=[
        Mistake("your labels are not shifted: position t predicts the NEXT token, so return ids[:-1] and the "
                "masked labels[1:] (both T-1 long)", test=_not_shifted_at_all),
        Mistake("your labels[t] is the token at t itself: position t predicts token t+1, labels = masked ids[1:]",
                wrong=_labels_unshifted),
        Mistake("you shifted the wrong way: the inputs are ids[:-1] and the labels the masked ids[1:] (the next "
                "token), not the previous one", wrong=_labels_backwards),
        Mistake("you put labels on every token: the loss must only learn what the assistant wrote, -100 on the "
                "prompt, the headers and the other roles", wrong=_labels_everywhere),
        Mistake("your mask follows the input position: label t is token t+1, so it is kept when the assistant "
                "wrote token t+1 (is_assistant[1:]); mask first, then shift", wrong=_mask_of_input),
        Mistake("your mask is inverted: keep the tokens the assistant wrote (is_assistant True), -100 elsewhere",
                wrong=_mask_inverted),
        Mistake("skipped positions get the label -100 (what F.cross_entropy ignores), not 0 (a real token id)",
                wrong=_ignored_as_zero),
    ]))
register(Exercise(
    "masked_cross_entropy", 8, "masked_cross_entropy", _loss_cases,
    "select the positions with label != -100 across the whole batch, log_softmax in float32, gather the "
    "label's log-prob, and average over all selected positions (not per row)",
    nudge="Which positions count, and what do you divide by: the positions of the whole batch, each row's own, or "
          "the ones that count? And in which dtype do you take the log-softmax?",
    mistakes=[
        Mistake("gather cannot use the label -100: select the counted positions (labels != -100) first, or use "
                "F.cross_entropy(..., ignore_index=-100)", raises=r"index -100 is out of bounds|Target -100"),
        Mistake("you averaged each row, then the rows: average over all counted positions of the batch at once "
                "(a row with more assistant tokens weighs more)", wrong=_ce_per_row),
        Mistake("you divided by every position, -100 ones included: divide by the number of counted positions",
                wrong=_ce_over_all_positions),
        Mistake("that is the sum: the loss is the MEAN over the counted positions", wrong=_ce_sum),
        Mistake("the sign is flipped: the loss is −log p(label), a positive number", wrong=_ce_no_minus),
        Mistake("the labels are already shifted (labels[:, t] is the target of logits[:, t]): do not shift again",
                wrong=_ce_shifted_again),
        Mistake("compute the loss in float32 (logits.float() before the log-softmax): bfloat16 keeps about three "
                "significant digits, too few for log-probabilities", test=_in_bfloat16),
    ]))
register(Exercise(
    "prune_easy", 8, "prune_easy", _prune_cases,
    "k = max(1, round(keep_fraction · N)); the indices of the k largest scores (topk), sorted ascending",
    nudge="A higher score means a harder example: which end of the scores do you keep, how many, and in what order "
          "do the examples come back?",
    mistakes=[
        Mistake("return a Python list of ints (.tolist()), not a tensor",
                test=lambda case, got: isinstance(got, torch.Tensor)),
        Mistake("you kept the EASIEST examples: the judge's score is its loss, so the hardest have the largest "
                "scores (topk, largest=True)", wrong=_prune_easiest),
        Mistake("keep at least one example: k = max(1, round(keep_fraction · N))", test=lambda case, got: got == []),
        Mistake("int() rounds down: the number kept is round(keep_fraction · N)",
                wrong=_prune_k(lambda x: max(1, int(x)))),
        Mistake("math.ceil rounds up: the number kept is round(keep_fraction · N)", wrong=_prune_k(math.ceil)),
        Mistake("keep_fraction is the share you KEEP, not the share you remove", wrong=_prune_removed_fraction),
        Mistake("the right examples in topk's order: return the indices sorted ascending (the examples keep their "
                "original order)", wrong=_prune_unsorted),
    ]))
