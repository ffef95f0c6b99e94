"""Android phone benchmarks over adb (installed as mobilebert_mobile.android_harness)."""
