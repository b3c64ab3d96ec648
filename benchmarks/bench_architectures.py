"""Kernel timings on architectures written elsewhere: ``auto`` against each engine and the torch.func
Jacobian contraction, in one run.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_architectures.py [--workloads bert,gpt2,t5,mha,encoder,encoder-mask,
        rnn,lstm,gru] [--N 256] [--kind pntk] [--repeats 2] [--max-seconds 90] [--threads 2]
        [--memory 2GB] [--methods auto,structured,jacobian,vp,torch.func] [--once]
        [--out benchmarks/out/architectures.json]

The models are those of the tests (``tests/architectures.py``: Hugging Face BERT-, GPT-2- and T5-style
classifiers built from configs, ``nn.MultiheadAttention``, ``nn.TransformerEncoder`` with and without a
padding mask, ``nn.RNN``/``LSTM``/``GRU`` heads) at benchmark sizes (hidden 64, two layers, 16 tokens).
``bert-mlm`` is a masked language model of that size with BERT's 30,522-word vocabulary, its head tied to
its input embedding, and the output two label words' logits at one position (prompt-based fine-tuning's
kernel; run it as its own workload), and ``bert-mlm-untied`` the same with a head of its own. ``bert-6x256`` is the 6-layer BERT-style encoder with hidden size 256 on 64 tokens (``--N 1024`` in the
run as its own workload: ``--workloads bert-6x256 --N 1024 --memory 2GB --methods auto,jacobian --once``; the
torch.func snippet holds all ``N·P`` numbers of its Jacobian at once, 3.3 GB already at ``N/4``). The peak
resident memory of the process (``ru_maxrss``) is recorded after each method; it never decreases, so the first
method's figure is its own.

Every method first runs at ``N/4``; a method whose time there, scaled by 16, exceeds ``--max-seconds`` in
two calls is skipped at ``N`` (shown as ``>`` the smaller prediction). The torch.func snippet (``vmap(jacrev)`` then ``einsum``,
as the tutorial writes it) fails where ``vmap`` cannot trace the model; that is reported, not hidden. Times
are medians after a warm-up, in float32, on whatever machine runs this; the ratios within one run are what
to read. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import platform
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import jacrev, vmap  # noqa: E402

import architectures as arch  # noqa: E402
import harness  # noqa: E402
import pntk  # noqa: E402
from harness import fmt_ratio, fmt_seconds  # noqa: E402
from pntk.kernels import Inputs, functional_model  # noqa: E402

METHODS = ("auto", "structured", "jacobian", "vp", "torch.func")
SEQ = 16


def workloads() -> dict[str, tuple[Any, Any, Any]]:
    """``name -> (build, inputs(n), output)`` at benchmark sizes."""

    def tokens(n, seq=SEQ, vocab=arch.VOCAB):
        return arch.token_inputs(n, 0, seq=seq, vocab=vocab)

    def t5_tokens(n):
        x = tokens(n)
        ids, mask = x["input_ids"].clamp(min=2) * x["attention_mask"], x["attention_mask"]
        ids[torch.arange(n), mask.sum(1) - 1] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def seq(n):
        return arch.sequence_inputs(n, 0, seq=SEQ, d=64)

    def masked(n):
        return seq(n)[0], tokens(n)["attention_mask"]

    def seeded(factory):
        def build():
            torch.manual_seed(0)
            return factory().eval()

        return build

    return {
        "bert": (lambda: arch.bert("eager", hidden=64, layers=2, seq=SEQ), tokens, "logits"),
        "gpt2": (lambda: arch.gpt2("eager", hidden=64, layers=2), tokens, "logits"),
        "t5": (lambda: arch.t5("eager", hidden=64), t5_tokens, "logits"),
        "mha": (seeded(lambda: arch.Attention(d=64)), seq, None),
        "encoder": (seeded(lambda: arch.Encoder(d=64)), seq, None),
        "encoder-mask": (seeded(lambda: arch.Encoder(d=64)), masked, None),
        "rnn": (seeded(lambda: arch.Recurrent(nn.RNN, d=64, hidden=64)), seq, None),
        "lstm": (seeded(lambda: arch.Recurrent(nn.LSTM, d=64, hidden=64)), seq, None),
        "gru": (seeded(lambda: arch.Recurrent(nn.GRU, d=64, hidden=64)), seq, None),
        "bert-6x256": (lambda: arch.bert("eager", hidden=256, layers=6, seq=64), lambda n: tokens(n, 64), "logits"),
        "bert-mlm": (bert_mlm, lambda n: tokens(n, vocab=MLM_VOCAB), pntk.LabelWords(ids=[2051, 2919], position=3)),
        "bert-mlm-untied": (
            lambda: bert_mlm(tied=False),
            lambda n: tokens(n, vocab=MLM_VOCAB),
            pntk.LabelWords(ids=[2051, 2919], position=3),
        ),
    }


#: BERT's vocabulary size: the tied input embedding and masked-LM head are a 30,522-row table.
MLM_VOCAB = 30_522


def bert_mlm(tied: bool = True) -> nn.Module:
    """A masked language model at benchmark size with BERT's vocabulary, its head tied to the embedding (or
    not)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(
        vocab_size=MLM_VOCAB,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(0)
    return BertForMaskedLM._from_config(config, attn_implementation="eager").eval()


def torch_func_pntk(model: nn.Module, x, output) -> torch.Tensor:
    """The pNTK by the torch.func tutorial's Jacobian contraction: ``vmap(jacrev(f_single))`` per sample,
    ``einsum`` per parameter."""
    X = Inputs.from_user(x)
    fm = functional_model(model, X[:2], output=output)
    O = fm.num_outputs

    def g_single(params, *sample):
        out = fm(params, Inputs(tuple(t.unsqueeze(0) for t in sample), X.keys))[0]
        return out.sum() / math.sqrt(O)

    jac = vmap(jacrev(g_single), in_dims=(None,) + (0,) * len(X.tensors))(fm.params, *X.tensors)
    return sum(torch.einsum("nf,mf->nm", j.flatten(1), j.flatten(1)) for j in jac.values())


def run(method: str, model: nn.Module, x, kind: str, output, memory: str | None = None) -> torch.Tensor:
    if method == "torch.func":
        return torch_func_pntk(model, x, output)
    return pntk.kernel(model, x, kind=kind, engine=method, output=output, memory=memory)


def _missing(note: str | None) -> str:
    """Why a ratio has no value: the method failed, was skipped, or ``auto`` has no time."""
    if note is None:
        return "—"
    return "fails" if note.startswith("fails") else "skipped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="bert,gpt2,t5,mha,encoder,encoder-mask,rnn,lstm,gru")
    parser.add_argument("--N", type=int, default=256)
    parser.add_argument("--kind", default="pntk", choices=["pntk"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory", default=None, help="the kernels' memory budget (default: pntk's plan)")
    parser.add_argument("--methods", default=",".join(METHODS), help="which of " + ", ".join(METHODS))
    parser.add_argument("--once", action="store_true", help="time one call at N, without a warm-up (long runs)")
    parser.add_argument("--out", default=str(ROOT / "out" / "architectures.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    table = workloads()
    methods = [m for m in METHODS if m in args.methods.split(",")]
    results: list[dict[str, Any]] = []
    rows = []
    load_start = harness.load_average()
    for name in args.workloads.split(","):
        build, inputs, output = table[name]
        model = build()
        P = sum(p.numel() for p in model.parameters())
        explained = pntk.explain(model, inputs(args.N), kind=args.kind, output=output, memory=args.memory)
        times: dict[str, float | None] = {}
        notes: dict[str, str] = {}
        peaks: dict[str, int] = {}  # the process's peak so far, after each method: the first method's is its own
        for method in methods:
            small = max(2, args.N // 4)
            try:
                x_small = inputs(small)
                predicted = math.inf
                # The first call also pays one-time costs, and a load spike can stall one call: a method is
                # skipped only if a second call predicts too long as well.
                for _ in range(2):
                    t0 = time.perf_counter()
                    run(method, model, x_small, args.kind, output, args.memory)
                    predicted = min(predicted, (time.perf_counter() - t0) * (args.N / small) ** 2)
                    if predicted <= args.max_seconds:
                        break
            except Exception as error:  # a method that fails is reported as failing, with its error
                times[method], notes[method] = None, f"fails: {type(error).__name__}: {str(error)[:80]}"
                continue
            if predicted > args.max_seconds:
                times[method], notes[method] = None, f"> {fmt_seconds(predicted)} (predicted, skipped)"
                continue
            timing = harness.time_calls(
                functools.partial(run, method, model, inputs(args.N), args.kind, output, args.memory),
                repeats=args.repeats,
                max_seconds=0.0 if args.once else args.max_seconds,  # 0: the first call is the only one
                first_compiles=False,
            )
            times[method] = timing.median_s
            peaks[method] = harness.peak_rss_bytes()
        working = {m: t for m, t in times.items() if t is not None and m not in ("auto", "torch.func")}
        fastest = min(working, key=working.get) if working else None
        auto, tf = times.get("auto"), times.get("torch.func")
        result = {
            "workload": name,
            "N": args.N,
            "kind": args.kind,
            "P": P,
            "auto_engine": explained.engine.value,
            "ruled_fraction": explained.ruled_fraction,
            "seconds": times,
            "notes": notes,
            "auto_over_fastest": auto / working[fastest] if auto and fastest else None,
            "torch_func_over_auto": tf / auto if auto and tf else None,
            "peak_rss_bytes": peaks,
        }
        results.append(result)
        rows.append(
            [
                name,
                f"{P:,}",
                f"{explained.engine.value} ({explained.ruled_fraction:.0%})",
                *(fmt_seconds(times[m]) if times[m] is not None else notes[m][:28] for m in methods),
                fmt_ratio(result["auto_over_fastest"]),
                fmt_ratio(result["torch_func_over_auto"]) if auto and tf else _missing(notes.get("torch.func")),
            ]
        )
        print(f"{name}: {result}", file=sys.stderr, flush=True)
    headers = ["model", "P", "auto → (ruled)", *methods, "auto / fastest", "torch.func / auto"]
    print(
        f"\n{args.kind} at N = {args.N}, float32, {args.threads} threads; load average {load_start} at the start, "
        f"{harness.load_average()} at the end\n"
    )
    print(harness.table(headers, rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "threads": args.threads,
        "memory": args.memory,
        "load_average": {"start": load_start, "end": harness.load_average()},
        "date": dt.datetime.now(dt.timezone.utc).isoformat(),
        "machine": platform.platform(),
        "torch": torch.__version__,
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
