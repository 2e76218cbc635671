# GENERATED from solutions/ch08_sft.py by scripts/make_exercises.py (stub 57135410c7e1): this is your file, fill in the stubs.
"""Chapter 08 exercises: the chat template, labels on the assistant's tokens only, the masked loss, judge pruning.

Fill in each function between the markers, save, and check it in the notebook with `check("name")` (it grades this
file as it is on disk), or grade the whole chapter with `minillama4 grade 8`. Shapes: B batch, T tokens, V vocabulary.
"""

import torch
import torch.nn.functional as F


def format_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """Llama 4's chat text for a list of {"role": ..., "content": ...} messages:

        <|begin_of_text|>  then for each message  <|header_start|>ROLE<|header_end|>\\n\\nCONTENT<|eot|>

    and, with add_generation_prompt, an open assistant header at the end, `<|header_start|>assistant<|header_end|>\\n\\n`,
    for the model to continue. A message whose role is "tool" is written with the role "ipython". Content is written
    exactly as given (no stripping)."""
    # YOUR CODE HERE
    raise NotImplementedError()


def assistant_labels(ids_T: torch.Tensor, is_assistant_T: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for next-token training on one conversation, ids_T [T] (int64) with is_assistant_T [T]
    (bool: True on the tokens the assistant wrote). Position t of the inputs predicts token t+1, and only tokens the
    assistant wrote are learned: return (inputs [T-1] = ids[:-1], labels [T-1]) where labels[t] = ids[t+1] if the
    assistant wrote token t+1, else -100."""
    # YOUR CODE HERE
    raise NotImplementedError()


def masked_cross_entropy(logits_BTV: torch.Tensor, labels_BT: torch.Tensor) -> torch.Tensor:
    """The SFT loss: the mean over the positions whose label is not -100 of −log softmax(logits)[label], computed
    in float32. Returns a scalar. (Mean over counted positions of the whole batch, not per row.)"""
    # YOUR CODE HERE
    raise NotImplementedError()


def prune_easy(scores_N: torch.Tensor, keep_fraction: float) -> list[int]:
    """Judge pruning: scores_N [N] says how hard each example is (the judge's loss on its answer; higher = harder).
    Keep the round(keep_fraction · N) hardest (at least 1) and return their indices in increasing order (the
    examples keep their original order). Scores are distinct."""
    # YOUR CODE HERE
    raise NotImplementedError()
