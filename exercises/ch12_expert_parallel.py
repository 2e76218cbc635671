# GENERATED from solutions/ch12_expert_parallel.py by scripts/make_exercises.py (stub 19c17ecaf82e): this is your file, fill in the stubs.
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
    # YOUR CODE HERE
    raise NotImplementedError()


def sort_by_expert(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor, num_experts: int):
    """The permutation before the exchange: the send buffer. Each token t has K rows, one per chosen expert
    idx_TK[t, j], and each row is the token's vector scaled by its score (Llama 4 scales the expert's input):
    score[t, j] · x[t]. Order the N_rows = T·K rows by expert, keeping token order within an expert (a stable
    sort of the flat idx_TK). Since experts sit in blocks per rank, rows for rank 0 come first, then rank 1, …

    Returns (x_ND, token_N, counts_E): the scaled rows in expert order [N_rows, D], the token each row came from
    [N_rows], and how many rows each expert gets [E] (zeros included)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def expert_major_order(recv_counts_Ne: torch.Tensor) -> torch.Tensor:
    """The permutation after the exchange. This rank received its rows grouped by source rank, and within each
    source by expert: first recv_counts_Ne[0, 0] rows from rank 0 for my expert 0, then recv_counts_Ne[0, 1] from
    rank 0 for my expert 1, …, then rank 1's rows, and so on. My experts want them grouped by expert (all of
    expert 0's rows, then expert 1's …), keeping source order within an expert.

    Returns order_R [R]: order_R[i] = the index of the received row that goes i-th (so rows[order_R] is grouped by
    expert)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def combine(y_ND: torch.Tensor, token_N: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The combine after the exchange. The expert outputs came back in the order the rows left (the reverse
    exchange undoes the forward one): y_ND[n] is the output for the row of token token_N[n]. Each token's output is
    the sum of its K rows' outputs: out[t] = Σ_{n: token_N[n] = t} y_ND[n]. Returns [num_tokens, D] in y's dtype
    (num_tokens may be 0: a rank can have no rows at all)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def rank_weight_bytes(config, world_size: int, expert_bytes: float = 2.0, other_bytes: float = 2.0) -> int:
    """Bytes of weights one rank holds under expert parallelism. Every MoE layer (`config.moe_layers`) has
    `config.num_local_experts` routed experts and one shared expert, each three D × F matrices (D = hidden_size,
    F = intermediate_size). A rank holds E / N of the routed experts; the shared expert and every other weight
    (attention, router, norms, dense layers, embeddings, lm_head: `config.num_parameters()` counts everything) are
    replicated: every rank holds them whole. Routed and shared expert weights cost `expert_bytes` each (2 for bf16,
    0.53125 for int4 with its scales), every other weight `other_bytes`. Return an int (round the total)."""
    # YOUR CODE HERE
    raise NotImplementedError()
