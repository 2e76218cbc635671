"""The `minillama4` command (also `python -m minillama4`).

    minillama4 info --preset scout          layer plan, parameter counts, KV-cache cost of a config
    minillama4 info CHECKPOINT_DIR          the same for a Hugging Face checkpoint directory
    minillama4 generate CHECKPOINT_DIR --ids 1 5 9 --max-new-tokens 20    greedy (or sampled) continuation of token ids
    minillama4 generate CHECKPOINT_DIR --prompt "Once upon"     the same for text (the checkpoint's tokenizer.json)
    minillama4 chat --checkpoint CHECKPOINT_DIR [--quantize int4]   chat, streaming the replies
    minillama4 generate|chat … --compile    the decode step compiled whole (a CUDA graph on a GPU)
    minillama4 info --preset maverick --expert-parallel 8 [--quantize int4]   per-rank memory of N-way expert parallel
    torchrun --nproc-per-node N -m minillama4 generate|chat …   the same, the experts split over N processes
    minillama4 pretrain --steps 200 --out runs/one     pretrain the toy model (under torchrun: data + expert parallel)
    minillama4 posttrain --profile ci --out runs/ci    base → SFT → RL → DPO on the toy model; report.json + plots
    minillama4 site build OUT/             the course as a static website (OUT/index.html), built offline
    minillama4 zoo warm [--profile ci]      train every toy model the notebooks load, once (`zoo list`: which)

An expected error (a bad argument, a broken checkpoint, a missing file, no GPU, out of memory) is one line on stderr
and exit status 1; `--debug` shows its traceback instead.
"""

from __future__ import annotations

import argparse
import datetime
import numbers
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .cache import kv_cache_bytes
from .checkpoint import CheckpointError, from_pretrained, load_config
from .config import Llama4Config
from .decode import DecodeStep, check_compilable
from .sampling import check_sampling


def _layer_plan(cfg: Llama4Config) -> str:
    """One letter pair per layer: M/D = MoE/dense FFN, r/n = RoPE (chunked) / NoPE (global) attention."""
    return " ".join(("M" if cfg.is_moe_layer(i) else "D") + ("r" if cfg.uses_rope(i) else "n")
                    for i in range(cfg.num_hidden_layers))


def cmd_info(args) -> int:
    cfg = Llama4Config.preset(args.preset) if args.preset else load_config(args.checkpoint)
    total, active = cfg.num_parameters(), cfg.num_parameters(active=True)
    n_nope = sum(not cfg.uses_rope(i) for i in range(cfg.num_hidden_layers))
    kv_token = 2 * cfg.num_key_value_heads * cfg.head_dim * 2  # K and V, bf16
    print(f"layers            {cfg.num_hidden_layers}  (d_model {cfg.hidden_size}, {cfg.num_attention_heads} query / "
          f"{cfg.num_key_value_heads} kv heads of {cfg.head_dim})")
    print(f"experts           {cfg.num_local_experts} routed (top-{cfg.num_experts_per_tok}) + 1 shared, FFN {cfg.intermediate_size}; "
          f"MoE layers {len(cfg.moe_layers)}, dense layers {cfg.num_hidden_layers - len(cfg.moe_layers)}")
    print(f"attention         chunk {cfg.attention_chunk_size}, NoPE layers {n_nope}, QK-norm {cfg.use_qk_norm}, "
          f"temperature tuning {cfg.attn_temperature_tuning}, rope_scaling {cfg.rope_scaling}")
    print(f"layer plan        {_layer_plan(cfg)}   (M/D = MoE/dense, r/n = RoPE/NoPE)")
    print(f"parameters        {total:,} total, {active:,} active per token ({total / 1e9:.2f} B / {active / 1e9:.2f} B)")
    print(f"bf16 weights      {total * 2 / 1e9:.1f} GB")
    print(f"bf16 KV cache     {kv_token * cfg.num_hidden_layers / 1024:.0f} KiB/token if every layer kept all tokens; "
          f"chunk-aware: {kv_token * n_nope / 1024:.0f} KiB/token past the first chunk")
    if args.expert_parallel:
        _info_per_rank(cfg, args.expert_parallel, args.quantize)
    return 0


def _info_per_rank(cfg: Llama4Config, N: int, quantize: str | None) -> None:
    """Weights and KV cache on each of N ranks under expert parallelism (replicated attention)."""
    from .parallel import rank_weight_bytes
    from .quant import GROUP_SIZE, int4_bytes

    E = cfg.num_local_experts
    if N < 1 or E % N:
        raise ValueError(f"--expert-parallel {N}: the number of ranks must divide the {E} routed experts")
    expert_bytes, label = {None: (2, "bf16"), "fp8": (1, "fp8 experts (scales not counted), the rest bf16"),
                           "int4": (int4_bytes(1, GROUP_SIZE) / GROUP_SIZE,
                                    "int4 experts (4.25 bits with scales), the rest bf16")}[quantize]
    w = rank_weight_bytes(cfg, N, expert_bytes)
    kv = ", ".join(f"{kv_cache_bytes(cfg, n) / 2**30:.2f} GiB at {name}" for n, name in
                   ((8192, "8K"), (131072, "128K"), (1048576, "1M")) if n <= cfg.max_position_embeddings)
    print(f"expert parallel   {N} ranks, {E // N} routed experts per MoE layer on each; attention, router, shared "
          f"expert, dense layers and embeddings replicated")
    print(f"per-rank weights  {w / 1e9:.1f} GB ({w / 2**30:.1f} GiB), {label}; one process: "
          f"{rank_weight_bytes(cfg, 1, expert_bytes) / 1e9:.1f} GB")
    print(f"per-rank KV cache bf16, batch 1, chunk-aware: {kv} (every rank keeps all of it: attention is replicated)")


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _out():
    """Where this process prints: stdout, or nowhere on ranks other than 0 (they compute the same thing)."""
    return sys.stdout if not _distributed() or dist.get_rank() == 0 else open(os.devnull, "w")


def _load_model(args, device):
    """The checkpoint's model; with several processes (torchrun), this rank's share of the experts."""
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, None: None}[args.dtype]
    return from_pretrained(args.checkpoint, dtype=dtype, device=device, quantize=args.quantize,
                           expert_parallel=args.parallel if _distributed() else False)


def cmd_generate(args) -> int:
    device = _check_run_args(args)
    if args.prompt is not None:  # text in, text streamed out
        tok = _load_tokenizer(args.checkpoint)
        model = _load_model(args, device)
        _check_vocab(tok, model)
        gen = torch.Generator(device=device).manual_seed(args.seed)
        stop = set(tok.stop_ids) | set(_eos_list(model.config.eos_token_id))
        ids = stream_generate(model, tok.encode(_clean(args.prompt)), args.max_new_tokens, args.temperature, args.top_p,
                              stop, gen, args.compile)
        _print_stream(tok, ids, _out())
        return 0
    model = _load_model(args, device)
    ids = torch.tensor([args.ids], device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    out = model.generate(ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                         eos_token_id=model.config.eos_token_id, generator=gen, compile=args.compile)
    print(" ".join(str(t) for t in out[0, len(args.ids):].tolist()), file=_out())
    return 0


def _eos_list(eos) -> list[int]:
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def _check_run_args(args) -> torch.device:
    """Check the arguments of generate / chat before anything is loaded; returns the device."""
    check_sampling(args.temperature, args.top_p)
    if args.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    return _device(args.device)


def _device(name: str) -> torch.device:
    """torch.device(name), if this machine has it."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA GPU on this machine; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: torch sees no Apple GPU (MPS) on this machine; use --device cpu")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: choose cpu, cuda or mps")
    return device


def _clean(text: str) -> str:
    """Text from the command line or a terminal as valid Unicode: bytes that were not UTF-8 (which Python keeps as
    lone surrogates) become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _load_tokenizer(checkpoint):
    from .hf_tokenizer import load_tokenizer

    if not Path(checkpoint).is_dir():
        raise CheckpointError(f"{checkpoint}: no such checkpoint directory")
    try:
        return load_tokenizer(checkpoint)
    except FileNotFoundError as e:
        raise ValueError(str(e)) from None


def _check_vocab(tok, model) -> None:
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer.json has {tok.vocab_size} tokens but the model's vocab_size is "
                         f"{model.config.vocab_size}: they do not belong together")


def stream_generate(model, prompt_ids: list[int], max_new_tokens: int, temperature: float = 0.0, top_p: float = 1.0,
                    stop_ids=(), generator: torch.Generator | None = None, compile: bool = False):
    """An iterator over the new token ids, each yielded as soon as it is sampled (batch 1, KV cache); it stops after
    max_new_tokens or at a stop token (not yielded). compile=True: the decode steps run compiled (`decode.py`).
    Bad arguments, or a prompt plus max_new_tokens that overflow the context, are an error at the call, before any
    token."""
    n, limit = len(prompt_ids), model.config.max_position_embeddings
    if n == 0:
        raise ValueError("empty prompt: nothing to continue")
    if not isinstance(max_new_tokens, numbers.Integral) or isinstance(max_new_tokens, bool) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    check_sampling(temperature, top_p)
    if n + max_new_tokens > limit:
        raise ValueError(f"prompt of {n} tokens + {max_new_tokens} new tokens exceeds the model's context of {limit} "
                         "tokens; shorten the conversation or ask for fewer tokens")
    if compile:
        check_compilable(model, 1)
    return _stream(model, prompt_ids, model.new_cache(1, n + max_new_tokens), max_new_tokens, temperature, top_p,
                   stop_ids, generator, compile)


@torch.no_grad()
def _stream(model, prompt_ids, cache, max_new_tokens, temperature, top_p, stop_ids, generator, compile):
    from .sampling import sample_next_token

    step = torch.tensor([prompt_ids], device=model.device)
    decode = DecodeStep(model, cache) if compile else None
    for i in range(max_new_tokens):
        if decode is not None and i > 0:  # the prompt (prefill) runs eager, each later token through the compiled step
            logits_V = decode(step)[0]
        else:
            logits_V = model(step, cache=cache, last_only=True)[0, -1]
        nxt = int(sample_next_token(logits_V[None], temperature, top_p, generator)[0])
        if nxt in stop_ids:
            return
        yield nxt
        step = torch.tensor([[nxt]], device=model.device)


def _print_stream(tok, ids, out=None) -> list[int]:
    """Print the text of a stream of token ids as it grows (holding back an unfinished UTF-8 character)."""
    out = out or sys.stdout
    got, shown = [], ""
    for i in ids:
        got.append(i)
        text = tok.decode(got)
        if not text.endswith("\ufffd"):
            out.write(text[len(shown):])
            out.flush()
            shown = text
    out.write(tok.decode(got)[len(shown):] + "\n")
    out.flush()
    return got


def cmd_chat(args) -> int:
    """A conversation on the terminal: each line you type is a user message; the reply streams as it is written.
    A message the model cannot answer (longer than its context) is reported and left out; the chat goes on, and the
    exit status is 1 if that happened."""
    from .chat import encode_prompt

    device = _check_run_args(args)
    tok = _load_tokenizer(args.checkpoint)
    model = _load_model(args, device)
    _check_vocab(tok, model)
    if args.compile:  # before the first message: a model that cannot compile is not a per-message problem
        check_compilable(model, 1)
    stop = set(tok.stop_ids) | set(_eos_list(model.config.eos_token_id))
    gen = torch.Generator(device=device).manual_seed(args.seed)
    messages = [{"role": "system", "content": _clean(args.system)}] if args.system else []
    lines = [_clean(p) for p in args.prompt] if args.prompt else _read_lines()
    if _distributed():  # every rank must run the same conversation: rank 0 reads, the others hear it
        lines = _from_rank0(lines if dist.get_rank() == 0 else iter(()))
    out = _out()
    refused = 0
    for line in lines:
        if line.strip() in ("/exit", "/quit"):
            break
        if not line.strip():
            continue
        messages.append({"role": "user", "content": line})
        try:  # the message text is plain text: typing <|eot|> cannot end the turn (chat.encode_chat)
            ids = stream_generate(model, encode_prompt(tok, messages), args.max_new_tokens, args.temperature,
                                  args.top_p, stop, gen, args.compile)
        except ValueError as e:
            messages.pop()
            refused += 1
            print(f"minillama4: error: {e} (message skipped)", file=sys.stderr, flush=True)
            continue
        if not args.prompt and sys.stdout.isatty():
            print("assistant> ", end="", flush=True, file=out)
        reply = _print_stream(tok, ids, out)
        messages.append({"role": "assistant", "content": tok.decode(reply)})
    return 1 if refused else 0


def _read_lines():
    """Lines typed on stdin; bytes that are not UTF-8 become U+FFFD instead of ending the chat."""
    if hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="replace")
    while True:
        try:
            yield input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            return


def _from_rank0(lines):
    """Rank 0's lines, broadcast one at a time to every rank (None marks the end)."""
    lines = iter(lines)
    while True:
        item = [next(lines, None)]
        dist.broadcast_object_list(item, src=0)
        if item[0] is None:
            return
        yield item[0]


def cmd_grade(args) -> int:
    from .course.grading import CHAPTERS, grade

    if args.chapter is not None and args.chapter not in CHAPTERS:
        print(f"minillama4: no graded exercises for chapter {args.chapter}; chapters: "
              f"{', '.join(map(str, sorted(CHAPTERS)))}", file=sys.stderr)
        return 2
    results = grade(args.chapter, impl=args.impl)
    return 0 if results and all(r.passed for r in results) else 1


def cmd_pretrain(args) -> int:
    import json
    from pathlib import Path

    from .train.distributed import pretrain

    hist = pretrain(args.recipe, args.steps, args.profile, progress=not args.quiet)
    out = _out()
    print(f"final train loss {hist.train_loss[-1]:.4f}, validation loss {hist.val_loss[-1]:.4f} "
          f"({dist.get_world_size() if _distributed() else 1} process(es))", file=out)
    if out is sys.stdout:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "history.json").write_text(json.dumps(hist.to_dict()))
        print(f"wrote {args.out}/history.json", file=out)
    return 0


def cmd_posttrain(args) -> int:
    from .train.posttrain import run

    report = run(profile=args.profile, out=args.out, progress=not args.quiet)
    print(f"{'stage':<6} {'accuracy':>9} {'format':>7}   accuracy by level")
    for s in report["stages"]:
        levels = "  ".join(f"L{k} {v:.2f}" for k, v in s["accuracy_by_level"].items())
        print(f"{s['name']:<6} {s['accuracy']:>9.3f} {s['format_rate']:>7.3f}   {levels}")
    print(f"wrote {args.out}/report.json, curves.png, report_card.png")
    return 0


def cmd_site(args) -> int:
    from .course.site import build

    pages = build(args.out)
    print(f"wrote {len(pages)} pages; open {args.out}/index.html")
    return 0


def cmd_zoo(args) -> int:
    from .course.warm import artifacts, warm

    if args.action == "list":
        for a in artifacts(args.profile):
            print(a.name)
        return 0
    warm(args.profile, only=args.only, progress=not args.quiet, report=lambda line: print(line, flush=True),
         jobs=args.jobs)
    return 0


COMPILE_HELP = ("compile the decode step whole (torch.compile; replayed as a CUDA graph on a GPU): faster tokens "
                "after a one-time compile of a minute or more; one process only")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama4", description="Llama 4 from scratch: tools for the course package")
    p.add_argument("--debug", action="store_true", help="show an error's full traceback instead of one line")
    common = argparse.ArgumentParser(add_help=False)  # --debug also after the command (SUPPRESS: keeps the above)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", parents=[common],
                          help="layer plan, parameter counts and KV-cache cost of a preset or checkpoint")
    src = info.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="Hugging Face Llama 4 checkpoint directory")
    src.add_argument("--preset", choices=["toy", "scout", "maverick"])
    info.add_argument("--expert-parallel", type=int, default=None, metavar="N",
                      help="also print each rank's weights and KV cache with the experts split over N ranks")
    info.add_argument("--quantize", choices=["int4", "fp8"], default=None,
                      help="with --expert-parallel: expert weights in int4 (Meta's recipe) or fp8")
    info.set_defaults(fn=cmd_info)
    g = sub.add_parser("generate", parents=[common], help="continue a sequence of token ids with a checkpoint")
    g.add_argument("checkpoint")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument("--ids", type=int, nargs="+", help="prompt token ids")
    src.add_argument("--prompt", help="prompt text (tokenized with the checkpoint's tokenizer.json; output streams)")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: as stored")
    g.add_argument("--device", default="cpu")
    g.add_argument("--quantize", choices=["int4"], default=None, help="int4 routed and shared experts")
    g.add_argument("--parallel", choices=["expert", "tensor"], default="expert",
                   help="under torchrun: whole experts per rank (default) or a slice of every expert (Meta's split)")
    g.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    g.set_defaults(fn=cmd_generate)
    c = sub.add_parser("chat", parents=[common],
                       help="chat with a checkpoint (its tokenizer.json and Llama 4's chat format)")
    c.add_argument("--checkpoint", required=True, help="Hugging Face Llama 4 directory with tokenizer.json")
    c.add_argument("--prompt", action="append", help="a user message (repeatable); without it, read lines from stdin")
    c.add_argument("--system", default=None, help="system prompt")
    c.add_argument("--max-new-tokens", type=int, default=256)
    c.add_argument("--temperature", type=float, default=0.6, help="0 = greedy (default 0.6, Meta's)")
    c.add_argument("--top-p", type=float, default=0.9)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: as stored")
    c.add_argument("--device", default="cpu")
    c.add_argument("--quantize", choices=["int4"], default=None, help="int4 routed and shared experts (Scout on one GPU)")
    c.add_argument("--parallel", choices=["expert", "tensor"], default="expert",
                   help="under torchrun: whole experts per rank (default) or a slice of every expert (Meta's split)")
    c.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    c.set_defaults(fn=cmd_chat)
    gr = sub.add_parser("grade", parents=[common],
                        help="score your graded exercises (exercises/chNN_*.py), one chapter or all")
    gr.add_argument("chapter", nargs="?", type=int, help="chapter number, e.g. 1 (default: every chapter)")
    gr.add_argument("--impl", choices=["exercises", "solutions"], default="exercises",
                    help="grade your exercises/ (default) or the reference solutions/")
    gr.set_defaults(fn=cmd_grade)
    pr = sub.add_parser("pretrain", parents=[common],
                        help="pretrain a toy model on the course corpus (under torchrun: data + expert parallel over "
                             "the processes); writes history.json")
    pr.add_argument("--recipe", default="mini-scout", help="a toy recipe of minillama4.course.zoo (default mini-scout)")
    pr.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the recipe's for the profile)")
    pr.add_argument("--profile", choices=["ci", "laptop", "gpu"], default=None,
                    help="scale of the recipe (default: $MINILLAMA4_PROFILE or laptop)")
    pr.add_argument("--out", required=True, help="folder for history.json")
    pr.add_argument("--quiet", action="store_true", help="no progress bar")
    pr.set_defaults(fn=cmd_pretrain)
    pt = sub.add_parser("posttrain", parents=[common],
                        help="post-train the toy model: base → SFT → online RL → DPO, with a report")
    pt.add_argument("--profile", choices=["ci", "laptop", "gpu"], default=None,
                    help="scale of the run (default: $MINILLAMA4_PROFILE or laptop)")
    pt.add_argument("--out", required=True, help="folder for report.json and the plots")
    pt.add_argument("--quiet", action="store_true", help="no progress bars")
    pt.set_defaults(fn=cmd_posttrain)
    site = sub.add_parser("site", parents=[common], help="the course as a static website").add_subparsers(
        dest="action", required=True)
    sb = site.add_parser("build", parents=[common],
                         help="build the website from the notebooks, README.md and docs/ (offline)")
    sb.add_argument("out", help="folder for the site (created; a previous build there is replaced)")
    sb.set_defaults(fn=cmd_site)


    z = sub.add_parser("zoo", parents=[common],
                       help="the cached toy models the notebooks load: list them, or train them all now")
    z.add_argument("action", choices=["list", "warm"], help="list: the artifacts; warm: build the missing ones")
    z.add_argument("--profile", choices=["ci", "laptop", "gpu"], default=None,
                   help="scale (default: $MINILLAMA4_PROFILE or laptop)")
    z.add_argument("--only", nargs="+", metavar="NAME", help="only these artifacts (names as `zoo list` prints)")
    z.add_argument("--quiet", action="store_true", help="no progress bars")
    z.add_argument("--jobs", type=int, choices=[1, 2], default=1,
                   help="2: train the models that start from nothing in a second process (on 2+ cores)")
    z.set_defaults(fn=cmd_zoo)
    return p


# Errors a user can cause (bad arguments or files, no GPU, too little memory): one line each. Anything else is a bug
# and keeps its traceback.
EXPECTED_ERRORS = (ValueError, OSError, ImportError, MemoryError, torch.OutOfMemoryError)


def _join_process_group(args) -> bool:
    """Under torchrun with several processes (WORLD_SIZE > 1), join the group (gloo on CPU, nccl on CUDA: each
    rank on its own GPU). Returns True when this call created the group."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or args.command not in ("generate", "chat", "pretrain"):
        return False
    from .parallel import init_process_group

    created = not dist.is_initialized()
    args.device = init_process_group(getattr(args, "device", "cpu"))
    return created


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    joined = finished = False
    try:
        joined = _join_process_group(args)
        status = args.fn(args)
        finished = True
        return status
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("minillama4: interrupted", file=sys.stderr)
        return 130
    except EXPECTED_ERRORS as e:  # CheckpointError is a ValueError
        if args.debug:
            raise
        rank = f"rank {dist.get_rank()}: " if _distributed() else ""
        print(f"minillama4: error: {rank}{e}", file=sys.stderr)
        return 1
    finally:
        if joined:
            if finished:  # no rank closes its connections while another is still in a collective
                try:  # bounded: a rank that failed has printed its own error, and must not hang the others
                    if dist.get_backend() == "gloo":
                        dist.monitored_barrier(timeout=datetime.timedelta(seconds=120))  # names a missing rank
                    dist.barrier()
                except RuntimeError:
                    pass
            dist.destroy_process_group()
