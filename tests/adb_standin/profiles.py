"""Device profiles for the stand-in: the facts a phone reports, and scripted faults."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Profile:
    name: str = "flame"
    model: str = "Pixel 4"
    manufacturer: str = "Google"
    device: str = "flame"
    platform: str = "msmnile"
    soc_model: str = "SM8150"
    release: str = "11"
    sdk: int = 30
    abi: str = "arm64-v8a"
    # per-core cpuinfo_max_freq in kHz (Pixel 4: 4 little, 3 big, 1 prime)
    core_max_khz: list[int] = field(default_factory=lambda: [1785600] * 4 + [2419200] * 3 + [2841600])
    governor: str = "schedutil"
    free_kb: int = 50_000_000          # what df reports as available on /data
    battery_temp_tenths: int = 301
    hot_battery_temp_tenths: int = 452
    # ---- thermal script
    hot_for_s: float = 0.0             # thermal status `hot_status` for this long after start
    hot_status: int = 2
    heat_on_run: bool = False          # each benchmark run leaves the phone hot for `heat_cool_s`
    heat_cool_s: float = 0.6
    # ---- faults
    unauthorized: bool = False         # answer CNXN with AUTH: adb shows "unauthorized"
    never_answer: bool = False         # accept TCP but never answer CNXN: adb shows "offline"
    disconnect_on_run: int | None = None   # drop the connection when the Nth benchmark run starts
    push_fails_no_space: bool = False  # sync SEND answers FAIL "No space left on device"
    bench_crash: bool = False          # the benchmark dies with SIGSEGV (exit 139)
    bench_hang: bool = False           # the benchmark never returns
    bench_garbage: bool = False        # the benchmark prints nothing parseable
    bench_hang_after_warmup: bool = False  # prints the warm-up stats, then never returns
    gpu_available: bool = True         # False: the GPU delegate cannot start (no OpenCL / GLES 3.1)
    gpu_init_error: str = "Can not open OpenCL library on this device - dlopen failed: library \"libOpenCL.so\" not found"
    failing_delegates: tuple = ()      # delegate names (GetName(): NNAPI, GPU, XNNPACK) that fail to apply
    output_format: str = "tflite"      # tflite | litert-percentiles | older | results-block
    extra_props: dict = field(default_factory=dict)
    # the banner's features: without shell_v2 adb uses `shell:` (no exit codes), without stat_v2/ls_v2
    # it uses STAT/LIST
    features: str = "shell_v2,stat_v2,ls_v2,fixed_push_mkdir"

    def props(self) -> dict[str, str]:
        p = {
            "ro.product.model": self.model, "ro.product.manufacturer": self.manufacturer,
            "ro.product.name": self.name, "ro.product.device": self.device, "ro.product.brand": "google",
            "ro.board.platform": self.platform, "ro.soc.model": self.soc_model,
            "ro.soc.manufacturer": "Qualcomm", "ro.hardware": self.device,
            "ro.build.version.release": self.release, "ro.build.version.sdk": str(self.sdk),
            "ro.product.cpu.abi": self.abi,
            "ro.product.cpu.abilist": {"arm64-v8a": "arm64-v8a,armeabi-v7a,armeabi",
                                       "x86_64": "x86_64,x86"}.get(self.abi, self.abi),
            "ro.build.fingerprint": f"google/{self.name}/{self.device}:{self.release}/RQ3A.211001.001/"
                                    "7641976:user/release-keys",
            "ro.serialno": f"STANDIN{self.device.upper()}",
            "sys.boot_completed": "1",
        }
        p.update(self.extra_props)
        return p


def pixel4(**kw) -> Profile:
    return Profile(**kw)


def pixel6(**kw) -> Profile:
    """Tensor G1: 4x1803000 little (A55) + 2x2253000 mid (A76) + 2x2802000 prime (X1), Android 13."""
    base = dict(name="oriole", model="Pixel 6", device="oriole", platform="gs101", soc_model="Tensor",
                release="13", sdk=33, core_max_khz=[1803000] * 4 + [2253000] * 2 + [2802000] * 2)
    base.update(kw)
    return Profile(**base)


def pixel2(**kw) -> Profile:
    """A second phone: 4x1900800 little + 4x2457600 big (taskset mask f0), Android 10."""
    base = dict(name="walleye", model="Pixel 2", device="walleye", platform="msm8998", soc_model="MSM8998",
                release="10", sdk=29, core_max_khz=[1900800] * 4 + [2457600] * 4)
    base.update(kw)
    return Profile(**base)
