"""A stand-in Android device for tests: speaks the adb device protocol on 127.0.0.1 so the real adb
client connects to it (``adb connect 127.0.0.1:PORT``) and the harness runs end to end with no phone."""
from .device import StandinDevice
from .profiles import Profile, pixel2, pixel4, pixel6

__all__ = ["StandinDevice", "Profile", "pixel2", "pixel4", "pixel6"]
