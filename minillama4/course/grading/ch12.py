"""Chapter 12 cases: the communication-free pieces of expert parallelism (send counts per rank, the permutation
before the exchange, the expert-major order after it, the combine, what one rank holds). Expected values come from
the package (`minillama4.parallel.send_counts`, `expert_major_order`, `rank_weight_bytes`,
`minillama4.moe.sort_by_expert`, `combine`, `dispatch`), never from hand-typed numbers. Below them, the common wrong
versions the grader recognises, with what it tells the learner."""

import torch

from ...config import Llama4Config
from ...moe import combine, dispatch, sort_by_expert
from ...parallel import expert_major_order, rank_weight_bytes, send_counts
from .core import seeded as _g, Case, Exercise, Mistake, register


def _tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


def _triple(got) -> bool:
    return isinstance(got, (tuple, list)) and len(got) == 3 and all(_tensor(g) for g in got)


def _close(a, b) -> bool:
    return _tensor(a) and a.shape == b.shape and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4)


def _routing(seed: int, T: int, K: int, used: int):
    """idx [T, K]: K distinct experts per token among the first `used` (the others receive no row)."""
    return torch.topk(torch.rand(T, used, generator=_g(seed)), K, dim=-1).indices


# ------------------------------------------------------------------------------------------------ send counts
def _send_cases():
    cases = []
    # (E, N): the first has experts nobody chose; e = 1 (E = N) and N = 1 are the edge layouts; the last is Maverick
    for seed, (E, N, zeros) in enumerate([(8, 2, True), (8, 4, False), (16, 4, True), (6, 3, False), (4, 4, False),
                                          (4, 1, False), (4, 2, None), (128, 8, True)]):
        counts = torch.randint(0, 20, (E,), generator=_g(1200 + seed))
        if zeros:
            counts[1::3] = 0
        if zeros is None:
            counts.zero_()
        cases.append(Case((counts, N), send_counts(counts, N)))
    return cases


# ------------------------------------------------------------------------------------------------ sort by expert
def _sort_cases():
    cases = []
    # (T, K, E, experts used, dtype): the first never picks the last expert (its count must be 0); the third is long
    # enough that an unstable sort reorders rows of one expert
    for seed, (T, K, E, used) in enumerate([(10, 2, 6, 5), (9, 1, 4, 4), (300, 2, 8, 8), (7, 3, 8, 6)]):
        idx = _routing(1220 + seed, T, K, used)
        g = _g(1230 + seed)
        x = torch.randn(T, 4, generator=g)
        scores = torch.rand(T, K, generator=g) * 0.9 + 0.1
        cases.append(Case((x, idx, scores, E), sort_by_expert(x, idx, scores, E)))
    return cases


# ------------------------------------------------------------------------------------------------ expert-major order
def _order_cases():
    g = _g(1240)
    # [N, e] counts: mixed; random; a rank that sends nothing; nothing at all (R = 0); long enough that an unstable
    # sort reorders rows of one expert; one expert per rank (arrival order is already expert-major)
    tables = [torch.tensor([[1, 2, 1], [2, 0, 3]]), torch.randint(0, 6, (4, 2), generator=g),
              torch.tensor([[0, 0], [1, 3], [2, 1]]), torch.zeros(2, 2, dtype=torch.long),
              torch.randint(20, 80, (4, 4), generator=g), torch.tensor([[3], [2]])]
    return [Case((c,), expert_major_order(c)) for c in tables]


# ------------------------------------------------------------------------------------------------ combine
def _combine_cases():
    cases = []
    # (T, K, num_tokens, dtype): K > 1 first; a token with no rows (num_tokens > T); bfloat16; a rank with no rows
    for seed, (T, K, n, dtype) in enumerate([(6, 2, 6, torch.float32), (8, 1, 8, torch.float32),
                                             (5, 3, 7, torch.float32), (9, 2, 9, torch.bfloat16),
                                             (0, 2, 0, torch.float32)]):
        token, _, _ = dispatch(_routing(1250 + seed, T, K, 6), 6)  # rows in expert order, as they come back
        y = torch.randn(T * K, 4, generator=_g(1260 + seed)).to(dtype)
        cases.append(Case((y, token, n), combine(y, token, n)))
    return cases


# ------------------------------------------------------------------------------------------------ bytes per rank
def _bytes_cases():
    toy, scout, maverick = (Llama4Config.preset(n) for n in ("toy", "scout", "maverick"))
    odd = toy.replace(intermediate_size=37)  # 3·D·F·0.3 bytes is not a whole number
    cases = []
    # (config, N, expert bytes, other bytes): int4 experts with bf16 elsewhere first (every mistake changes it);
    # Maverick's dense layers; a fractional total that round() and int() disagree on; one rank (nothing split)
    for cfg, N, eb, ob in [(maverick, 8, 0.53125, 2), (scout, 16, 2, 2), (toy.replace(moe_layers=[1, 3]), 2, 4, 4),
                           (maverick, 8, 1, 2), (scout, 4, 0.53125, 2), (odd, 2, 0.3, 2), (toy, 1, 2, 2)]:
        cases.append(Case((cfg, N), rank_weight_bytes(cfg, N, eb, ob), dict(expert_bytes=eb, other_bytes=ob)))
    return cases


# ------------------------------------------------------------------------------------------------ mistakes
# Each wrong version below is what a learner commonly writes; the grader recognises it from the learner's output
# and says so. tests/mistakes/wrong_ch12.py holds independently written wrong learner files for each of them.
def _per_expert(case, got) -> bool:
    counts, N = case.args
    return _tensor(got) and counts.numel() != N and got.shape == counts.shape and torch.equal(got.long(), counts)


def _one_per_local_expert(case, got) -> bool:
    counts, N = case.args
    return _tensor(got) and counts.numel() // N != N and tuple(got.shape) == (counts.numel() // N,)


def _sent_rows(case):
    """(the rows σ · x in flat token order t·K + j, the stable expert-order slots) of a sort_by_expert case."""
    x, idx, scores, _ = case.args
    K = idx.shape[1]
    rows = x.repeat_interleave(K, dim=0) * scores.reshape(-1, 1)
    return rows, torch.argsort(idx.reshape(-1), stable=True)


def _unscaled(case, got) -> bool:
    return _triple(got) and _close(got[0], case.args[0][case.expected[1]])


def _score_by_token(case, got) -> bool:
    x, _, scores, _ = case.args
    token = case.expected[1]
    return _triple(got) and _close(got[0], x[token] * scores.reshape(-1, 1)[token])


def _scores_unsorted(case, got) -> bool:
    x, _, scores, _ = case.args
    return _triple(got) and _close(got[0], x[case.expected[1]] * scores.reshape(-1, 1))


def _rows_inverse(case, got) -> bool:
    rows, slot = _sent_rows(case)
    return _triple(got) and not torch.equal(slot, torch.argsort(slot)) and _close(got[0], rows[torch.argsort(slot)])


def _unstable_rows(case, got) -> bool:
    """token_N holds each expert's tokens, but not in token order within the expert."""
    token, counts = case.expected[1], case.expected[2]
    if not _triple(got) or got[1].shape != token.shape or torch.equal(got[1].long(), token):
        return False
    blocks = zip(got[1].long().split(counts.tolist()), token.split(counts.tolist()))
    return all(torch.equal(a.sort().values, b) for a, b in blocks)


def _token_is_slot_mod_k(case, got) -> bool:
    _, slot = _sent_rows(case)
    K = case.args[1].shape[1]
    return _triple(got) and K > 1 and torch.equal(got[1].long(), slot % K)


def _token_is_slot_mod_t(case, got) -> bool:
    _, slot = _sent_rows(case)
    T, K = case.args[1].shape
    return _triple(got) and K > 1 and torch.equal(got[1].long(), slot % T)


def _token_is_slot(case, got) -> bool:
    _, slot = _sent_rows(case)
    return _triple(got) and case.args[1].shape[1] > 1 and torch.equal(got[1].long(), slot)


def _labels(recv_counts_Ne):
    N, e = recv_counts_Ne.shape
    return torch.arange(e).repeat(N).repeat_interleave(recv_counts_Ne.reshape(-1))


def _sorted_labels(case, got) -> bool:
    lab = _labels(case.args[0])
    return _tensor(got) and lab.numel() > 1 and not torch.equal(lab.sort().values, case.expected) and \
        got.shape == lab.shape and torch.equal(got.long(), lab.sort().values)


def _arrival_order(case, got) -> bool:
    R = case.expected.numel()
    return _tensor(got) and not torch.equal(case.expected, torch.arange(R)) and got.shape == (R,) and \
        torch.equal(got.long(), torch.arange(R))


def _inverse_order(case, got) -> bool:
    inv = torch.argsort(case.expected)
    return _tensor(got) and not torch.equal(inv, case.expected) and got.shape == inv.shape and \
        torch.equal(got.long(), inv)


def _unstable_order(case, got) -> bool:
    lab = _labels(case.args[0])
    if not _tensor(got) or got.shape != lab.shape or got.is_floating_point() or torch.equal(got, case.expected):
        return False
    got = got.long()
    return torch.equal(got.sort().values, torch.arange(lab.numel())) and bool((lab[got].diff() >= 0).all())


def _overwritten(case, got) -> bool:
    """Every token's row is ONE of its rows' outputs, not their sum (out[token_N] = y), where a token has two or
    more rows."""
    y, token, n = case.args
    if not _tensor(got) or got.shape != case.expected.shape or token.numel() == 0:
        return False
    many = torch.bincount(token, minlength=n) > 1
    if not many.any():
        return False
    ok = torch.zeros(n, dtype=torch.bool)
    for i, t in enumerate(token.tolist()):
        ok[t] |= bool(torch.allclose(got[t].float(), y[i].float(), atol=1e-5, rtol=1e-4))
    return bool(ok[many].all())


def _mean(y_ND, token_N, num_tokens):
    total = combine(y_ND, token_N, num_tokens)
    return total / torch.bincount(token_N, minlength=num_tokens).clamp_min(1)[:, None].to(y_ND.dtype)


def _token_major(y_ND, token_N, num_tokens):
    return y_ND.reshape(num_tokens, -1, y_ND.shape[1]).sum(1)


def _too_few_rows(case, got) -> bool:
    _, token, n = case.args
    return _tensor(got) and token.numel() > 0 and got.dim() == 2 and got.shape[0] == int(token.max()) + 1 != n


def _other_dtype(case, got) -> bool:
    return _tensor(got) and got.is_floating_point() and got.dtype != case.args[0].dtype


def _bytes(split_shared=False, split_routed=True, split_all=False, layers=lambda c: len(c.moe_layers),
           shared_at_other=False, to_int=round):
    """The bytes one rank holds with one thing changed: the shared expert split, the routed experts not split,
    everything split, every layer counted as MoE, the shared expert at other_bytes, or truncated instead of rounded."""
    def wrong(config, world_size, expert_bytes=2.0, other_bytes=2.0):
        D, F = config.hidden_size, config.intermediate_size
        routed = layers(config) * config.num_local_experts * 3 * D * F
        shared = layers(config) * 3 * D * F
        other = config.num_parameters() - routed - shared
        if split_all:
            return to_int(((routed + shared) * expert_bytes + other * other_bytes) / world_size)
        routed = routed // world_size if split_routed else routed
        if split_shared:
            shared = shared // world_size
        if shared_at_other:
            return to_int(routed * expert_bytes + (shared + other) * other_bytes)
        return to_int((routed + shared) * expert_bytes + other * other_bytes)
    return wrong


_NOT_SCALED = ("the rows you send must already be σ · x: Llama 4 scales the expert's INPUT, so the score goes on "
               "the row before the exchange (scaling after the experts is Mixtral's way, and SwiGLU is not linear)")
_UNSTABLE = "rows of one expert are not in their original order: the sort was not stable; use argsort(..., stable=True)"

register(Exercise(
    "send_counts", 12, "send_counts", _send_cases,
    "rank s holds experts s·e … s·e + e − 1 (e = E // N): counts_E.view(N, E // N).sum(1) is one count per rank, "
    "a LongTensor [N]", exact=True,
    nudge="The counts are per expert, the exchange needs them per rank. Which experts does rank s hold, and what do "
          "you do with their counts?",
    mistakes=[
        Mistake("E / N is a float: the number of experts per rank is E // N (integer division), and view() needs "
                "ints", raises=r"(view|reshape)\(\): argument '(size|shape)'.*float|"
                               r"must be tuple of (Sym)?[Ii]nts.*float"),
        Mistake("counts are integers: keep them a LongTensor (no true division, no .float())",
                test=lambda case, got: _tensor(got) and got.is_floating_point()),
        Mistake("you returned the counts per EXPERT: the exchange needs one count per RANK, the sum over the E // N "
                "experts each rank holds", test=_per_expert),
        Mistake("you returned one entry per local expert (E // N of them), summed over the ranks: the sum runs "
                "over each rank's block, counts_E.view(N, E // N).sum(1) → [N]", test=_one_per_local_expert),
        Mistake("experts sit in contiguous blocks (rank s holds experts s·e … s·e + e − 1), not dealt round-robin "
                "(expert i on rank i mod N): counts_E.view(N, E // N).sum(1)",
                wrong=lambda c, n: c.view(-1, n).sum(0)),
        Mistake("those are offsets (a running sum): the exchange needs each rank's own count; "
                "all_to_all_single takes split SIZES", wrong=lambda c, n: c.view(n, -1).sum(1).cumsum(0)),
        Mistake("each rank receives the rows of ITS experts, not an equal share of the rows: sum each rank's block "
                "of counts", wrong=lambda c, n: torch.full((n,), int(c.sum()) // n, dtype=c.dtype)),
    ]))
register(Exercise(
    "sort_by_expert", 12, "sort_by_expert", _sort_cases,
    "flat = idx_TK.reshape(-1); slot = torch.argsort(flat, stable=True); token = slot // K; "
    "counts = torch.bincount(flat, minlength=E); x_ND = x_TD[token] * scores_TK.reshape(-1, 1)[slot]",
    nudge="Give each (token, expert) pair a row, then sort the rows by expert. Which sort keeps the token order "
          "within an expert, which score does the n-th sorted row carry, and how does an unused expert get a 0?",
    mistakes=[
        Mistake("your counts leave out experts nobody chose: torch.bincount(flat, minlength=E) gives each of the "
                "E experts its count, 0 included",
                test=lambda case, got: _triple(got) and got[2].dim() == 1 and got[2].numel() < case.args[3]),
        Mistake(_NOT_SCALED, test=_unscaled),
        Mistake("each sorted row took the score of scores.flatten()[token]: the n-th row's score is "
                "scores.flatten()[slot[n]] (a token has K different scores)", test=_score_by_token),
        Mistake("the scores were not put in expert order: the n-th sorted row's score is scores.flatten()[slot[n]], "
                "not scores.flatten()[n]", test=_scores_unsorted),
        Mistake("you wrote the rows to out[slot] = rows: that applies the INVERSE permutation; the send buffer "
                "gathers them, rows[slot] (row n of the buffer is flat row slot[n])", test=_rows_inverse),
        Mistake(_UNSTABLE, test=_unstable_rows),
        Mistake("token_N is the token of each row: the flat slot t·K + j belongs to token t = slot // K "
                "(you used slot % K)", test=_token_is_slot_mod_k),
        Mistake("the flat rows run token by token (row t·K + j is token t's j-th choice): the token of a slot is "
                "slot // K; slot % T reads idx_TK column by column", test=_token_is_slot_mod_t),
        Mistake("token_N is the token of each row, slot // K, not the flat slot itself", test=_token_is_slot),
    ]))
register(Exercise(
    "expert_major_order", 12, "expert_major_order", _order_cases,
    "label each received row with its expert: torch.arange(e).repeat(N).repeat_interleave(recv_counts.reshape(-1)); "
    "order = torch.argsort(labels, stable=True)", exact=True,
    nudge="Write down, for each received row, which of your experts it is for (the blocks arrive source by source, "
          "expert by expert). Then which sort groups the rows by that label and keeps the source order?",
    mistakes=[
        Mistake("you returned the sorted expert labels (the values): the order is the INDICES of the sort, "
                "torch.argsort(labels, stable=True)", test=_sorted_labels),
        Mistake("your order is the arrival order (grouped by source rank, source-major): the experts want the rows "
                "grouped by EXPERT; label each row with its expert, arange(e).repeat(N), not its source",
                test=_arrival_order),
        Mistake("that is the inverse permutation (where each received row goes): order_R[i] must be the received "
                "row that goes i-th, so that rows[order_R] is expert-major; argsort of yours gives it",
                test=_inverse_order),
        Mistake(_UNSTABLE + " (rows of one expert keep their source order)", test=_unstable_order),
    ]))
register(Exercise(
    "combine", 12, "combine", _combine_cases,
    "out = y_ND.new_zeros(num_tokens, D).index_add_(0, token_N, y_ND): each row adds into its token's row",
    nudge="Each token has K rows, in expert order, not token order. Where does row n go, and what must happen when "
          "two rows land on the same token?",
    mistakes=[
        Mistake("token_N.max() fails when a rank has no rows (token_N is empty): size the output and any loop by "
                "num_tokens, not token_N.max() + 1",
                raises=r"operation does not have an identity|Expected reduction dim|max\(\): Expected"),
        Mistake("the output needs num_tokens rows: a token with no rows still gets a zero row "
                "(new_zeros(num_tokens, D), not token_N.max() + 1)", test=_too_few_rows),
        Mistake("return the output in y's dtype: start from y_ND.new_zeros(...) (a float32 buffer with bfloat16 "
                "rows fails or changes the dtype)", raises=r"same (scalar type|dtype)|expected .* to have the same"),
        Mistake("return the output in y's dtype: start from y_ND.new_zeros(...)", test=_other_dtype),
        Mistake("you assigned the rows (out[token_N] = y): a token with K rows gets only one of them; add them "
                "with a scatter-add, out.index_add_(0, token_N, y)", test=_overwritten),
        Mistake("a token's output is the SUM of its K rows, not their mean", wrong=_mean),
        Mistake("the rows come back in expert order, not token order (row t·K + j is not token t's j-th): put each "
                "row in its place with token_N, out.index_add_(0, token_N, y)", wrong=_token_major),
    ]))
register(Exercise(
    "rank_weight_bytes", 12, "rank_weight_bytes", _bytes_cases,
    "routed = len(moe_layers) · E · 3·D·F, shared = len(moe_layers) · 3·D·F, other = num_parameters() − routed − "
    "shared; bytes = round((routed // N + shared) · expert_bytes + other · other_bytes)", exact=True,
    nudge="Sort every weight into three piles: routed experts, shared experts, the rest. Which pile is split over "
          "the N ranks, and at which bytes per weight does each pile count?",
    mistakes=[
        Mistake("the shared expert is replicated (every token uses it, on every rank): only the routed experts are "
                "split over the N ranks", wrong=_bytes(split_shared=True)),
        Mistake("the routed experts are split: each rank holds E / N of them, not all E",
                wrong=_bytes(split_routed=False)),
        Mistake("only the routed experts are split over the ranks; attention, embeddings, norms, the router and the "
                "shared expert are replicated, whole on every rank", wrong=_bytes(split_all=True)),
        Mistake("only the MoE layers (config.moe_layers) hold experts: Maverick's dense layers have none",
                wrong=_bytes(layers=lambda c: c.num_hidden_layers)),
        Mistake("the shared expert is an expert: its weights cost expert_bytes, like the routed ones",
                wrong=_bytes(shared_at_other=True)),
        Mistake("round the total with round(): int() truncates, so a total such as 712908.8 bytes comes out one "
                "short", wrong=_bytes(to_int=int)),
    ]))
