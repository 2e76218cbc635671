"""Llama 4's chat format, as text and as course-tokenizer ids.

A conversation is one token stream. It opens with <|begin_of_text|>; each message is a header naming the speaker,
a blank line, the content and an end-of-turn token:

    <|begin_of_text|><|header_start|>user<|header_end|>\\n\\nWhat is 12 + 7?<|eot|>
    <|header_start|>assistant<|header_end|>\\n\\nThe answer is 19.<|eot|>

(no newline between messages: it is drawn here for reading). To ask the model for a reply, the text ends with an
open assistant header (the "generation prompt") and the model writes the content and, when it is done, <|eot|>.
Roles: system, user, assistant, and `ipython` for tool results (a message with role "tool" is written as ipython,
as Meta's template does). The template writes <|begin_of_text|> itself: do not let a tokenizer add another one.

For fine-tuning, `encode_chat` also returns which tokens the assistant wrote (its content and its <|eot|>): the
only tokens the SFT loss is computed on. Everything else (the prompt, the headers) gets the label -100.
"""

from __future__ import annotations

import torch

from .course.tokenizer import BPETokenizer

BEGIN, HEADER_START, HEADER_END, EOT = "<|begin_of_text|>", "<|header_start|>", "<|header_end|>", "<|eot|>"
ROLES = ("system", "user", "assistant", "ipython")
IGNORE_INDEX = -100  # label of tokens the loss skips (F.cross_entropy's default ignore_index)


def _check(messages) -> list[tuple[str, str]]:
    """(role, content) pairs of a valid conversation; a clear error otherwise."""
    if not isinstance(messages, (list, tuple)):
        raise ValueError(f"messages must be a list of {{'role': ..., 'content': ...}} dicts, got {type(messages).__name__}")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        role = "ipython" if m["role"] == "tool" else m["role"]
        if role not in ROLES:
            raise ValueError(f"message {i} has role {m['role']!r}; roles are {', '.join(ROLES)} (or 'tool')")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string, got {type(m['content']).__name__}")
        out.append((role, m["content"]))
    return out


def header(role: str) -> str:
    """<|header_start|>role<|header_end|> and the blank line that follows every header."""
    return f"{HEADER_START}{role}{HEADER_END}\n\n"


def format_chat(messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The conversation as Llama 4 chat text. With add_generation_prompt (the default) it ends with an open
    assistant header, ready for the model to write the next reply."""
    text = BEGIN + "".join(header(role) + content + EOT for role, content in _check(messages))
    return text + (header("assistant") if add_generation_prompt else "")


def encode_prompt(tok: BPETokenizer, messages: list[dict]) -> list[int]:
    """Token ids of the conversation followed by the open assistant header (what generation starts from); message
    text is plain text, as in `encode_chat`."""
    return encode_chat(tok, messages)[0] + tok.encode(header("assistant"))


def encode_chat(tok: BPETokenizer, messages: list[dict]) -> tuple[list[int], list[bool]]:
    """(ids, is_assistant) of a whole conversation: is_assistant[i] is True for the tokens an assistant wrote (the
    content of each assistant message and its <|eot|>), False for headers, other roles and <|begin_of_text|>.
    Each piece is encoded on its own, so the boundary between prompt and reply never depends on BPE merges. Message
    text is encoded with special tokens disabled: `<|eot|>` typed in a message is those seven characters, never the
    token, so no message can end its turn or open another one. `tok`: the course BPETokenizer or a checkpoint's
    HFTokenizer (same interface)."""
    ids, mask = [tok.special_ids[BEGIN]], [False]
    for role, content in _check(messages):
        head = tok.encode(header(role))
        body = tok.encode(content, allow_special=False) + [tok.special_ids[EOT]]
        ids += head + body
        mask += [False] * len(head) + [role == "assistant"] * len(body)
    return ids, mask


def sft_example(tok: BPETokenizer, messages: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids [T-1], labels [T-1]) for next-token training: labels[t] is the token at t+1 when an assistant
    wrote it, else -100, so the loss only teaches the replies."""
    if not any(m.get("role") == "assistant" for m in messages if isinstance(m, dict)):
        raise ValueError("an SFT example needs at least one assistant message (there is nothing to learn otherwise)")
    ids, mask = encode_chat(tok, messages)
    ids_T, mask_T = torch.tensor(ids), torch.tensor(mask)
    labels_T = torch.where(mask_T, ids_T, torch.full_like(ids_T, IGNORE_INDEX))
    return ids_T[:-1], labels_T[1:]  # shift: position t predicts token t+1


def stop_ids(tok: BPETokenizer) -> list[int]:
    """Tokens that end a reply: <|eot|> (end of turn), <|eom|> (end of message) and <|end_of_text|>."""
    return [tok.special_ids[s] for s in (EOT, "<|eom|>", "<|end_of_text|>")]


def decode_reply(tok: BPETokenizer, ids) -> tuple[str, bool]:
    """(text, finished) of generated reply ids: the text up to the first stop token, and whether there was one."""
    stops = set(stop_ids(tok))
    ids = [int(i) for i in ids]
    for n, i in enumerate(ids):
        if i in stops:
            return tok.decode(ids[:n]), True
    return tok.decode(ids), False
