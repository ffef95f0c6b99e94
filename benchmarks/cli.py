"""``mobilebert-mobile bench-host`` (registered by mobilebert_mobile.cli; nothing heavy imported at load)."""
from __future__ import annotations

import argparse
import os
import shlex
import sys


def register(sub) -> None:
    s = sub.add_parser("bench-host", help="host latency of our TFLite models beside peers, with the compute floor",
                       description="Measure our TFLite models (every precision) beside PyTorch eager/compile, "
                                   "transformers, ONNX Runtime fp32/int8 and litert-torch on this machine, "
                                   "interleaved in one run; print the floor ratios and the scaling.")
    s.add_argument("--checkpoint", help="checkpoint directory (default: a random-weight preset)")
    s.add_argument("--preset", default="mobilebert", help="preset when no checkpoint is given (default mobilebert)")
    s.add_argument("--layers", type=int, help="override the preset's layer count")
    s.add_argument("--seq-len", type=int, default=128)
    s.add_argument("--batch", type=int, default=1)
    s.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    s.add_argument("--runs", type=int, default=100)
    s.add_argument("--warmup", type=int, default=10)
    s.add_argument("--rounds", type=int, default=5, help="interleaving rounds")
    s.add_argument("--precision", default="fp32,fp16,dynamic-int8,int8,int8-full",
                   help="our TFLite precisions to convert and measure (default: all five)")
    s.add_argument("--no-peers", action="store_true", help="skip litert-torch")
    s.add_argument("--peers-venv", help="venv with litert-torch (default: $MOBILEBERT_MOBILE_PEERS_VENV, else "
                                        ".venv-peers in the current directory; made by `bash scripts/setup.sh peers`)")
    s.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    s.add_argument("--no-scaling", action="store_true")
    s.add_argument("--scaling-only", action="store_true",
                   help="re-measure only the scaling into an existing results directory")
    s.add_argument("--quick", action="store_true",
                   help="CI smoke mode: 2-layer tiny model, seq 32, few runs, short scaling")
    s.add_argument("--out", default=None, help="results directory (default: benchmarks/results/host under the current directory)")
    s.add_argument("--keep-work", action="store_true", help="keep converted models under OUT/work")
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .host import BenchError, clean_work
    from .host import run as run_suite

    try:
        threads = tuple(int(t) for t in args.threads.split(","))
    except ValueError:
        raise BenchError(f"--threads must be comma-separated integers, got {args.threads!r}") from None
    if args.quick:
        kw = dict(preset="mobilebert-tiny" if args.preset == "mobilebert" else args.preset, layers=args.layers or 2,
                  seq_len=32 if args.seq_len == 128 else args.seq_len, runs=min(args.runs, 20),
                  warmup=min(args.warmup, 3), rounds=2, threads=threads if args.threads != "1,2" else (2,),
                  peers=False, compile_torch=False, seq_lens=(16, 32), batches=(1, 2), fidelity_n=8, quick=True)
    else:
        kw = dict(preset=args.preset, layers=args.layers, seq_len=args.seq_len, runs=args.runs, warmup=args.warmup,
                  rounds=args.rounds, threads=threads, peers=not args.no_peers, compile_torch=not args.no_compile,
                  peers_venv=args.peers_venv)
    if args.scaling_only:
        from .host import markdown, rerun_scaling

        out = args.out or os.path.join("benchmarks", "results", "host")
        res = rerun_scaling(out, checkpoint=args.checkpoint, preset=args.preset, layers=args.layers,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
        if not args.keep_work:
            clean_work(out)
        print(markdown(res))
        return 0
    out = args.out or os.path.join("benchmarks", "results", "quick" if args.quick else "host")
    command = "mobilebert-mobile " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    res = run_suite(checkpoint=args.checkpoint, batch=args.batch, out_dir=out, do_scaling=not args.no_scaling,
                    precisions=tuple(args.precision.split(",")), command=command,
                    log=lambda m: print(m, file=sys.stderr, flush=True), **kw)
    if not args.keep_work:
        clean_work(out)
    from .host import markdown

    print(markdown(res))
    print(f"results: {out}/results.json, results.md, latency.png" + (", scaling.png" if res.get("scaling") else ""))
    return 0
