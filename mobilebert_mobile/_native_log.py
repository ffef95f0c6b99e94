"""Keep TensorFlow / absl / LiteRT C++ start-up lines out of normal command output.

Those libraries write to file descriptor 2 from C++ (``INFO: Created TensorFlow Lite XNNPACK
delegate for CPU.``, absl ``I0000 ...`` lines, ``cudart_stub`` and ``cuInit`` messages,
``fully_quantize: 0, inference_type: 6 ...``), which no Python setting silences. While the filter is
on, descriptor 2 is a pipe read by a thread that drops the lines known to be such noise and passes
every other line through unchanged; Python's own ``sys.stderr`` (progress bars, warnings, errors)
writes to the original stderr directly. Nothing is lost: the CLI's ``--verbose`` turns it off.
"""
from __future__ import annotations

import os
import re
import sys
import threading

NOISE = re.compile(
    r"^(INFO: (Created TensorFlow Lite|Initialized TensorFlow Lite|TfLite)"
    r"|[IW]\d{4} [\d:. ]+\s*\d+ [\w.]+:\d+\]"             # absl INFO / WARNING lines
    r"|E\d{4} [\d:. ]+\s*\d+ (cuda_|cudart_|cuda_platform|cuda_dnn|cuda_fft|cuda_blas)[\w.]*:\d+\]"
    r"|WARNING: All log messages before absl::InitializeLog"
    r"|fully_quantize: \d+, inference_type:"
    r"|To enable the following instructions:"
    r"|This TensorFlow binary is optimized"
    r"|.*cudart_stub\.cc"
    r"|.*Unable to register cu(DNN|FFT|BLAS) factory"
    r"|.*computation placer already registered"
    r"|.*TF-TRT Warning"
    r"|.*oneDNN custom operations are on"
    r"|.*Could not find cuda drivers"
    r"|.*failed call to cuInit"
    r"|.*TensorFlow binary was not compiled to use"
    r"|\s*$)")


class NativeLogFilter:
    """Context manager; a no-op when stderr is not the process's own (e.g. captured by a test)."""

    _active = False

    def __enter__(self) -> "NativeLogFilter":
        self.on = not NativeLogFilter._active and sys.stderr is sys.__stderr__ and _has_fd2()
        if not self.on:
            return self
        NativeLogFilter._active = True
        sys.stderr.flush()
        self._saved = os.dup(2)
        r, w = os.pipe()
        os.dup2(w, 2)
        os.close(w)
        self._py_stderr = sys.stderr
        sys.stderr = open(os.dup(self._saved), "w", buffering=1, encoding=self._py_stderr.encoding or "utf-8",
                          errors="backslashreplace", closefd=True)
        self._thread = threading.Thread(target=self._pump, args=(r,), name="native-log-filter", daemon=True)
        self._thread.start()
        return self

    def _pump(self, r: int) -> None:
        pending = b""
        with os.fdopen(r, "rb", buffering=0) as pipe:
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self._forward(line + b"\n")
        if pending:
            self._forward(pending)

    def _forward(self, line: bytes) -> None:
        if NOISE.match(line.decode("utf-8", "replace")):
            return
        try:
            os.write(self._saved, line)
        except OSError:
            pass

    def __exit__(self, *exc) -> None:
        if not self.on:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        sys.stderr.close()
        sys.stderr = self._py_stderr
        os.dup2(self._saved, 2)  # closes the pipe's write end: the thread sees EOF
        self._thread.join(timeout=5)
        os.close(self._saved)
        NativeLogFilter._active = False


def _has_fd2() -> bool:
    try:
        os.fstat(2)
        return True
    except OSError:
        return False
