"""Extend it, chapter 05: how temperature and top-p change repetition and diversity in the toy mini-Scout's text.

For each (temperature, top-p) setting, N continuations of each of three prompts (docs, math, code), sampled with
`generate` from one seeded generator, and three numbers averaged over them:

    repeated 4-grams   1 - distinct 4-grams / all 4-grams of a continuation (token ids): 0 = never repeats itself
    distinct           distinct continuations / N (greedy is always 1 / N: the same text every time)
    log p per token    the mean log-probability of the continuation's tokens under the model itself (at τ = 1):
                       how likely the model finds what it wrote; it falls as sampling strays into the tail

    python solutions/extend/ch05_sampling_repetition.py      # MINILLAMA4_PROFILE=ci for a short run
"""

import torch

from minillama4.course import zoo
from minillama4.course.data import course_tokenizer
from minillama4.course.profile import by_profile

PROMPTS = {"docs": 'The "for" statement', "math": "417 + 38 =", "code": "def get_total("}
SETTINGS = [(0.0, 1.0), (0.3, 1.0), (0.6, 0.9), (0.8, 0.9), (1.0, 0.9), (1.0, 1.0), (1.5, 0.9), (1.5, 1.0)]


def repeated_ngrams(ids: list[int], n: int = 4) -> float:
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def mean_logprob(model, ids_BT: torch.Tensor, n_prompt: int) -> torch.Tensor:
    """[B] mean log p(token | everything before it) over the continuation, under the model at τ = 1."""
    logp_BTV = model(ids_BT).float().log_softmax(-1)
    logp_BT = logp_BTV[:, n_prompt - 1:-1].gather(-1, ids_BT[:, n_prompt:, None])[..., 0]
    return logp_BT.mean(-1)


def main() -> None:
    model, history = zoo.pretrained("mini-scout", verbose=False)
    tok = course_tokenizer()
    bos = tok.special_ids["<|begin_of_text|>"]
    n, new = by_profile(ci=4, laptop=8), by_profile(ci=48, laptop=64)
    print(f"mini-scout: {history.steps[-1] + 1} steps, validation loss {history.val_loss[-1]:.3f}")
    print(f"{n} continuations of {new} tokens per prompt and setting, averaged over {len(PROMPTS)} prompts")
    print(f"{'temperature':>11s} {'top-p':>6s} {'repeated 4-grams':>17s} {'distinct':>9s} {'log p per token':>16s}")
    g = torch.Generator().manual_seed(0)
    rows = []
    for temperature, top_p in SETTINGS:
        rep = dist = logp = 0.0
        for prompt in PROMPTS.values():
            ids = torch.tensor([[bos] + tok.encode(prompt)] * n)                  # the prompt n times: [n, T]
            out = model.generate(ids, max_new_tokens=new, temperature=temperature, top_p=top_p, generator=g)
            conts = [row[ids.shape[1]:] for row in out.tolist()]
            rep += sum(repeated_ngrams(c) for c in conts) / n
            dist += len({tuple(c) for c in conts}) / n
            logp += mean_logprob(model, out, ids.shape[1]).mean().item()
        k = len(PROMPTS)
        rows.append((temperature, top_p, rep / k, dist / k, logp / k))
        print(f"{temperature:11.1f} {top_p:6.2f} {rep / k:17.2f} {dist / k:9.2f} {logp / k:16.2f}")
    greedy, hottest = rows[0], rows[-1]
    print(f"greedy repeats {greedy[2]:.0%} of its 4-grams; τ = {hottest[0]} without top-p repeats {hottest[2]:.0%} but "
          f"its tokens are {greedy[4] - hottest[4]:.1f} nats less likely to the model than greedy's")
    for temperature, top_p, _, _, _ in rows:
        if temperature in (0.6, 1.5):
            ids = torch.tensor([[bos] + tok.encode(PROMPTS["docs"])])
            out = model.generate(ids, max_new_tokens=new, temperature=temperature, top_p=top_p,
                                 generator=torch.Generator().manual_seed(1))
            print(f"── τ = {temperature}, top-p {top_p}:\n{tok.decode(out[0, 1:].tolist())}")


if __name__ == "__main__":
    main()
