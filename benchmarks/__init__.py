"""Host benchmarks (installed as mobilebert_mobile.benchmarks)."""
