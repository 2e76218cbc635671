"""Mixture of experts with a shared expert, dispatched sparsely.

    out(x) = shared(x) + Σ_{e ∈ top-k(x)} expert_e(σ_e(x) · x)

Every token goes through the shared expert. Each token also goes through its k routed experts, with the router
score multiplied into the expert's *input*. The reference implementation in transformers runs every expert on every
token (with zero input for the tokens not routed there); here each expert only sees its own tokens:

1. flatten the (token, slot) assignments and sort them by expert, so each expert's tokens are contiguous
   (`dispatch`), and gather those tokens scaled by their scores (`sort_by_expert`);
2. run one matmul pair per expert on its slice (`ExpertBank.forward_sorted`: a loop over experts, or one
   grouped-matmul kernel where torch has it);
3. add each result back to its token with `index_add` (the scatter-add `combine`), then add the shared expert.

A decode step has only a few (token, expert) pairs. There the bank picks each pair's expert weights by index on the
device instead (`gathered_experts`): no sort, no counts read back to the host, shapes fixed by the batch alone, so
the whole step can be compiled and replayed as a CUDA graph. Long prompts keep the sorted path.
"""

import torch
from torch import nn

from .ffn import ExpertBank, SwiGLU
from .router import Router, RouterOutput


def dispatch(idx_TK: torch.Tensor, num_experts: int):
    """Sort the T·k (token, slot) assignments by expert.
    Returns (token_N, slot_N, counts_E): for the n-th assignment in expert order its token index and its flat
    position in idx_TK, and how many assignments each expert received."""
    flat_N = idx_TK.reshape(-1)  # expert of each assignment, N = T·k
    slot_N = torch.argsort(flat_N, stable=True)  # assignments grouped by expert
    token_N = slot_N // idx_TK.shape[1]  # which token each assignment came from
    # counts by scatter-add, not bincount: on CUDA bincount reads the largest index back to size its output, a
    # host-device sync in every MoE layer
    counts_E = flat_N.new_zeros(num_experts).scatter_add_(0, flat_N, torch.ones_like(flat_N))
    return token_N, slot_N, counts_E


def sort_by_expert(x_TD: torch.Tensor, idx_TK: torch.Tensor, scores_TK: torch.Tensor, num_experts: int):
    """The rows the experts will see, grouped by expert: x_ND[n] = σ · x of the n-th assignment in expert order
    (the score scales the expert's input). Returns (x_ND, token_N, counts_E), token_N and counts_E as in `dispatch`."""
    token_N, slot_N, counts_E = dispatch(idx_TK, num_experts)
    x_ND = x_TD.index_select(0, token_N) * scores_TK.reshape(-1, 1).index_select(0, slot_N)  # σ · x, by expert
    return x_ND, token_N, counts_E


def combine(y_ND: torch.Tensor, token_N: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """The scatter-add: out[t] = Σ over the rows n of token t (token_N[n] = t) of y_ND[n]. → [num_tokens, D]"""
    return y_ND.new_zeros(num_tokens, y_ND.shape[1]).index_add_(0, token_N, y_ND)


def routed_experts(experts: ExpertBank, x_TD: torch.Tensor, routing: RouterOutput) -> torch.Tensor:
    """Σ_e expert_e(σ_e · x) over each token's chosen experts, computing only the chosen (token, expert) pairs.
    `experts` is anything with `num_experts` and `forward_sorted(x_ND, counts_E)`: a bank on this process, or
    experts spread over several processes (`parallel.py`)."""
    x_ND, token_N, counts_E = sort_by_expert(x_TD, routing.indices, routing.scores, experts.num_experts)
    y_ND = experts.forward_sorted(x_ND, counts_E)  # each expert on its own contiguous rows
    return combine(y_ND, token_N, x_TD.shape[0])  # scatter-add back to the tokens


def gathered_experts(experts: ExpertBank, x_TD: torch.Tensor, routing: RouterOutput) -> torch.Tensor:
    """The same sum as `routed_experts`, for a few tokens: pair n = (token n // k, slot n % k) goes through expert
    indices[t, slot], whose weights the bank picks by index (`forward_gathered`). Nothing waits for the host."""
    T, k = routing.indices.shape
    x_ND = (x_TD[:, None, :] * routing.scores[..., None]).reshape(T * k, -1)  # σ · x for every (token, slot)
    y_ND = experts.forward_gathered(x_ND, routing.indices.reshape(-1))
    return y_ND.view(T, k, -1).sum(1)  # Σ over each token's k experts


class MoE(nn.Module):
    """Router + E routed experts + one always-on shared expert (a Llama 4 MoE feed-forward block)."""

    def __init__(self, dim: int, hidden: int, num_experts: int, top_k: int):
        super().__init__()
        self.router = Router(dim, num_experts, top_k)
        self.experts = ExpertBank(num_experts, dim, hidden)
        self.shared_expert = SwiGLU(dim, hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, RouterOutput]:
        x_TD = x.reshape(-1, x.shape[-1])  # routing is per token: fold batch and time
        routing = self.router(x_TD)
        few = x_TD.shape[0] * self.router.top_k <= getattr(self.experts, "gather_rows", 0)  # a decode step
        shared_TD = self.shared_expert(x_TD)
        routed_TD = (gathered_experts if few else routed_experts)(self.experts, x_TD, routing)
        # routed sum first, then + shared: the reference's order, so even bfloat16 results are the same bits
        out_TD = shared_TD + routed_TD
        return out_TD.view_as(x), routing


def moe_dense_reference(moe: MoE, x_TD: torch.Tensor) -> torch.Tensor:
    """The same MoE computed densely, as transformers does: every expert on every token, with score 0 for the
    experts a token was not routed to. For tests and for the chapter's speed comparison."""
    routing = moe.router(x_TD)
    E = moe.experts.num_experts
    score_TE = torch.zeros(x_TD.shape[0], E, dtype=x_TD.dtype, device=x_TD.device)
    score_TE.scatter_(1, routing.indices, routing.scores)
    x_ETD = score_TE.t()[:, :, None] * x_TD[None]  # expert e's input: σ_e · x (0 where not routed)
    return moe.shared_expert(x_TD) + moe.experts(x_ETD).sum(0)
