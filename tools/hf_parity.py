#!/usr/bin/env python3
"""The Hugging Face transformers reference for the engine's parity checks.

Runs a model folder (the project's random checkpoints, tools/random-model.ts) through
transformers' own modelling code in float32 and writes what our engine must reproduce:

    python3 tools/hf_parity.py MODEL_DIR OUT_DIR [--name NAME] [--seed 0] [--prompts 8]
        [--min-len 16] [--max-len 2000] [--steps 64] [--attn eager|sdpa] [--device cuda|cpu]
        [--generator-args "random-model.ts flags"] [--no-logits] [--control-dtype bfloat16|float16]

OUT_DIR/golden.json: the model's shape, the prompts (seeded random token ids below the
vocabulary size, lengths spread geometrically from --min-len to --max-len) and per prompt:
  greedy   64 greedy tokens (step 0 is the argmax after the prompt),
  margins  the top-2 gap of each step's log-softmax (= of its logits), the near-tie measure,
  top20    the 20 most likely ids of the last prompt position and their log-softmax.
OUT_DIR/logits.f32: the last prompt position's logits, prompts x vocab, little-endian float32.

The reference: AutoModelForCausalLM with the checkpoint's weights upcast to float32 while
loading (torch_dtype=float32), TF32 off, attn_implementation "eager" by default (the plain
matmul-softmax-matmul of the modelling file), one prompt at a time with the KV cache of
transformers (past_key_values), no EOS stop. native/tests/cuda/parity.mjs and
native/test/hf-parity.test.ts compare the engine against these files.

--control-dtype runs transformers itself again in that dtype against its own float32
reference, with the measures parity.mjs applies to the engine (centred-logit relative
error of the last prompt position; greedy steps fed the float32 tokens, counting where the
argmax parts and the float32 top-2 margin there), and records them as golden["control"]:
what rounding to 16 bits costs an implementation no one here wrote, on the same weights.
"""
import argparse
import hashlib
import json
import os
import random
import shlex
import sys
import time

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM

FORMAT = "text-gen hf-parity golden v1"
# Checkpoints this large are not hashed (an 8B one would take half a minute).
HASH_LIMIT_BYTES = 2 << 30


def prompt_lengths(n, lo, hi):
    """n lengths from lo to hi, evenly spaced in log scale (16..2000: 16 32 64 127 253 504 1004 2000)."""
    if n == 1:
        return [hi]
    return [round(lo * (hi / lo) ** (i / (n - 1))) for i in range(n)]


def make_prompts(seed, n, lo, hi, vocab):
    rng = random.Random(seed)
    return [[rng.randrange(vocab) for _ in range(length)] for length in prompt_lengths(n, lo, hi)]


def checkpoint_files(model_dir):
    return sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))


def checkpoint_hashes(model_dir):
    """sha256 of each safetensors file, or None past HASH_LIMIT_BYTES."""
    files = checkpoint_files(model_dir)
    if sum(os.path.getsize(os.path.join(model_dir, f)) for f in files) > HASH_LIMIT_BYTES:
        return None
    out = {}
    for f in files:
        h = hashlib.sha256()
        with open(os.path.join(model_dir, f), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                h.update(block)
        out[f] = h.hexdigest()
    return out


def load_model(model_dir, device, attn, dtype=torch.float32):
    kwargs = dict(torch_dtype=dtype, attn_implementation=attn)
    try:
        # Straight onto the device, converting each tensor as it is read.
        model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device, **kwargs)
    except (ImportError, ValueError) as e:  # some versions need accelerate for device_map
        print(f"hf_parity: device_map={device} unavailable ({str(e).splitlines()[0]}); loading on the CPU first", flush=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).to(device)
    model.eval()
    params = sorted({str(p.dtype) for p in model.parameters()})
    if params != [str(dtype)]:
        sys.exit(f"hf_parity: expected {dtype} parameters, found {params}")
    if dtype != torch.float32:
        return model
    buffers = sorted({f"{n}: {b.dtype}" for n, b in model.named_buffers() if b.is_floating_point() and b.dtype != torch.float32})
    if buffers:  # e.g. RoPE's inv_freq: a rounded one would make the reference less exact than claimed
        print(f"hf_parity: warning: buffers not in float32: {buffers[:4]}", flush=True)
    return model


@torch.inference_mode()
def run_prompt(model, ids, steps, device):
    """Last-position logits of the prompt, then `steps` greedy tokens with their top-2 margins."""
    out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
    logits = out.logits[0, -1].float()
    last = logits.clone()  # not a view: the prompt's full logits (1 GB for the 8B at 2,000 tokens) can go
    tokens, margins = [], []
    for step in range(steps):
        top2 = torch.topk(logits, 2)
        tokens.append(int(top2.indices[0]))
        margins.append(float(top2.values[0].double() - top2.values[1].double()))
        if step + 1 == steps:
            break
        out = model(input_ids=torch.tensor([[tokens[-1]]], device=device), past_key_values=out.past_key_values, use_cache=True)
        logits = out.logits[0, -1].float()
    return last, tokens, margins


def centred_rel_error(ours, reference):
    """||c(ours) - c(ref)|| / ||c(ref)|| with c(x) = x - mean(x): logits up to their softmax shift."""
    a, b = ours.double(), reference.double()
    a, b = a - a.mean(), b - b.mean()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@torch.inference_mode()
def control_run(model, prompts, entries, lasts, device, dtype_name):
    """The model in a 16-bit dtype against the float32 reference, as parity.mjs measures the engine."""
    rows = []
    for i, (ids, e, last) in enumerate(zip(prompts, entries, lasts)):
        out = model(input_ids=torch.tensor([ids], device=device), use_cache=True)
        logits = out.logits[0, -1].float()
        rel = centred_rel_error(logits.cpu(), last)
        parted = []
        for step, token in enumerate(e["greedy"]):
            if int(torch.argmax(logits)) != token:
                parted.append(step)
            if step + 1 == len(e["greedy"]):
                break
            out = model(input_ids=torch.tensor([[token]], device=device), past_key_values=out.past_key_values, use_cache=True)
            logits = out.logits[0, -1].float()
        worst = max((e["margins"][k] for k in parted), default=0.0)
        rows.append({"rel_err": sig(rel, 4), "parted": len(parted), "max_margin_parted": sig(worst, 4)})
        print(f"RESULT hf-control {dtype_name} prompt {i} ({len(ids)} tok): logits rel err {rel:.2e}, "
              f"greedy {len(e['greedy']) - len(parted)}/{len(e['greedy'])} match (fed the float32 tokens), "
              f"largest float32 margin where they part {worst:.2e}", flush=True)
    return rows


def sig(x, digits=7):
    return float(f"{x:.{digits}g}")


def model_summary(name, config, model_dir):
    keys = ["model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "vocab_size", "max_position_embeddings",
            "rms_norm_eps", "rope_theta", "rope_scaling", "tie_word_embeddings", "sliding_window",
            "use_sliding_window", "attention_bias", "torch_dtype"]
    summary = {"name": name}
    summary.update({k: config[k] for k in keys if k in config})
    summary["files"] = checkpoint_files(model_dir)
    summary["bytes"] = sum(os.path.getsize(os.path.join(model_dir, f)) for f in summary["files"])
    return summary


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("out_dir")
    ap.add_argument("--name", help="model name in the golden (default: the folder's name)")
    ap.add_argument("--seed", type=int, default=0, help="prompt token seed")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--min-len", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--generator-args", default=None,
                    help="the tools/random-model.ts flags that made the model (recorded, so tests can regenerate it)")
    ap.add_argument("--no-logits", action="store_true", help="skip logits.f32")
    ap.add_argument("--control-dtype", choices=["bfloat16", "float16"], default=None,
                    help="also run transformers in this dtype against its float32 reference (golden['control'])")
    a = ap.parse_args()

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")

    with open(os.path.join(a.model_dir, "config.json")) as f:
        config = json.load(f)
    name = a.name or os.path.basename(os.path.normpath(a.model_dir))
    vocab = config["vocab_size"]
    if a.max_len + a.steps > config.get("max_position_embeddings", 1 << 30):
        sys.exit(f"hf_parity: --max-len {a.max_len} + {a.steps} steps is past max_position_embeddings")
    prompts = make_prompts(a.seed, a.prompts, a.min_len, a.max_len, vocab)

    t0 = time.time()
    hashes = checkpoint_hashes(a.model_dir)
    model = load_model(a.model_dir, a.device, a.attn)
    load_s = time.time() - t0
    device_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu"
    print(f"hf_parity: {name} loaded in {load_s:.1f} s on {device_name} "
          f"(transformers {transformers.__version__}, torch {torch.__version__}, float32, attn {a.attn})", flush=True)

    t1 = time.time()
    entries, lasts = [], []
    for i, ids in enumerate(prompts):
        last, tokens, margins = run_prompt(model, ids, a.steps, a.device)
        lp = torch.log_softmax(last.double(), dim=-1)
        top = torch.topk(lp, 20)
        entries.append({
            "length": len(ids),
            "ids": ids,
            "greedy": tokens,
            "margins": [sig(m) for m in margins],
            "top20": {"ids": [int(x) for x in top.indices], "logprobs": [sig(float(x)) for x in top.values]},
        })
        lasts.append(last.cpu())
        near = min(range(len(margins)), key=lambda k: margins[k])
        print(f"hf_parity: {name} prompt {i} ({len(ids)} tok): top-1 logprob {float(top.values[0]):.4f}, "
              f"greedy {tokens[:6]}..., smallest top-2 margin {margins[near]:.2e} at step {near}", flush=True)
    run_s = time.time() - t1

    control = None
    if a.control_dtype:
        del model
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
        low = load_model(a.model_dir, a.device, a.attn, getattr(torch, a.control_dtype))
        rows = control_run(low, prompts, entries, lasts, a.device, a.control_dtype)
        control = {"dtype": a.control_dtype, "attn_implementation": a.attn, "prompts": rows}
        print(f"RESULT hf-control {name} {a.control_dtype} summary: max logits rel err "
              f"{max(r['rel_err'] for r in rows):.2e}, greedy {sum(len(e['greedy']) - r['parted'] for e, r in zip(entries, rows))}"
              f"/{sum(len(e['greedy']) for e in entries)} match, largest float32 margin where they part "
              f"{max(r['max_margin_parted'] for r in rows):.2e}", flush=True)

    os.makedirs(a.out_dir, exist_ok=True)
    logits_file = None
    if not a.no_logits:
        logits_file = "logits.f32"
        np.ascontiguousarray(torch.stack(lasts).numpy(), dtype="<f4").tofile(os.path.join(a.out_dir, logits_file))
    golden = {
        "format": FORMAT,
        "model": model_summary(name, config, a.model_dir),
        "generator": {"tool": "tools/random-model.ts", "args": shlex.split(a.generator_args) if a.generator_args else None,
                      "sha256": hashes},
        "reference": {
            "library": "transformers", "transformers": transformers.__version__, "torch": torch.__version__,
            "device": device_name, "dtype": "float32", "tf32": False, "attn_implementation": a.attn,
            "kv_cache": "past_key_values, one prompt at a time", "load_seconds": round(load_s, 1), "run_seconds": round(run_s, 1),
        },
        "prompt_seed": a.seed,
        "steps": a.steps,
        "logits_file": logits_file,
        "logits_shape": [len(prompts), vocab],
        "control": control,
        "prompts": entries,
    }
    with open(os.path.join(a.out_dir, "golden.json"), "w") as f:
        # One field, then one prompt, per line keeps the file small and diffable.
        f.write("{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in golden.items() if k != "prompts"))
        f.write(' "prompts": [\n' + ",\n".join("  " + json.dumps(e, separators=(",", ":")) for e in entries) + "\n ]\n}\n")
    print(f"hf_parity: {name}: {len(prompts)} prompts x {a.steps} steps in {run_s:.1f} s -> {a.out_dir}", flush=True)


if __name__ == "__main__":
    main()
