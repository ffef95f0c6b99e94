"""The benchmark_model output parser on verbatim samples of every known format."""
import os

import pytest
from mobilebert_mobile.android_harness.parse import ParseError, parse_output, parse_stats_line

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "benchmark_model")


def load(name):
    with open(os.path.join(FIX, name), encoding="utf-8") as fh:
        return fh.read()


def test_current_tflite_format():
    r = parse_output(load("tflite_current.txt"))
    assert r["format"] == "tflite"
    assert r["count"] == 50 and r["warmup_count"] == 7
    assert r["mean_ms"] == pytest.approx(79.732)
    assert r["min_ms"] == pytest.approx(77.385) and r["max_ms"] == pytest.approx(88.213)
    assert r["std_ms"] == pytest.approx(1.929)
    assert r["init_ms"] == pytest.approx(1007.529)
    assert r["first_inference_ms"] == pytest.approx(81.765)
    assert r["warmup_ms"] == pytest.approx(79.6303)
    assert r["peak_memory_mb"] == 52.7 and r["memory_init_mb"] == 12.3 and r["memory_overall_mb"] == 40.1
    assert r["model_size_mb"] == 24.6


def test_litert_percentiles():
    r = parse_output(load("litert_percentiles.txt"))
    assert r["format"] == "litert-percentiles"
    assert (r["p5_ms"], r["p50_ms"], r["p95_ms"]) == pytest.approx((202.103, 203.99, 210.544))
    assert r["count"] == 100 and r["mean_ms"] == pytest.approx(204.512)
    assert r["peak_memory_mb"] == 70.4


def test_older_ordering_and_no_stats_label():
    r = parse_output(load("older_ordering.txt"))
    assert r["count"] == 50 and r["min_ms"] == pytest.approx(305.002) and r["max_ms"] == pytest.approx(321.987)
    assert r["mean_ms"] == pytest.approx(310.221)
    assert r["warmup_ms"] == pytest.approx(313.54) and r["init_ms"] == pytest.approx(60.312)


def test_all_same():
    r = parse_output(load("all_same.txt"))
    assert r["count"] == 1 and r["min_ms"] == r["max_ms"] == pytest.approx(88.12) and r["std_ms"] == 0
    assert r["first_inference_ms"] == pytest.approx(91.234)
    assert parse_stats_line("count=4 curr=1234(all same)") == {
        "count": 4, "first_ms": 1.234, "curr_ms": 1.234, "min_ms": 1.234, "max_ms": 1.234, "mean_ms": 1.234,
        "std_ms": 0.0}


def test_count_zero_is_a_clear_error_and_zero_warmup_is_fine():
    with pytest.raises(ParseError, match="no measured iterations"):
        parse_output(load("count_zero.txt"))
    r = parse_output(load("warmup_count_zero.txt"))
    assert r["warmup_count"] == 0 and "warmup_ms" not in r and r["count"] == 20
    assert r["mean_ms"] == pytest.approx(79.1205)


def test_oldest_average_timings():
    r = parse_output(load("oldest_average_only.txt"))
    assert r["format"] == "average-timings"
    assert r["mean_ms"] == pytest.approx(95.8745) and r["warmup_ms"] == pytest.approx(98.765)
    assert r["init_ms"] == pytest.approx(55.02)
    r = parse_output(load("oldest_average.txt"))
    assert r["count"] == 50 and r["mean_ms"] == pytest.approx(95.874)
    assert r["first_inference_ms"] == pytest.approx(98.765)


def test_litert_results_block():
    r = parse_output(load("litert_results_block.txt"))
    assert r["format"] == "litert-results"
    assert r["mean_ms"] == 77.64 and r["count"] == 50 and r["min_ms"] == 75.1 and r["max_ms"] == 84.33
    assert r["std_ms"] == 1.92 and r["init_ms"] == 41.27 and r["first_inference_ms"] == 83.91
    assert r["warmup_ms"] == 80.02 and r["warmup_count"] == 5 and r["peak_memory_mb"] == 63.4


def test_memory_footprint_lines():
    r = parse_output(load("memory_footprint.txt"))
    assert (r["memory_init_mb"], r["memory_overall_mb"], r["peak_memory_mb"]) == (8.75, 19.5, 27.1)


def test_op_profiling_tables_do_not_disturb_the_timings():
    r = parse_output(load("op_profiling.txt"))
    assert r["count"] == 50 and r["mean_ms"] == pytest.approx(198.79) and r["warmup_count"] == 3
    prof = r["op_profile"]
    assert [x["node type"] for x in prof["Summary by node type"]] == ["FULLY_CONNECTED", "BATCH_MATMUL", "ADD"]
    assert prof["Summary by node type"][0]["avg ms"] == pytest.approx(120.117)
    assert prof["Run Order"][0]["node type"] == "GATHER"  # the per-run table, not the init one
    assert len(prof["Top by Computation Time"]) == 2


@pytest.mark.parametrize("text", ["", "Segmentation fault\n", load("crash.txt"), "hello\nworld=3\n"])
def test_unparseable_output(text):
    with pytest.raises(ParseError):
        parse_output(text)


def test_truncated_log_after_the_warmup_is_an_error_not_a_result():
    """A run killed after the warm-up stats line: that line is the warm-up's, not a measurement."""
    text = load("truncated_after_warmup.txt")
    assert "count=7" in text and "Inference timings" not in text
    with pytest.raises(ParseError, match="stops after the warm-up runs"):
        parse_output(text)
    # killed during the measured runs: the second announcement has no stats line
    more = text + "\nRunning benchmark for at least 50 iterations and at least 1 seconds but terminate if " \
                  "exceeding 150 seconds.\n"
    with pytest.raises(ParseError, match="stops during the measured runs"):
        parse_output(more)
