"""MediaPipe Tasks metadata for our .tflite files, so Android's TextClassifier / TextEmbedder read
them with no code of ours: BERT tokenizer input (vocab attached), input names mapped to tensors,
labels attached for classifiers.

mediapipe 1.2.2's writer imports ``_pywrap_metadata_version``, which its wheel no longer ships;
that module's only job is the metadata's minimum parser version ("1.1.0" for this metadata), so
a stand-in is registered before import (the mediapipe 1.2.2 wheel, checked when this was written).
"""
from __future__ import annotations

import sys
import types

MIN_PARSER_VERSION = "1.1.0"


def _writer_modules():
    name = "mediapipe.tasks.cc.metadata.python._pywrap_metadata_version"
    if name not in sys.modules:
        try:
            import mediapipe.tasks.cc.metadata.python._pywrap_metadata_version  # noqa: F401
        except ImportError:
            import mediapipe.tasks

            parent = mediapipe.tasks
            parts = name.split(".")
            for i in range(3, len(parts)):  # stand-ins for the missing packages down to the module
                full = ".".join(parts[:i + 1])
                mod = sys.modules.get(full)
                if mod is None:
                    mod = types.ModuleType(full)
                    mod.__path__ = []  # a package
                    sys.modules[full] = mod
                setattr(parent, parts[i], mod)
                parent = mod
            parent.GetMinimumMetadataParserVersion = lambda *_a, **_k: MIN_PARSER_VERSION
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer, text_classifier

    return metadata_writer, text_classifier


def _inline_buffers(model_bytes: bytes) -> bytes:
    """Re-serialise with every buffer inside the flatbuffer (buffers stored after it are lost when
    the metadata populator re-packs the file)."""
    from tensorflow.lite.tools import flatbuffer_utils

    m = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    if not any(getattr(b, "offset", 0) for b in m.buffers or []):
        return model_bytes
    return bytes(flatbuffer_utils.convert_object_to_bytearray(m))


def attach_metadata(tflite_bytes: bytes, *, task: str, vocab_path: str, labels: list[str] | None = None,
                    ids_name: str = "input_ids", mask_name: str = "attention_mask",
                    segment_name: str = "token_type_ids", name: str = "MobileBERT",
                    description: str = "Converted by mobilebert-mobile") -> bytes:
    """Return the model with MediaPipe metadata (classification or embedding); attach it last."""
    mw, tc = _writer_modules()
    buf = bytearray(_inline_buffers(tflite_bytes))
    tokenizer = mw.BertTokenizer(vocab_path)
    if task == "classification":
        if not labels:
            raise ValueError("a classifier needs labels for its metadata")
        writer = tc.MetadataWriter.create_for_bert_model(buf, tokenizer, mw.Labels().add(list(labels)),
                                                         ids_name=ids_name, mask_name=mask_name,
                                                         segment_name=segment_name)
    elif task == "embedding":
        writer = (mw.MetadataWriter.create(buf).add_general_info(name, description)
                  .add_bert_text_input(tokenizer, ids_name, mask_name, segment_name)
                  .add_feature_output(name="embedding"))
    else:
        raise ValueError(f"MediaPipe metadata covers classification and embedding models, not {task!r}")
    model, _ = writer.populate()
    del writer  # the writer prints a spurious traceback at exit unless deleted
    return bytes(model)
