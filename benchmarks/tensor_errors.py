"""Where an int8 model's error enters, tensor by tensor.

Every intermediate tensor of the int8 model, dequantized, is compared with the same tensor (same
name) of a float model converted from the same graph, on real inputs: relative error
``||q - f|| / ||f||`` over the real tokens, averaged over the inputs, and the increase at each op
(its error minus the largest error among its inputs). Both interpreters run without XNNPACK and keep
every tensor (``experimental_preserve_all_tensors``); a float op inside the int8 model is compared
too. This is what found all-MiniLM-L6-v2's LayerNorm variance computed from int8 squares (0.26 off
right after the embeddings). Used by ``int8_calibration --tensor-errors``.
"""
from __future__ import annotations

import numpy as np


def _interpreter(path: str, feeds: dict):
    """Builtin kernels (XNNPACK hides intermediates), every tensor kept, inputs matched to ``feeds``."""
    from mobilebert_mobile.converters.quantize import interpreter_inputs
    from mobilebert_mobile.runtime.litert import interpreter

    it = interpreter(path, use_xnnpack=False, preserve_all_tensors=True, allocate=True)
    shapes = {d["index"]: d["shape"] for d in it.get_input_details()}
    return it, [(i, key, dt, shapes[i]) for i, key, dt in interpreter_inputs(it, feeds)]


def _feed(interp, feeds: dict, s: int) -> None:
    it, inputs = interp
    for idx, key, dt, shape in inputs:
        it.set_tensor(idx, feeds[key][s:s + 1].reshape(shape).astype(dt))  # sample s
    it.invoke()


def _real_tokens(x: np.ndarray, real: int, seq: int) -> np.ndarray:
    """``x`` on the real tokens only: every axis of the sequence's length after the batch, except the
    last of a 2-D/3-D tensor (its channels, which may also number ``seq``: MobileBERT's 128). Scores
    [B, heads, S, S] keep real queries x real keys; padded positions are masked in the model."""
    for ax in range(1, x.ndim):
        if x.shape[ax] == seq and (x.ndim == 4 or ax < x.ndim - 1):
            x = np.take(x, np.arange(real), axis=ax)
    return x


def tensor_errors(float_path: str, int8_path: str, feeds: dict, *, samples: int = 8) -> list[dict]:
    """Rows in the int8 model's op order: op, tensor, dtype, relative error, increase at this op,
    int8 step over the float tensor's standard deviation (how coarse its scale is)."""
    fin, qin = _interpreter(float_path, feeds), _interpreter(int8_path, feeds)
    fi, qi = fin[0], qin[0]
    fidx = {t["name"]: t["index"] for t in fi.get_tensor_details()}
    qdet = {t["index"]: t for t in qi.get_tensor_details()}
    ops = qi._get_ops_details()
    mask = feeds.get("attention_mask")
    acc: dict[int, dict] = {}
    n = min(samples, next(iter(feeds.values())).shape[0])
    for s in range(n):
        _feed(fin, feeds, s)
        _feed(qin, feeds, s)
        real = int(mask[s].sum()) if mask is not None else None
        for op in ops:
            for o in op["outputs"]:
                t = qdet[o]
                if t["name"] not in fidx:
                    continue
                try:
                    f, q = fi.get_tensor(fidx[t["name"]]).astype(np.float64), qi.get_tensor(o)
                except ValueError:  # a tensor the interpreter did not keep
                    continue
                if f.shape != q.shape:
                    continue
                scale, zero = t["quantization"]
                q = (q.astype(np.float64) - zero) * scale if scale and q.dtype != np.float32 else q.astype(np.float64)
                if real is not None:
                    f, q = _real_tokens(f, real, mask.shape[1]), _real_tokens(q, real, mask.shape[1])
                row = acc.setdefault(o, {"op_index": op["index"], "op": op["op_name"], "tensor": t["name"],
                                         "dtype": np.dtype(t["dtype"]).name, "errors": [], "std": [],
                                         "scale": float(scale) if q.dtype != np.float32 and scale else 0.0,
                                         "inputs": [i for i in op["inputs"] if i >= 0],
                                         "per_token": f.ndim >= 2 and f.shape[-1] == 1})
                row["errors"].append(float(np.linalg.norm(q - f) / (np.linalg.norm(f) + 1e-12)))
                row["std"].append(float(f.std()))
    # a (DE)QUANTIZE output has no float twin: it carries its input's error (so a float op's increase is its own)
    alias = {o: op["inputs"][0] for op in ops if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") for o in op["outputs"]}

    def err_of(i: int) -> float | None:
        for _ in range(4):
            if i in acc:
                return float(np.mean(acc[i]["errors"]))
            if i not in alias:
                return None
            i = alias[i]
        return None

    rows = []
    for o, r in sorted(acc.items(), key=lambda kv: kv[1]["op_index"]):
        err = float(np.mean(r["errors"]))
        before = max((e for e in (err_of(i) for i in r["inputs"]) if e is not None), default=0.0)
        std = float(np.mean(r["std"]))
        rows.append({"op_index": r["op_index"], "op": r["op"], "tensor": r["tensor"], "dtype": r["dtype"],
                     "per_token_statistic": bool(r["per_token"]),
                     "rel_error": round(err, 5), "increase": round(err - before, 5),
                     "step_over_std": round(r["scale"] / std, 4) if r["scale"] and std > 0 else None})
    return rows


def markdown(rows: list[dict], top: int = 15) -> list[str]:
    """The ``top`` largest increases, then the error where the model ends. Per-token statistics
    ([tokens, 1]: a LayerNorm's mean, its RSQRT) are left out of the ranking: near zero, their
    relative error says little, and what they cost shows in the op that reads them."""
    lines = ["| op # | op | tensor | dtype | relative error | increase here | int8 step / std |", "|---|---|---|---|---|---|---|"]
    for r in sorted((r for r in rows if not r.get("per_token_statistic")), key=lambda r: -r["increase"])[:top]:
        lines.append(f"| {r['op_index']} | {r['op']} | `{r['tensor'][-60:]}` | {r['dtype']} | {r['rel_error']:.4f} | "
                     f"{r['increase']:+.4f} | {'' if r['step_over_std'] is None else r['step_over_std']} |")
    if rows:
        lines += ["", f"Last compared tensor: `{rows[-1]['tensor'][-60:]}`, relative error {rows[-1]['rel_error']:.4f}."]
    return lines
