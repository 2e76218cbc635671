"""Llama 4 Scout on one GPU: the full 48-layer text model with int4 experts, and the streaming loader.

What it measures (random weights with the real shapes: no real checkpoint can be downloaded on the GPU machine)
------------------------------------------------------------------------------------------------------------
0. checks   torch's int4 kernel on Scout's expert shapes against the dequantized reference, and the compiled decode
            step against the eager one, before anything is timed (a wrong kernel layout or compiled step is an
            exit status 1, not a fast wrong number).
1. model    the 48-layer Scout text model (preset "scout": D 5120, 16 routed experts + 1 shared of F 8192, 40/8
            heads, vocab 202048) built on the GPU: bf16 attention/embeddings/lm_head, int4 (group 128) routed and
            shared experts, generated expert by expert, so the bf16 model never exists. Then:
              * weight bytes (against the arithmetic) and peak GPU memory;
              * prefill tokens/s of a 4K-token prompt;
              * decode tokens/s, eager and compiled (`minillama4.decode.DecodeStep`: torch.compile of the whole
                step, replayed as a CUDA graph), at batch 1 with 1K and 8K tokens of context and at batch 8 with 1K;
              * the bytes one decode step reads (attention, lm_head, shared expert, the routed expert of every
                token, the KV cache: the kept slots eager, every allocated slot compiled), the bandwidth limit they
                imply at the measured device copy bandwidth, and the measured speed as a fraction of it (roofline);
              * "fits with an 8K context": peak memory after the 8K run.
2. hf       transformers' Llama4ForCausalLM with Scout's shapes in bf16 at a depth that fits (2 layers and 1; the
            difference is one layer), against ours at the same depths: decode-step and 4K-prefill time per layer.
3. loader   a real-format, real-shaped checkpoint of a few layers (Llama4ForConditionalGeneration keys
            `language_model.model.layers.N…`, bf16 safetensors shards of ~4.3 GB like the released Scout's) written
            to disk, then `from_pretrained(..., device="cuda", quantize="int4")`: GB/s, peak GPU and host memory,
            and a check of what was loaded.

Targets (issue 6): fits with an 8K context; batch-1 decode >= 120 tokens/s; prefill >= 8k tokens/s.

Run
---
    python bench/scout_h100.py --all        # on the GPU: every part; bench/results/scout_h100.json and .md
    python bench/scout_h100.py --part hf --json hf.json                            # one part
    python bench/scout_h100.py --tiny --device cpu --all --compile-backend eager   # smoke test (tests/test_bench.py)
    python bench/scout_h100.py --part loader --device cpu --layers 2               # real shapes on CPU (~13 GB disk)

`--all` is meant to fit in 10 minutes on an H100 or H200 (not yet run on one): a compiled decode run that would start
too late to leave the later parts their time (`--budget-s`) is skipped, and the table says so. The JSON and the markdown are
rewritten after every part, so a run cut short keeps what it measured. Exit status: 1 if a correctness check fails
or a part crashes (with the reason), else 0 whether targets are met or not (the table says PASS / MISSED).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import traceback

import torch
from torch import nn

import minillama4
from minillama4.cache import kv_cache_bytes
from minillama4.checkpoint import from_pretrained
from minillama4.decode import DecodeStep
from minillama4.quant import (GROUP_SIZE, Int4ExpertBank, Int4Linear, expected_int4_bytes, int4_swiglu,
                              kernel_available, quantize_int4, dequantize_int4, weight_bytes)

TARGETS = {"decode_tok_s": 120.0, "prefill_tok_s": 8000.0}
GiB = 2 ** 30


class CheckFailed(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------- helpers
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device, reps=1):
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t) / reps


def gpu_peak(device) -> int:
    return torch.cuda.max_memory_allocated(device) if torch.device(device).type == "cuda" else 0


def reset_gpu_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def host_status(key: str) -> int:
    try:
        return [int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":")][0]
    except (OSError, IndexError):
        return -1


def reset_host_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def scout_config(tiny: bool, layers: int | None = None) -> minillama4.Llama4Config:
    if tiny:  # same structure (MoE every layer, NoPE every 4th, chunked RoPE, QK-norm), toy widths
        cfg = minillama4.Llama4Config.preset("scout").replace(
            vocab_size=2048, hidden_size=256, intermediate_size=256, num_hidden_layers=8, num_attention_heads=4,
            num_key_value_heads=2, head_dim=64, num_local_experts=4, attention_chunk_size=256, floor_scale=256,
            max_position_embeddings=65536, pad_token_id=0, bos_token_id=1, eos_token_id=2,
            rope_scaling={"rope_type": "llama3", "factor": 16.0, "low_freq_factor": 1.0, "high_freq_factor": 1.0,
                          "original_max_position_embeddings": 256})
    else:
        cfg = minillama4.Llama4Config.preset("scout")
    return cfg.replace(num_hidden_layers=layers) if layers else cfg


def sizes(tiny: bool) -> dict:
    if tiny:
        return dict(prefill=256, contexts=[64, 320], batch=8, batch_context=64, steps=4, model_layers=4, loader_layers=2,
                    shard_gb=0.004)
    return dict(prefill=4096, contexts=[1024, 8192], batch=8, batch_context=1024, steps=64, model_layers=None,
                loader_layers=3, shard_gb=4.3)


# --------------------------------------------------------------------------------------------- building
def build_random_int4(cfg, device, layout="auto", seed=0, std=0.02) -> nn.Module:
    """Scout-shaped model with random weights made on `device`: bf16 everywhere except the MoE experts, which are
    generated one layer at a time in bf16 and quantized at once (expert by expert), so at most one layer's bf16
    experts exist."""
    device = torch.device(device)
    with torch.device("meta"):
        model = minillama4.Llama4(cfg)
    gen = torch.Generator(device=device).manual_seed(seed)

    def rnd(*shape):
        return torch.randn(*shape, generator=gen, device=device, dtype=torch.bfloat16) * std

    D, F_, E = cfg.hidden_size, cfg.intermediate_size, cfg.num_local_experts
    for layer in model.layers:
        if layer.is_moe:
            moe = layer.feed_forward
            moe.experts = Int4ExpertBank(E, D, F_, GROUP_SIZE, layout)
            moe.experts.load_gate_up(rnd(E, D, 2 * F_))
            moe.experts.load_down(rnd(E, F_, D))
            moe.shared_expert = int4_swiglu(D, F_, GROUP_SIZE, layout)
            for proj in ("gate_proj", "up_proj", "down_proj"):
                m = getattr(moe.shared_expert, proj)
                m.set_weight(rnd(m.out_features, m.in_features))
    for name, p in list(model.named_parameters()):
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        value = torch.ones(p.shape, device=device, dtype=torch.bfloat16) if p.dim() == 1 else rnd(*p.shape)
        setattr(mod, leaf, nn.Parameter(value, requires_grad=False))
    model.reset_buffers()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckFailed(f"tensors left on meta: {left[:5]}")
    return model.eval()


def decode_bytes_per_token(model, cache, batch: int = 1, every_slot: bool = False) -> dict:
    """Bytes a decode step of `batch` tokens (one per row) reads: every non-expert weight it uses, the shared expert, the routed
    expert of each (token, slot) pair (the int4 bytes; a decode step picks each pair's expert by index, so an expert
    chosen twice is read twice), the lm_head, the embedding rows, and the K/V of every layer: the kept ones (an
    eager step), or every allocated slot (every_slot: a compiled step reads them all, under a mask). Copies the
    step makes on the way (the gathered experts) are not counted: they show in the roofline ratio."""
    attn = norms = router = shared = routed = 0
    for layer in model.layers:
        attn += sum(p.numel() * p.element_size() for p in layer.self_attn.parameters())
        norms += sum(p.numel() * p.element_size() for m in (layer.input_layernorm, layer.post_attention_layernorm)
                     for p in m.parameters())
        ff = layer.feed_forward
        if layer.is_moe:
            router += ff.router.weight.numel() * ff.router.weight.element_size()
            shared += sum(m.nbytes() for m in ff.shared_expert.modules() if isinstance(m, Int4Linear))
            k = model.config.num_experts_per_tok
            routed += batch * k * (ff.experts.gate_up[0].nbytes() + ff.experts.down[0].nbytes())
        else:
            shared += sum(p.numel() * p.element_size() for p in ff.parameters())
    lm = model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    emb_row = batch * model.embed_tokens.weight[0].numel() * model.embed_tokens.weight.element_size()
    kv = 0 if cache is None else cache.nbytes() if every_slot else cache.used_bytes()
    parts = dict(attention=attn, norms=norms, router=router, shared_expert=shared, routed_experts=routed,
                 lm_head=lm, embedding_row=emb_row, kv_cache=kv)
    parts["total"] = sum(parts.values())
    return parts


def copy_bandwidth(device, nbytes=4 * GiB, reps=10) -> float:
    """Device copy bandwidth in bytes/s, counting the read and the write."""
    if torch.device(device).type != "cuda":
        nbytes = 64 * 2 ** 20
    x = torch.empty(nbytes, dtype=torch.uint8, device=device)
    y = torch.empty_like(x)
    y.copy_(x)
    t = timed(lambda: y.copy_(x), device, reps)
    del x, y
    return 2 * nbytes / t


# --------------------------------------------------------------------------------------------- parts
def part_checks(args) -> dict:
    """int4 kernel vs dequantized reference on Scout's expert shapes (shapes of the tiny config with --tiny)."""
    device = torch.device(args.device)
    cfg = scout_config(args.tiny)
    D, F_ = cfg.hidden_size, cfg.intermediate_size
    out = {"kernel_available": kernel_available(device), "layout": args.layout}
    if device.type == "cuda" and not out["kernel_available"]:
        raise CheckFailed("no torch int4 kernel on this GPU (needs torch._weight_int4pack_mm and compute capability >= 8)")
    layout = args.layout if args.layout != "auto" else ("kernel" if out["kernel_available"] else "plain")
    gen = torch.Generator(device=device).manual_seed(1)
    for name, (n, k) in {"gate_up [2F, D]": (2 * F_, D), "down [D, F]": (D, F_), "shared gate [F, D]": (F_, D)}.items():
        w = torch.randn(n, k, generator=gen, device=device, dtype=torch.bfloat16) * 0.02
        m, err = Int4Linear.from_float(w, GROUP_SIZE, layout)
        q, s = quantize_int4(w, GROUP_SIZE, scale_dtype=torch.bfloat16 if m.layout == "kernel" else torch.float32)
        w_hat = dequantize_int4(q, s, torch.float32)
        if not torch.equal(m.dequantize(torch.float32), w_hat):
            raise CheckFailed(f"{name}: dequantize() of the {m.layout} layout differs from the reference")
        res = {"quant_rel_rms": round(err.rel_rms, 5), "layout": m.layout}
        for rows in (1, 8, 64):
            x = torch.randn(rows, k, generator=gen, device=device, dtype=torch.bfloat16)
            ref = x.float() @ w_hat.t()
            got = m(x).float()
            rel = ((got - ref).norm() / ref.norm()).item()
            res[f"matmul_rel_err_rows{rows}"] = rel
            if not rel < 1e-2:
                raise CheckFailed(f"{name}: int4 matmul with {rows} rows is off by {rel:.3g} (relative) from x Ŵᵀ")
        if not 0.05 < err.rel_rms < 0.15:
            raise CheckFailed(f"{name}: quantization error {err.rel_rms:.3f} is implausible for Gaussian weights")
        out[name] = res
    # the whole MoE path on a small int4 model vs the same model dequantized (catches wiring mistakes)
    small = scout_config(True, layers=4)
    m4 = build_random_int4(small, device, args.layout, seed=3, std=0.05)
    ids = torch.randint(0, small.vocab_size, (1, 40), device=device, generator=gen)
    out.update(check_compiled_step(m4, ids, args.compile_backend))
    with torch.no_grad():
        got = m4(ids).float()
        for layer in m4.layers:
            ff = layer.feed_forward
            gu, dn = ff.experts.dequantize(torch.bfloat16)
            bank = minillama4.ffn.ExpertBank(small.num_local_experts, small.hidden_size, small.intermediate_size)
            bank.gate_up_proj, bank.down_proj = nn.Parameter(gu, requires_grad=False), nn.Parameter(dn, requires_grad=False)
            ff.experts = bank
            for proj in ("gate_proj", "up_proj", "down_proj"):
                lin = nn.Linear(1, 1, bias=False)
                lin.weight = nn.Parameter(getattr(ff.shared_expert, proj).dequantize(torch.bfloat16), requires_grad=False)
                setattr(ff.shared_expert, proj, lin)
        want = m4(ids).float()
    rel = ((got - want).norm() / want.norm()).item()
    out["model_int4_vs_dequantized_rel_err"] = rel
    if not rel < 2e-2:
        raise CheckFailed(f"int4 model and its dequantized twin disagree: relative logit error {rel:.3g}")
    return out


def check_compiled_step(model, ids, backend: str) -> dict:
    """The compiled decode step (a CUDA graph on a GPU) against the eager step, token by token on the same input
    (batch 2: the sequence and its reverse, two experts per layer), per row: the relative logit errors. A wrong
    compiled step must not be timed. In bf16 a token whose two best experts are nearly tied can pick the other one
    on one path (its row then differs by ~0.1 at that step): the check allows that in one row at a time, in at most
    one step in eight, and fails on anything that hits both rows at a step (a position, mask or cache slot) or
    many steps."""
    ids = ids.repeat(2, 1)
    ids[1] = ids[1].flip(0)
    eager, static = model.new_cache(2, ids.shape[1]), model.new_cache(2, ids.shape[1])
    errs_SB = []
    with torch.no_grad():
        model(ids[:, :8], cache=eager)
        model(ids[:, :8], cache=static)
        step = DecodeStep(model, static, backend=backend)
        for t in range(8, ids.shape[1]):
            got = step(ids[:, t:t + 1]).float()
            want = model(ids[:, t:t + 1], cache=eager, last_only=True)[:, -1].float()
            errs_SB.append(((got - want).norm(dim=-1) / want.norm(dim=-1)).tolist())
    tol, steps = 2e-2, len(errs_SB)
    both = [t + 8 for t, e in enumerate(errs_SB) if min(e) >= tol]
    over = sum(x >= tol for e in errs_SB for x in e)
    res = {"compiled_step_vs_eager_median_rel_err": statistics.median(x for e in errs_SB for x in e),
           "compiled_step_vs_eager_worst_rel_err": max(x for e in errs_SB for x in e),
           "compiled_step_rows_over_2e-2": over}
    if both or over > steps // 8:
        raise CheckFailed(f"the compiled decode step differs from the eager one: relative logit error ≥ {tol} in "
                          f"{over} of {2 * steps} (step, row) pairs, in both rows at steps {both}; worst "
                          f"{res['compiled_step_vs_eager_worst_rel_err']:.3g}")
    return res


def part_model(args) -> dict:
    device = torch.device(args.device)
    sz = sizes(args.tiny)
    cfg = scout_config(args.tiny, sz["model_layers"])
    out = {"config": f"{'tiny scout-like' if args.tiny else 'scout'} ({cfg.num_hidden_layers} layers)"}
    reset_gpu_peak(device)
    t = time.perf_counter()
    model = build_random_int4(cfg, device, args.layout)
    sync(device)
    out["build_s"] = time.perf_counter() - t
    layouts = {m.layout for m in model.modules() if isinstance(m, Int4Linear)}
    out["int4_layouts"] = sorted(layouts)
    if device.type == "cuda" and args.layout == "auto" and layouts != {"kernel"}:
        raise CheckFailed(f"expected torch's int4 kernel layout for every expert matrix on CUDA, got {layouts}")
    out["weight_bytes"] = weight_bytes(model)
    out["expected_weight_bytes"] = expected_int4_bytes(cfg, dtype_bytes=2)
    if out["weight_bytes"] != out["expected_weight_bytes"]:
        raise CheckFailed(f"weight bytes {out['weight_bytes']:,} != the arithmetic {out['expected_weight_bytes']:,}")
    out["peak_after_build_bytes"] = gpu_peak(device)
    out["copy_bandwidth_Bps"] = copy_bandwidth(device)
    gen = torch.Generator(device=device).manual_seed(0)

    def prompt(B, T):
        return torch.randint(0, cfg.vocab_size, (B, T), device=device, generator=gen)

    with torch.no_grad():
        # warm-up: kernels, the int4 layout permutations (long-prompt path), cuBLAS handles
        c = model.new_cache(1, 600)
        model(prompt(1, 512), cache=c, last_only=True)
        for _ in range(3):
            model(prompt(1, 1), cache=c, last_only=True)
        del c
        # prefill
        T = sz["prefill"]
        c = model.new_cache(1, T)
        out["prefill_tokens"] = T
        out["prefill_s"] = timed(lambda: model(prompt(1, T), cache=c, last_only=True), device)
        out["prefill_tok_s"] = T / out["prefill_s"]
        del c
        # decode: batch 1 at each context, then the batch; eager, then compiled (a CUDA graph on a GPU). Every
        # batch-1 run uses one cache length, so one compile of the step serves them all.
        steps, b1_len = sz["steps"], max(sz["contexts"]) + sz["steps"] + 8
        runs = [(1, n, b1_len) for n in sz["contexts"]] + [(sz["batch"], sz["batch_context"],
                                                           sz["batch_context"] + steps + 8)]
        for how in ("eager", "compiled"):
            for B, n, cache_len in runs:
                key = f"decode_b{B}_ctx{n}"
                c = model.new_cache(B, cache_len)
                for s0 in range(0, n, 4096):  # prefill the context in pieces of <= 4K tokens
                    model(prompt(B, min(4096, n - s0)), cache=c, last_only=True)
                step_ids = prompt(B, 1)
                if how == "eager":
                    run = lambda: model(step_ids, cache=c, last_only=True, check_ids=False)  # noqa: E731
                else:
                    if time.perf_counter() > args.compile_deadline:  # leave the later parts their time
                        out[f"{key}_compiled_skipped"] = "time budget (--budget-s)"
                        del c
                        continue
                    if n == sz["contexts"][0] or B > 1:  # a new shape: start afresh, for a static graph (torch would
                        torch._dynamo.reset()  # otherwise recompile with symbolic shapes, which takes longer)
                    t = time.perf_counter()
                    step = DecodeStep(model, c, backend=args.compile_backend)
                    step(step_ids)  # compiles (or reuses the compiled step); on a GPU, records the CUDA graph
                    sync(device)
                    out[f"{key}_compile_s"] = time.perf_counter() - t
                    run = lambda: step(step_ids)  # noqa: E731
                run(), run()  # warm-up
                out[f"{key}_{how}_tok_s"] = B / timed(run, device, steps)
                bps = decode_bytes_per_token(model, c, B, every_slot=how == "compiled")
                limit = B * out["copy_bandwidth_Bps"] / bps["total"]  # tokens/s if every byte moved at copy speed
                out[f"{key}_{how}_bytes_per_step"] = bps
                out[f"{key}_{how}_bandwidth_limit_tok_s"] = limit
                out[f"{key}_{how}_roofline_ratio"] = out[f"{key}_{how}_tok_s"] / limit
                out[f"kv_cache_b{B}_ctx{n}_allocated_bytes"] = c.nbytes()
                del c, run
                step = None  # its CUDA graph and memory pool go with it
                if how == "eager" and B == 1 and n == max(sz["contexts"]):
                    out["peak_with_8k_context_bytes"] = gpu_peak(device)
                args.save(model=out)  # a run cut short keeps what it measured
    out["peak_bytes"] = gpu_peak(device)
    if device.type == "cuda":
        out["device_total_bytes"] = torch.cuda.get_device_properties(device).total_memory
        out["fits_8k"] = out["peak_with_8k_context_bytes"] < out["device_total_bytes"]
    out["kv_bytes_per_token_chunk_aware"] = kv_cache_bytes(cfg, 10 ** 6 + 1) - kv_cache_bytes(cfg, 10 ** 6)
    out["kv_bytes_per_token_naive"] = kv_cache_bytes(cfg, 1, chunk_aware=False)
    del model
    gc.collect()
    return out


def _hf_model(cfg, layers, device):
    import transformers

    hf_cfg = cfg.replace(num_hidden_layers=layers).to_hf()
    text = transformers.Llama4TextConfig(**{k: v for k, v in hf_cfg.items() if k not in ("architectures", "dtype")})
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            m = transformers.Llama4ForCausalLM._from_config(text, attn_implementation="sdpa")
    finally:
        torch.set_default_dtype(old)
    return m.to(torch.bfloat16).eval()


def part_hf(args) -> dict:
    """Per-layer times, transformers bf16 vs ours int4, at depths 2 and 1 (the difference is one layer)."""
    import transformers

    device, sz = torch.device(args.device), sizes(args.tiny)
    cfg = scout_config(args.tiny)
    T, n = sz["prefill"], sz["contexts"][0]
    out = {"transformers": transformers.__version__}
    gen = torch.Generator(device=device).manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, max(T, n)), device=device, generator=gen)
    one = ids[:, :1]

    def ours_times(layers):
        m = build_random_int4(cfg.replace(num_hidden_layers=layers), device, args.layout)
        with torch.no_grad():
            c = m.new_cache(1, T)
            m(ids[:, :T], cache=c, last_only=True)  # warm-up
            c = m.new_cache(1, T)
            pre = timed(lambda: m(ids[:, :T], cache=c, last_only=True), device)
            c = m.new_cache(1, n + sz["steps"] + 4)
            m(ids[:, :n], cache=c, last_only=True)
            m(one, cache=c, last_only=True)
            dec = timed(lambda: m(one, cache=c, last_only=True), device, sz["steps"])
        del m, c
        gc.collect()
        return pre, dec

    def hf_times(layers):
        m = _hf_model(cfg, layers, device)
        with torch.no_grad():
            m(ids[:, :T], use_cache=False, logits_to_keep=1)  # warm-up
            pre = timed(lambda: m(ids[:, :T], use_cache=False, logits_to_keep=1), device)
            o = m(ids[:, :n], use_cache=True, logits_to_keep=1)
            pkv = o.past_key_values
            m(one, past_key_values=pkv, use_cache=True, logits_to_keep=1)
            dec = timed(lambda: m(one, past_key_values=pkv, use_cache=True, logits_to_keep=1), device, sz["steps"])
        del m, pkv, o
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return pre, dec

    res = {}
    for who, fn in (("ours_int4", ours_times), ("transformers_bf16", hf_times)):
        p2, d2 = fn(2)
        p1, d1 = fn(1)
        res[who] = {"prefill_per_layer_s": p2 - p1, "decode_per_layer_s": d2 - d1, "prefill_2_layers_s": p2,
                    "decode_2_layers_s": d2}
    out.update(res)
    out["prefill_tokens"], out["decode_context"] = T, n
    for k in ("prefill_per_layer_s", "decode_per_layer_s"):
        out[f"speedup_{k}"] = res["transformers_bf16"][k] / res["ours_int4"][k]
    return out


def _write_scout_shaped_checkpoint(path, cfg, shard_bytes, device, seed=0):
    """Llama4ForConditionalGeneration key names and config.json, bf16 safetensors shards, random values (made on the
    device, written tensor by tensor)."""
    from safetensors.torch import save_file

    os.makedirs(path, exist_ok=True)
    hf = {"architectures": ["Llama4ForConditionalGeneration"], "model_type": "llama4", "dtype": "bfloat16",
          "text_config": dict(cfg.to_hf(), model_type="llama4_text")}
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf, f, indent=2)
    with torch.device("meta"):
        names = [(n, tuple(p.shape)) for n, p in minillama4.Llama4(cfg).state_dict().items()]
    gen = torch.Generator(device=device).manual_seed(seed)
    weight_map, shard, size, k, files = {}, {}, 0, 0, []

    def flush():
        nonlocal shard, size, k
        k += 1
        fname = f"model-{k:05d}.safetensors"
        save_file(shard, os.path.join(path, fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in shard})
        files.append(fname)
        shard, size = {}, 0

    for name, shape in names:
        hf_name = "language_model." + (name if name == "lm_head.weight" else "model." + name)
        t = (torch.randn(shape, generator=gen, device=device, dtype=torch.bfloat16) * 0.02).cpu() if len(shape) > 1 \
            else torch.ones(shape, dtype=torch.bfloat16)
        if shard and size + t.numel() * 2 > shard_bytes:
            flush()
        shard[hf_name] = t
        size += t.numel() * 2
    flush()
    final = {}
    for i, fname in enumerate(files, 1):  # the real naming: model-0000i-of-0000n.safetensors
        new = f"model-{i:05d}-of-{len(files):05d}.safetensors"
        os.rename(os.path.join(path, fname), os.path.join(path, new))
        final[fname] = new
    weight_map = {n: final[f] for n, f in weight_map.items()}
    total = sum(os.path.getsize(os.path.join(path, f)) for f in final.values())
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return total, len(files)


def part_loader(args) -> dict:
    from safetensors import safe_open

    device, sz = torch.device(args.device), sizes(args.tiny)
    cfg = scout_config(args.tiny, layers=args.layers or sz["loader_layers"])
    workdir = args.workdir or tempfile.mkdtemp(prefix="scout_ckpt_")
    path = os.path.join(workdir, "scout_shaped")
    out = {"layers": cfg.num_hidden_layers}
    try:
        t = time.perf_counter()
        total, n_shards = _write_scout_shaped_checkpoint(path, cfg, int(sz["shard_gb"] * 1e9), device)
        out.update(write_s=time.perf_counter() - t, checkpoint_bytes=total, shards=n_shards)
        if device.type != "cuda":  # a shared CPU machine: never drop its page cache
            out["page_cache"] = "warm (the checkpoint was just written; the page cache is not dropped on a CPU run)"
        else:  # a cold read, if this machine lets us drop the page cache
            try:
                with open("/proc/sys/vm/drop_caches", "w") as f:
                    f.write("3")
                out["page_cache"] = "dropped (cold read)"
            except OSError:
                out["page_cache"] = "warm (the checkpoint was just written; could not drop caches)"
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        reset_gpu_peak(device)
        gpu_base = torch.cuda.memory_allocated(device) if device.type == "cuda" else 0
        host_ok = reset_host_peak()
        host_base = host_status("VmRSS")
        t = time.perf_counter()
        model = from_pretrained(path, dtype=torch.bfloat16, device=device, quantize="int4", progress=True)
        sync(device)
        out["load_s"] = time.perf_counter() - t
        out["load_GBps"] = total / out["load_s"] / 1e9
        out["gpu_peak_over_base_bytes"] = gpu_peak(device) - gpu_base
        out["host_peak_over_base_bytes"] = host_status("VmHWM") - host_base if host_ok else None
        out["weight_bytes"] = weight_bytes(model)
        out["largest_shard_bytes"] = max(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                                         if f.endswith(".safetensors"))
        # what was loaded is what was written
        index = json.load(open(os.path.join(path, "model.safetensors.index.json")))["weight_map"]
        key = "language_model.model.layers.1.self_attn.q_proj.weight"
        with safe_open(os.path.join(path, index[key]), "pt") as f:
            if not torch.equal(f.get_tensor(key).to(device), model.layers[1].self_attn.q_proj.weight):
                raise CheckFailed(f"{key} loaded differs from the file")
        key = "language_model.model.layers.0.feed_forward.experts.down_proj"
        with safe_open(os.path.join(path, index[key]), "pt") as f:
            w = f.get_slice(key)[0].to(device).float()  # expert 0: [F, D]
        w_hat = model.layers[0].feed_forward.experts.down[0].dequantize(torch.float32).t()
        rel = ((w_hat - w).norm() / w.norm()).item()
        out["expert0_rel_rms_error"] = rel
        if not 0.05 < rel < 0.15:
            raise CheckFailed(f"{key}[0] int4 vs file: relative error {rel:.3g} (expected ~0.1)")
        bound = out["weight_bytes"] + out["largest_shard_bytes"] + 2 * GiB
        out["gpu_peak_bound_bytes"] = bound  # on a CPU run the same bound applies to the host (the mapped shard counts)
        peak = out["gpu_peak_over_base_bytes"] if device.type == "cuda" else out["host_peak_over_base_bytes"]
        if peak is not None and peak > bound:
            raise CheckFailed(f"{'GPU' if device.type == 'cuda' else 'host'} peak {peak / GiB:.2f} GiB exceeds the int4 "
                              f"model + one shard + 2 GiB of temporaries = {bound / GiB:.2f} GiB")
        del model
    finally:
        if not args.keep:
            shutil.rmtree(path, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------- report
def report(results: dict) -> str:
    lines = []
    env = results["env"]
    lines.append(f"**Machine:** {env['device']}; torch {env['torch']}; {env['date']}")
    m = results.get("model")
    if isinstance(m, dict) and "prefill_tok_s" in m:
        lines += ["", "| Scout text model, int4 experts | measured | limit / target | |", "|---|---|---|---|"]
        lines.append(f"| weights in memory | {m['weight_bytes'] / 1e9:.2f} GB ({m['weight_bytes'] / GiB:.2f} GiB) | "
                     f"arithmetic {m['expected_weight_bytes'] / 1e9:.2f} GB | |")
        if "fits_8k" in m:
            lines.append(f"| peak GPU memory with an 8K context | {m['peak_with_8k_context_bytes'] / GiB:.2f} GiB | "
                         f"{m['device_total_bytes'] / GiB:.1f} GiB | {'PASS' if m['fits_8k'] else 'MISSED'} |")
        ok = m["prefill_tok_s"] >= TARGETS["prefill_tok_s"]
        lines.append(f"| prefill, {m['prefill_tokens']} tokens | {m['prefill_tok_s']:,.0f} tok/s | ≥ 8,000 | "
                     f"{'PASS' if ok else 'MISSED'} |")
        lines.append(f"| device copy bandwidth (read + write) | {m['copy_bandwidth_Bps'] / 1e12:.2f} TB/s | | |")
    runs = sorted({k[len("decode_"):-len("_eager_tok_s")] for k in (m or {}) if k.endswith("_eager_tok_s")},
                  key=lambda r: tuple(int(x) for x in r[1:].replace("_ctx", " ").split()))
    if runs:
        lines += ["", "| decode (tokens/s) | eager | compiled | compile s | MB read per step (compiled) | "
                      "bandwidth limit | roofline eager / compiled | target |", "|---|---|---|---|---|---|---|---|"]
        for r in runs:
            B, ctx = r[1:].split("_ctx")
            e, c = m.get(f"decode_{r}_eager_tok_s"), m.get(f"decode_{r}_compiled_tok_s")
            best = max(e, c or 0)
            target = (f"≥ 120: {'PASS' if best >= TARGETS['decode_tok_s'] else 'MISSED'}" if B == "1" else "(info)")
            if c is None:
                lines.append(f"| batch {B}, {ctx} context | {e:.1f} | (skipped: time budget) | | | | "
                             f"{m[f'decode_{r}_eager_roofline_ratio']:.2f} / | {target} |")
                continue
            lines.append(f"| batch {B}, {ctx} context | {e:.1f} | {c:.1f} | {m[f'decode_{r}_compile_s']:.1f} | "
                         f"{m[f'decode_{r}_compiled_bytes_per_step']['total'] / 1e6:,.0f} | "
                         f"{m[f'decode_{r}_compiled_bandwidth_limit_tok_s']:,.0f} | "
                         f"{m[f'decode_{r}_eager_roofline_ratio']:.2f} / {m[f'decode_{r}_compiled_roofline_ratio']:.2f} | "
                         f"{target} |")
    h = results.get("hf")
    if isinstance(h, dict) and "ours_int4" in h:
        lines += ["", f"| per layer (transformers {h['transformers']}, bf16 vs ours int4) | transformers | ours | ratio |",
                  "|---|---|---|---|"]
        for k, label in (("prefill_per_layer_s", f"prefill {h['prefill_tokens']} tokens"),
                         ("decode_per_layer_s", f"decode step at {h['decode_context']} context")):
            a, b = h["transformers_bf16"][k], h["ours_int4"][k]
            lines.append(f"| {label} | {a * 1e3:.3f} ms | {b * 1e3:.3f} ms | {a / b:.2f}× |")
    ld = results.get("loader")
    if isinstance(ld, dict) and "load_GBps" in ld:
        hp = ld["host_peak_over_base_bytes"]
        lines += ["", "| streaming int4 loader | |", "|---|---|",
                  f"| checkpoint | {ld['layers']} Scout layers, {ld['checkpoint_bytes'] / 1e9:.2f} GB in {ld['shards']} shards "
                  f"({ld['page_cache']}) |",
                  f"| load | {ld['load_s']:.1f} s, {ld['load_GBps']:.2f} GB/s |",
                  f"| int4 model, largest shard | {ld['weight_bytes'] / GiB:.2f} GiB, "
                  f"{ld['largest_shard_bytes'] / GiB:.2f} GiB |"]
        bound = f"(bound: int4 model + largest shard + 2 GiB = {ld['gpu_peak_bound_bytes'] / GiB:.2f} GiB)"
        if env.get("cuda"):
            lines.append(f"| GPU peak over the start | {ld['gpu_peak_over_base_bytes'] / GiB:.2f} GiB {bound} |")
        lines.append(f"| host peak over the start | {'n/a' if hp is None else f'{hp / GiB:.2f} GiB'}"
                     f"{'' if env.get('cuda') else ' ' + bound} |")
    for part, v in results.items():
        if isinstance(v, dict) and "error" in v:
            lines.append(f"\n**{part} FAILED:** {v['error']}")
    return "\n".join(lines)


def _cpu_name() -> str:
    """The CPU's model name, its core count and torch's thread count (for the record)."""
    name = platform.processor() or "cpu"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), name)
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


PARTS = ["checks", "model", "hf", "loader"]
LATER_PART_S = {"hf": 90, "loader": 240}  # rough guesses (not measured on a GPU) of what the parts after model need
COMPILE_S = 180  # a rough guess of one compile of the 48-layer step on a GPU


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", nargs="+", default=["checks", "model"], choices=PARTS)
    p.add_argument("--all", action="store_true", help="every part, in order: " + ", ".join(PARTS))
    p.add_argument("--device", default="cuda")
    p.add_argument("--layout", default="auto", choices=["auto", "plain", "kernel"], help="int4 storage layout")
    p.add_argument("--tiny", action="store_true", help="toy widths (a smoke test of the script, e.g. on CPU)")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the compiled decode step (the CPU smoke test: eager, no codegen)")
    p.add_argument("--budget-s", type=float, default=600,
                   help="a compiled decode run that would end past this many seconds, leaving the later parts their "
                        "time, is skipped (and the table says so)")
    p.add_argument("--workdir", default=None, help="where the loader part writes its checkpoint (needs ~13 GB)")
    p.add_argument("--keep", action="store_true", help="keep the loader checkpoint")
    p.add_argument("--layers", type=int, default=None,
                   help="layers of the loader's checkpoint (default 3 at Scout's shapes, 2 with --tiny)")
    p.add_argument("--json", default=None, help="all numbers (default: bench/results/scout_h100[_tiny].json)")
    p.add_argument("--markdown", default=None, help="the tables (default: the --json path with .md)")
    args = p.parse_args(argv)
    parts = PARTS if args.all else args.part
    args.json = args.json or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                          f"scout_h100{'_tiny' if args.tiny else ''}.json")
    args.markdown = args.markdown or os.path.splitext(args.json)[0] + ".md"
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("scout_h100: --device cuda but torch.cuda.is_available() is False (a CPU build of torch, or no GPU). "
              "For a smoke test on CPU: --tiny --device cpu", file=sys.stderr)
        return 1
    if not args.tiny and device.type != "cuda" and parts != ["loader"]:
        print("scout_h100: the full Scout model needs a GPU (~65 GB); on CPU use --tiny, or --part loader alone "
              "(a few real-shaped layers)", file=sys.stderr)
        return 1
    if args.layers is not None and args.layers < 1:
        print(f"scout_h100: --layers must be at least 1, got {args.layers}", file=sys.stderr)
        return 1
    torch.set_grad_enabled(False)
    env = {"torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
           "tiny": args.tiny, "layout": args.layout, "compile_backend": args.compile_backend}
    if device.type == "cuda":
        env["cuda"] = torch.version.cuda
        torch.backends.cuda.matmul.allow_tf32 = True
    results, failed, start = {"env": env}, False, time.perf_counter()

    def save(**part_results):
        """Write the JSON and the markdown now (after every part, and within the long ones)."""
        results.update(part_results)
        results["env"]["total_s"] = time.perf_counter() - start
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)
        with open(args.markdown, "w") as f:
            f.write(report(results) + "\n")

    args.save = save
    later = sum(LATER_PART_S.get(q, 0) for q in parts[parts.index("model") + 1:]) if "model" in parts else 0
    args.compile_deadline = start + args.budget_s - later - (0 if args.tiny else COMPILE_S)
    for part in parts:
        t = time.perf_counter()
        try:
            res = {"checks": part_checks, "model": part_model, "hf": part_hf, "loader": part_loader}[part](args)
            save(**{part: dict(res, part_s=time.perf_counter() - t)})
        except Exception as e:  # noqa: BLE001 - report every failure loudly, then go on with the next part
            failed = True
            save(**{part: dict(results.get(part) or {}, error=f"{type(e).__name__}: {e}")})  # keep what it measured
            traceback.print_exc()
            if part == "checks":  # nothing after a failed correctness check is worth timing
                break
        finally:
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    print(json.dumps(results, indent=1, default=str))
    print(report(results))
    print(f"wrote {args.json} and {args.markdown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
