"""Device facts over adb: model, SoC, Android version, ABI, cores and their frequencies, thermal state."""
from __future__ import annotations

import re

from .adb import Adb, DeviceError, sh_join

CPU = "/sys/devices/system/cpu"
STATE_HELP = {
    "unauthorized": "unlock the phone and accept the \"Allow USB debugging\" prompt",
    "offline": "reconnect the cable (or `adb reconnect`); the device does not answer",
    "no-permissions": "the udev rules do not let this user open the device (see `adb devices` hints)",
}


def parse_getprop(text: str) -> dict[str, str]:
    return dict(re.findall(r"^\[([^\]]+)\]: \[(.*)\]\s*$", text, re.M))


def parse_grep_h(text: str) -> dict[str, str]:
    """``grep -H . FILES`` output ``path:value`` -> {path: value}."""
    out = {}
    for line in text.splitlines():
        path, sep, val = line.partition(":")
        if sep:
            out[path] = val.strip()
    return out


def big_cores(max_khz: list[int | None]) -> list[int]:
    """Cores faster than the slowest cluster (all cores when they are all alike)."""
    known = [f for f in max_khz if f]
    if not known:
        return list(range(len(max_khz)))
    lo = min(known)
    big = [i for i, f in enumerate(max_khz) if f and f > lo]
    return big or [i for i, f in enumerate(max_khz) if f]


def cores_for_threads(max_khz: list[int | None], threads: int) -> list[int]:
    """The ``threads`` fastest cores: highest cpuinfo_max_freq first, ties to the later cluster (higher core
    number; Android numbers clusters little to big). 1 or 2 threads on a 4+2+2 phone get the prime cores only
    (mask 80 / c0), not all big cores; more threads than cores get every core. Sorted by core number."""
    n = len(max_khz)
    if threads < 1 or threads >= n:
        return list(range(n))
    order = sorted(range(n), key=lambda i: (-(max_khz[i] or 0), -i))
    return sorted(order[:threads])


def cpu_mask(cores: list[int]) -> str:
    return format(sum(1 << c for c in cores), "x")


def read_cpu_files(adb: Adb, serial: str, n: int, names: tuple[str, ...], timeout: float = 30) -> dict:
    files = [f"{CPU}/cpu{i}/cpufreq/{name}" for i in range(n) for name in names]
    res = adb.shell(serial, sh_join(["grep", "-H", "."] + files), timeout=timeout, what="reading cpufreq")
    vals = parse_grep_h(res.stdout)
    out: dict[str, list] = {}
    for name in names:
        row = []
        for i in range(n):
            v = vals.get(f"{CPU}/cpu{i}/cpufreq/{name}")
            row.append(int(v) if v is not None and v.isdigit() else v)
        out[name] = row
    return out


def device_facts(adb: Adb, serial: str, timeout: float = 30) -> dict:
    props = parse_getprop(adb.shell(serial, "getprop", timeout=timeout, what="getprop", check=True).stdout)
    if not props:
        raise DeviceError(serial, "getprop returned nothing; is this an Android device?")
    cpuinfo = adb.shell(serial, sh_join(["cat", "/proc/cpuinfo"]), timeout=timeout, what="reading /proc/cpuinfo")
    n = len(re.findall(r"^processor\s*:", cpuinfo.stdout, re.M))
    if n == 0:
        poss = adb.shell(serial, sh_join(["cat", f"{CPU}/possible"]), timeout=timeout).stdout.strip()
        m = re.fullmatch(r"0-(\d+)", poss)
        n = int(m.group(1)) + 1 if m else 1
    freqs = read_cpu_files(adb, serial, n, ("cpuinfo_max_freq",), timeout)["cpuinfo_max_freq"]
    big = big_cores(freqs)
    hw = re.search(r"^Hardware\s*:\s*(.+)$", cpuinfo.stdout, re.M)
    abi = props.get("ro.product.cpu.abi", "")
    return {
        "serial": serial, "state": "device",
        "model": props.get("ro.product.model", ""), "manufacturer": props.get("ro.product.manufacturer", ""),
        "device": props.get("ro.product.device", ""),
        "soc": props.get("ro.soc.model") or (hw.group(1).strip() if hw else ""),
        "platform": props.get("ro.board.platform", ""),
        "android": props.get("ro.build.version.release", ""),
        "sdk": int(props["ro.build.version.sdk"]) if props.get("ro.build.version.sdk", "").isdigit() else None,
        "abi": abi, "abilist": [a for a in props.get("ro.product.cpu.abilist", abi).split(",") if a],
        "fingerprint": props.get("ro.build.fingerprint", ""),
        "cores": n, "max_freq_khz": freqs, "big_cores": big, "taskset_mask": cpu_mask(big),
    }


def list_devices(adb: Adb, *, facts: bool = True) -> list[dict]:
    """Attached devices; for each usable one its facts (an ``error`` entry when reading them failed)."""
    out = []
    for d in adb.devices():
        row = {"serial": d["serial"], "state": d["state"], "model": d.get("model", "")}
        if d["state"] == "device" and facts:
            try:
                row.update(device_facts(adb, d["serial"]))
            except DeviceError as e:
                row["error"] = e.message
        elif d["state"] in STATE_HELP:
            row["hint"] = STATE_HELP[d["state"]]
        out.append(row)
    return out


def parse_thermal(text: str) -> dict:
    m = re.search(r"Thermal Status:\s*(\d+)", text)
    temps = []
    section = text.split("Current temperatures from HAL:", 1)
    src = section[1] if len(section) > 1 else text
    for tm in re.finditer(r"Temperature\{mValue=([-\d.]+), mType=(-?\d+), mName=([^,]+), mStatus=(-?\d+)\}", src):
        temps.append({"value": float(tm.group(1)), "type": int(tm.group(2)), "name": tm.group(3),
                      "status": int(tm.group(4))})
    cpu = [t["value"] for t in temps if t["type"] == 0]
    return {"status": int(m.group(1)) if m else None, "cpu_max_c": max(cpu) if cpu else None,
            "temperatures": temps[:16]}


def thermal_state(adb: Adb, serial: str, timeout: float = 30) -> dict:
    """Thermal status (0 none .. 4 critical, None when the service is missing) and battery temperature."""
    th = parse_thermal(adb.shell(serial, sh_join(["dumpsys", "thermalservice"]), timeout=timeout,
                                 what="dumpsys thermalservice").stdout)
    bat = adb.shell(serial, sh_join(["dumpsys", "battery"]), timeout=timeout, what="dumpsys battery").stdout
    m = re.search(r"^\s*temperature:\s*(-?\d+)", bat, re.M)
    return {"status": th["status"], "battery_c": int(m.group(1)) / 10 if m else None, "cpu_max_c": th["cpu_max_c"]}


def cpu_state(adb: Adb, serial: str, n: int, timeout: float = 30) -> dict:
    f = read_cpu_files(adb, serial, n, ("scaling_governor", "scaling_cur_freq"), timeout)
    return {"governor": f["scaling_governor"], "cur_freq_khz": f["scaling_cur_freq"]}


def free_kb(adb: Adb, serial: str, path: str, timeout: float = 30) -> int | None:
    """Available KiB on the file system holding ``path`` (``df -k``), None when df cannot tell."""
    res = adb.shell(serial, sh_join(["df", "-k", path]), timeout=timeout, what="df")
    lines = [ln.split() for ln in res.stdout.splitlines() if ln.strip()]
    if len(lines) < 2:
        return None
    header = [h.lower() for h in lines[0]]
    row = lines[-1]
    col = header.index("available") if "available" in header else 3
    try:
        return int(row[col])
    except (IndexError, ValueError):
        return None


def freq_summary(max_khz: list) -> str:
    """``4x1.79 3x2.42 1x2.84 GHz`` (runs of equal cores)."""
    parts, prev, cnt = [], None, 0
    for f in max_khz + [object()]:
        if f == prev:
            cnt += 1
            continue
        if prev is not None:
            parts.append(f"{cnt}x{prev / 1e6:.2f}" if isinstance(prev, int) else f"{cnt}x?")
        prev, cnt = f, 1
    return " ".join(parts) + " GHz" if parts else "?"


def core_ranges(cores: list[int]) -> str:
    out, start, prev = [], None, None
    for c in cores + [None]:
        if start is None:
            start = prev = c
        elif c is not None and c == prev + 1:
            prev = c
        else:
            out.append(f"{start}-{prev}" if prev != start else f"{start}")
            start = prev = c
    return ",".join(out)
