"""The `minillama4` command (also `python -m minillama4`).

    minillama4 info --preset scout          layer plan, parameter counts, KV-cache cost of a config
    minillama4 info CHECKPOINT_DIR          the same for a Hugging Face checkpoint directory
    minillama4 generate CHECKPOINT_DIR --ids 1 5 9 --max-new-tokens 20    greedy (or sampled) continuation of token ids
"""

from __future__ import annotations

import argparse
import sys

import torch

from .checkpoint import CheckpointError, from_pretrained, load_config
from .config import Llama4Config


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
    return 0


def cmd_generate(args) -> int:
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, None: None}[args.dtype]
    model = from_pretrained(args.checkpoint, dtype=dtype, device=args.device)
    ids = torch.tensor([args.ids], device=args.device)
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    out = model.generate(ids, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                         eos_token_id=model.config.eos_token_id, generator=gen)
    print(" ".join(str(t) for t in out[0, len(args.ids):].tolist()))
    return 0


def cmd_grade(args) -> int:
    from .grading import grade

    results = grade(args.chapter, impl=args.impl)
    if not results:
        print(f"no graded exercises for chapter {args.chapter}", file=sys.stderr)
        return 2
    return 0 if all(r.passed for r in results) else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="minillama4", description="Llama 4 from scratch: tools for the course package")
    sub = p.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="layer plan, parameter counts and KV-cache cost of a preset or checkpoint")
    src = info.add_mutually_exclusive_group(required=True)
    src.add_argument("checkpoint", nargs="?", help="Hugging Face Llama 4 checkpoint directory")
    src.add_argument("--preset", choices=["toy", "scout", "maverick"])
    info.set_defaults(fn=cmd_info)
    g = sub.add_parser("generate", help="continue a sequence of token ids with a checkpoint")
    g.add_argument("checkpoint")
    g.add_argument("--ids", type=int, nargs="+", required=True, help="prompt token ids")
    g.add_argument("--max-new-tokens", type=int, default=32)
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--dtype", choices=["float32", "bfloat16"], default=None, help="default: as stored")
    g.add_argument("--device", default="cpu")
    g.set_defaults(fn=cmd_generate)
    gr = sub.add_parser("grade", help="score your graded exercises (exercises/chNN_*.py), one chapter or all")
    gr.add_argument("chapter", nargs="?", type=int, help="chapter number, e.g. 1 (default: every chapter)")
    gr.add_argument("--impl", choices=["exercises", "solutions"], default="exercises",
                    help="grade your exercises/ (default) or the reference solutions/")
    gr.set_defaults(fn=cmd_grade)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (CheckpointError, ValueError) as e:
        print(f"minillama4: error: {e}", file=sys.stderr)
        return 2
