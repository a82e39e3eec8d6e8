"""The passes of lantern's loss-reading stages in TransformerLens, on a Pythia-70M-shaped random
model (the shape and workloads of `cargo bench --bench losses`), tokens/s per batch of ROWS rows
of 400 tokens, best of 2 after a warm-up, torch on as many threads as lantern (THREADS, default 2).

    ~/.cache/tlvenv/bin/python scripts/tl_losses.py

Each workload is the study scripts' way of doing it: the clean and the ablated loss from two
forward passes (haystack_utils); get_context_effect's five passes (two of them caching the
downstream components, two patched from those caches); get_direct_effect's four; the entropy
intervention's clean pass and one pass per (neuron, value) with loss, entropy and the true
token's rank read off the logits (entropy_intervention.py).
"""
import os
import time

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

THREADS = int(os.environ.get("THREADS", "2"))
ROWS = int(os.environ.get("ROWS", "4"))
CTX = 400
torch.set_num_threads(THREADS)
torch.manual_seed(0)

cfg = HookedTransformerConfig(
    n_layers=6, d_model=512, n_heads=8, d_head=64, d_mlp=2048, d_vocab=50304, n_ctx=2048,
    act_fn="gelu", normalization_type="LN", positional_embedding_type="rotary", rotary_dim=16,
    rotary_adjacent_pairs=False, parallel_attn_mlp=True, original_architecture="GPTNeoXForCausalLM",
    device="cpu",
)
model = HookedTransformer(cfg)
model.eval()
tokens = torch.tensor([1 + (i * 7919 % 50000) for i in range(ROWS * CTX)]).reshape(ROWS, CTX)

HOOK, NEURON, ACTIVE, INACTIVE = "blocks.3.mlp.hook_post", 669, 3.82, -0.07
DOWNSTREAM = ["blocks.4.hook_attn_out", "blocks.4.hook_mlp_out", "blocks.5.hook_attn_out", "blocks.5.hook_mlp_out"]
FROZEN, PATCHED = DOWNSTREAM[:3], ["blocks.5.hook_mlp_out"]


def setter(value, neuron=NEURON):
    def hook(act, hook):
        act[:, :, neuron] = value
        return act
    return hook


def patcher(cache):
    def hook(act, hook):
        return cache[hook.name]
    return hook


def loss(fwd_hooks=()):
    return model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=list(fwd_hooks))


def cached_loss(fwd_hooks, names):
    with model.hooks(fwd_hooks=fwd_hooks):
        l, cache = model.run_with_cache(tokens, return_type="loss", loss_per_token=True,
                                        names_filter=lambda n: n in names)
    return l, cache


def ablation():
    loss()
    loss([(HOOK, setter(INACTIVE))])


def context_effect():
    loss()
    _, ablated = cached_loss([(HOOK, setter(INACTIVE))], DOWNSTREAM)
    _, activated = cached_loss([(HOOK, setter(ACTIVE))], DOWNSTREAM)
    loss([(HOOK, setter(ACTIVE))] + [(n, patcher(ablated)) for n in DOWNSTREAM])
    loss([(HOOK, setter(INACTIVE))] + [(n, patcher(activated)) for n in DOWNSTREAM])


def direct_effect():
    loss([(HOOK, setter(ACTIVE))])
    _, ablated = cached_loss([(HOOK, setter(INACTIVE))], FROZEN + PATCHED)
    _, direct = cached_loss([(HOOK, setter(ACTIVE))] + [(n, patcher(ablated)) for n in FROZEN], PATCHED)
    loss([(HOOK, setter(INACTIVE))] + [(n, patcher(ablated)) for n in FROZEN]
         + [(n, patcher(direct)) for n in PATCHED])


def metrics(fwd_hooks=()):
    scale = {}

    def keep_scale(act, hook):
        scale["s"] = act
    logits = model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks) + [("ln_final.hook_scale", keep_scale)])
    logits, target = logits[:, :-1], tokens[:, 1:]
    logp = logits.log_softmax(-1)
    l = -logp.gather(-1, target[..., None])[..., 0]
    p = logp.exp()
    ent = -(p * (p + 1e-8).log()).sum(-1)
    rank = (logits > logits.gather(-1, target[..., None])).sum(-1)
    return l.double().mean(), ent.double().mean(), (1 / (rank + 1)).double().mean(), scale["s"].double().mean()


def entropy():
    metrics()
    for layer, neuron in [(5, 1070), (5, 205)]:
        for c in [-0.17, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]:
            metrics([(f"blocks.{layer}.mlp.hook_post", setter(c, neuron))])


def best(f, reps=2):
    f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak():
    best_gflops = 0.0
    for m, k, n in [(ROWS * CTX, 512, 50304), (2048, 2048, 2048)]:
        a, b = torch.randn(m, k), torch.randn(k, n)
        s = best(lambda: a @ b, 10)
        g = 2 * m * k * n / s / 1e9
        print(f"  matmul {m}×{k}×{n}: {g:.1f} GFLOP/s")
        best_gflops = max(best_gflops, g)
    return best_gflops


print(f"TransformerLens, torch {torch.__version__}, Pythia-70M shape, {ROWS} rows × {CTX} tokens, {THREADS} threads")
peak = matmul_peak()
with torch.inference_mode():
    runs = [
        ("forward (logits)", 1, lambda: model(tokens)),
        ("ablation: clean + ablated loss", 2, ablation),
        ("direct_effect, mode = context (5 losses)", 5, context_effect),
        ("direct_effect, mode = direct (4 losses)", 4, direct_effect),
        ("entropy: 2 neurons × 8 values + clean (loss, entropy, rank)", 17, entropy),
    ]
    print(f"{'work per batch':<62} {'tokens/s':>10} {'passes/s × tok':>14}")
    for name, passes, f in runs:
        s = best(f)
        tps = ROWS * CTX / s
        print(f"{name:<62} {tps:>10.1f} {tps * passes:>14.1f}")
print(f"matmul peak this run: {peak:.1f} GFLOP/s")
