"""Chapter 12 exercises: the pieces of expert parallelism that need no communication: how many rows go to each
rank, the order of the rows before and after the exchange, the combine when they come back, and what one rank holds.

Fill in each function between the markers. Shapes: T tokens on this rank, D model width, E experts in all, N ranks,
e = E / N experts per rank (rank r holds experts r·e … r·e + e - 1), K experts per token (top-k), N_rows = T·K
(token, expert) rows, R rows received by this rank.
"""

import torch


def send_counts(counts_E: torch.Tensor, world_size: int) -> torch.Tensor:
    """How many rows this rank sends to each rank. counts_E[e] is the number of this rank's rows routed to expert e
    (all E experts); experts live in contiguous blocks of e = E / N, rank s holding the s-th block. Returns a
    LongTensor [N]: entry s = the rows for rank s's experts (its own entry included: those rows stay here)."""
    ### BEGIN SOLUTION
    return counts_E.view(world_size, -1).sum(1)  # row s of the [N, e] view = rank s's block of experts
    ### END SOLUTION


def sort_by_expert(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor, num_experts: int):
    """The permutation before the exchange: the send buffer. Each token t has K rows, one per chosen expert
    idx_TK[t, j], and each row is the token's vector scaled by its score (Llama 4 scales the expert's input):
    score[t, j] · x[t]. Order the N_rows = T·K rows by expert, keeping token order within an expert (a stable
    sort of the flat idx_TK). Since experts sit in blocks per rank, rows for rank 0 come first, then rank 1, …

    Returns (x_ND, token_N, counts_E): the scaled rows in expert order [N_rows, D], the token each row came from
    [N_rows], and how many rows each expert gets [E] (zeros included)."""
    ### BEGIN SOLUTION
    flat_N = idx_TK.reshape(-1)  # expert of row t·K + j
    slot_N = torch.argsort(flat_N, stable=True)  # the rows in expert order, token order kept within an expert
    token_N = slot_N // idx_TK.shape[1]  # row t·K + j came from token t
    counts_E = torch.bincount(flat_N, minlength=num_experts)
    x_ND = x_TD[token_N] * scores_TK.reshape(-1, 1)[slot_N]  # σ · x, each row with its own score
    return x_ND, token_N, counts_E
    ### END SOLUTION


def expert_major_order(recv_counts_Ne: torch.Tensor) -> torch.Tensor:
    """The permutation after the exchange. This rank received its rows grouped by source rank, and within each
    source by expert: first recv_counts_Ne[0, 0] rows from rank 0 for my expert 0, then recv_counts_Ne[0, 1] from
    rank 0 for my expert 1, …, then rank 1's rows, and so on. My experts want them grouped by expert (all of
    expert 0's rows, then expert 1's …), keeping source order within an expert.

    Returns order_R [R]: order_R[i] = the index of the received row that goes i-th (so rows[order_R] is grouped by
    expert)."""
    ### BEGIN SOLUTION
    N, e = recv_counts_Ne.shape
    expert_R = torch.arange(e).repeat(N).repeat_interleave(recv_counts_Ne.reshape(-1))  # each row's expert
    return torch.argsort(expert_R, stable=True)  # by expert; ties keep arrival order, i.e. source order
    ### END SOLUTION


def combine(y_ND: torch.Tensor, token_N: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The combine after the exchange. The expert outputs came back in the order the rows left (the reverse
    exchange undoes the forward one): y_ND[n] is the output for the row of token token_N[n]. Each token's output is
    the sum of its K rows' outputs: out[t] = Σ_{n: token_N[n] = t} y_ND[n]. Returns [num_tokens, D] in y's dtype
    (num_tokens may be 0: a rank can have no rows at all)."""
    ### BEGIN SOLUTION
    return y_ND.new_zeros(num_tokens, y_ND.shape[1]).index_add_(0, token_N, y_ND)  # the K rows of a token add up
    ### END SOLUTION


def rank_weight_bytes(config, world_size: int, expert_bytes: float = 2.0, other_bytes: float = 2.0) -> int:
    """Bytes of weights one rank holds under expert parallelism. Every MoE layer (`config.moe_layers`) has
    `config.num_local_experts` routed experts and one shared expert, each three D × F matrices (D = hidden_size,
    F = intermediate_size). A rank holds E / N of the routed experts; the shared expert and every other weight
    (attention, router, norms, dense layers, embeddings, lm_head: `config.num_parameters()` counts everything) are
    replicated: every rank holds them whole. Routed and shared expert weights cost `expert_bytes` each (2 for bf16,
    0.53125 for int4 with its scales), every other weight `other_bytes`. Return an int (round the total)."""
    ### BEGIN SOLUTION
    D, F = config.hidden_size, config.intermediate_size
    n_moe = len(config.moe_layers)  # Maverick: every other layer
    routed = n_moe * config.num_local_experts * 3 * D * F
    shared = n_moe * 3 * D * F
    other = config.num_parameters() - routed - shared
    return round((routed // world_size + shared) * expert_bytes + other * other_bytes)
    ### END SOLUTION
