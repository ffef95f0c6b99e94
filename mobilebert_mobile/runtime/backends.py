"""Inference backends behind the Predictor. Each maps inputs by name and runs one fixed-size batch.

``litert`` needs only ai-edge-litert; ``onnxruntime`` only onnxruntime; ``torch`` imports torch
(and our PyTorch models) when it is chosen.
"""
from __future__ import annotations

import numpy as np
from ..errors import PredictorError  # noqa: F401  (re-exported: defined in errors.py)
from ..tasks import INPUT_NAMES, task_spec



def _check_inputs(where: str, found: dict[str, str]) -> None:
    """``found``: input name -> dtype name. Must be exactly our three int32 inputs."""
    if sorted(found) != sorted(INPUT_NAMES):
        raise PredictorError(f"{where}: model inputs are {sorted(found)}; expected {list(INPUT_NAMES)} "
                             f"(convert it with mobilebert-mobile convert)")
    bad = {k: v for k, v in found.items() if v != "int32"}
    if bad:
        raise PredictorError(f"{where}: inputs must be int32 (what Android tokenizers and MediaPipe feed), "
                             f"got {bad}")


class LiteRTBackend:
    """One LiteRT interpreter: NOT safe to share between threads (it owns its tensors)."""

    name = "litert"
    thread_safe = False

    def __init__(self, path: str, num_threads: int | None = None, use_xnnpack: bool = True):
        from .litert import interpreter

        self.interp = interpreter(path, num_threads=num_threads, use_xnnpack=use_xnnpack)
        sigs = self.interp.get_signature_list()
        if sigs:
            key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
            self.runner = self.interp.get_signature_runner(key)
            ins = self.runner.get_input_details()
            _check_inputs(path, {k: np.dtype(v["dtype"]).name for k, v in ins.items()})
            self.batch = int(ins["input_ids"]["shape"][0])
            self.seq_len = int(ins["input_ids"]["shape"][1])
            self.output_names = list(self.runner.get_output_details())
        else:  # no signature: tensor names
            self.runner = None
            self.interp.allocate_tensors()
            ins = {d["name"]: d for d in self.interp.get_input_details()}
            _check_inputs(path, {k: np.dtype(v["dtype"]).name for k, v in ins.items()})
            self._in = {k: v["index"] for k, v in ins.items()}
            self._out = {d["name"]: d["index"] for d in self.interp.get_output_details()}
            self.batch, self.seq_len = (int(x) for x in ins["input_ids"]["shape"])
            self.output_names = list(self._out)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.runner is not None:
            return {k: np.asarray(v) for k, v in self.runner(**feeds).items()}
        for k, idx in self._in.items():
            self.interp.set_tensor(idx, feeds[k])
        self.interp.invoke()
        return {k: self.interp.get_tensor(i).copy() for k, i in self._out.items()}


class OnnxRuntimeBackend:
    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run may be called concurrently (onnxruntime's documented contract)

    def __init__(self, path: str, num_threads: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        if num_threads:
            so.intra_op_num_threads = num_threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise PredictorError(f"cannot load {path} with onnxruntime: {e}") from None
        ins = {i.name: i for i in self.sess.get_inputs()}
        _check_inputs(path, {k: v.type.replace("tensor(", "").rstrip(")") for k, v in ins.items()})
        self.batch, self.seq_len = (int(x) for x in ins["input_ids"].shape)
        self.output_names = [o.name for o in self.sess.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.sess.run(self.output_names, feeds)))


class TorchBackend:
    """Runs the bundle's source checkpoint in PyTorch with the bundle's I/O contract."""

    name = "torch"
    thread_safe = True  # forward in inference mode reads the weights only

    def __init__(self, checkpoint: str, task: str, outputs: list[str], batch: int, seq_len: int,
                 mask_value: float | None, num_threads: int | None = None):
        import torch

        from ..modeling.loading import load_task_model

        if num_threads:
            torch.set_num_threads(num_threads)
        self.torch = torch
        self.model, self.task, _ = load_task_model(checkpoint, task, mask_value=mask_value)
        self.spec = task_spec(self.task)
        self.output_names = list(outputs)
        self.batch, self.seq_len = batch, seq_len

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self.torch
        with torch.inference_mode():
            out = self.model(torch.from_numpy(feeds["input_ids"]).long(),
                             torch.from_numpy(feeds["attention_mask"]).long(),
                             torch.from_numpy(feeds["token_type_ids"]).long())
        values = self.spec.extract(out, self.output_names, lambda v: torch.softmax(v, dim=-1))
        return {k: v.numpy() for k, v in values.items()}
