#!/usr/bin/env python3
"""HF transformers reference for the GPU benchmark (Python only here, never at run time).

Runs the scenarios `generate` can: one request at a time (batch 1, 128 prompt /
256 new tokens) and one static batch (64 × 128 / 128, generate's own batching),
greedy, exactly the asked number of new tokens (min_new_tokens = max_new_tokens,
the EOS-ignoring run our server does with ignore_eos_token). Prompts are random
ids of the model's vocabulary below 512 (what our prompts draw from).

TTFT = time of generate(max_new_tokens=1) on the same input (prefill + first
token); TPOT = (e2e - TTFT) / (new - 1); output tok/s = batch × new / e2e. Each
figure is the median of --repeats timed runs after one warm-up.

    python3 bench/gpu/hf_baseline.py --model DIR [--device cuda|cpu] --out hf.json
"""
import argparse
import json
import platform
import statistics
import sys
import time


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="HF model folder (config.json + safetensors)")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--dtype", default="auto", help="auto (the checkpoint's), bfloat16, float16 or float32")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (sdpa, eager, flash_attention_2)")
    p.add_argument("--batch1-in", type=int, default=128)
    p.add_argument("--batch1-out", type=int, default=256)
    p.add_argument("--static-batch", type=int, default=64)
    p.add_argument("--static-in", type=int, default=128)
    p.add_argument("--static-out", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true", help="print the plan, import nothing")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    plan = {
        "batch1": {"batch": 1, "input": args.batch1_in, "output": args.batch1_out},
        f"static{args.static_batch}": {"batch": args.static_batch, "input": args.static_in, "output": args.static_out},
    }
    if args.dry_run:
        print(json.dumps({"model": args.model, "device": args.device, "plan": plan}, indent=2))
        return 0

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    torch.manual_seed(args.seed)
    dtype = "auto" if args.dtype == "auto" else getattr(torch, args.dtype)
    started = time.perf_counter()
    kwargs = {"attn_implementation": args.attn}
    # transformers 5 names it dtype, 4.x torch_dtype.
    kwargs["dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"] = dtype
    if args.device == "cuda" and torch.cuda.device_count() > 1:
        kwargs["device_map"] = "auto"  # the 70B shape: layers spread over the GPUs
    model = AutoModelForCausalLM.from_pretrained(args.model, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(args.device)
    model.eval()
    load_s = time.perf_counter() - started
    device = next(model.parameters()).device

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def timed(ids, new_tokens):
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )
        sync()
        assert out.shape[1] == ids.shape[1] + new_tokens, f"generated {out.shape[1] - ids.shape[1]} tokens, asked {new_tokens}"
        return time.perf_counter() - t0

    results = {}
    vocab_hi = min(512, model.config.vocab_size)
    for name, s in plan.items():
        ids = torch.randint(3, vocab_hi, (s["batch"], s["input"]), device=device)
        timed(ids, min(8, s["output"]))  # warm-up (kernels, allocator)
        ttft = statistics.median(timed(ids, 1) for _ in range(args.repeats))
        e2e = statistics.median(timed(ids, s["output"]) for _ in range(args.repeats))
        tokens = s["batch"] * s["output"]
        results[name] = {
            **s,
            "ttft_ms": ttft * 1000,
            "tpot_ms": (e2e - ttft) * 1000 / max(1, s["output"] - 1),
            "e2e_ms": e2e * 1000,
            "output_tokens_per_s": tokens / e2e,
            "total_tokens_per_s": s["batch"] * (s["input"] + s["output"]) / e2e,
            "repeats": args.repeats,
        }
        print(f"hf {name}: TTFT {ttft * 1000:.1f} ms, TPOT {results[name]['tpot_ms']:.2f} ms, {tokens / e2e:.1f} out tok/s", file=sys.stderr)

    info = {
        "tool": "hf_baseline",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([sys.executable, *sys.argv]),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "cpu",
        "gpus": torch.cuda.device_count() if args.device == "cuda" else 0,
        "dtype": str(next(model.parameters()).dtype),
        "attn": args.attn,
        "load_s": load_s,
        "scenarios": results,
    }
    with open(args.out, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
