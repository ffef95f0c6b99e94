"""The adb device side of the wire protocol (AOSP protocol.txt, SYNC.TXT, SERVICES.TXT), enough for the
real adb 29 client: CNXN/AUTH handshake, OPEN/OKAY/WRTE/CLSE streams with flow control, ``shell:`` and
``shell,v2`` (exit codes), and the ``sync:`` service (STAT, STA2, LST2, LIST, LIS2, SEND, RECV, QUIT).
"""
from __future__ import annotations

import os
import queue
import socket
import struct
import threading
import time

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
VERSION = 0x01000001
MAXDATA = 1 << 20
SYNC_DATA_MAX = 64 * 1024
NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE"}


def pack(cmd: int, arg0: int, arg1: int, data: bytes = b"") -> bytes:
    # checksum: additive byte sum of the payload (adb 29 ignores it); magic = command ^ 0xffffffff
    return struct.pack("<6I", cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF, cmd ^ 0xFFFFFFFF) + data


class Closed(Exception):
    pass


class Stream:
    """One adb stream on the device side: ``write`` waits for the host's OKAY between WRTEs."""

    def __init__(self, conn: "Connection", local_id: int, remote_id: int, service: str):
        self.conn, self.local_id, self.remote_id, self.service = conn, local_id, remote_id, service
        self.inbox: queue.Queue = queue.Queue()
        self.can_write = threading.Event()
        self.can_write.set()
        self.closed = threading.Event()
        self.wlock = threading.Lock()
        self._buf = b""

    # ---- host -> device
    def _deliver(self, data: bytes) -> None:
        self.inbox.put(data)

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.inbox.get()
            if chunk is None:
                raise Closed()
            self._buf += chunk
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    # ---- device -> host
    def write(self, data: bytes) -> None:
        with self.wlock:  # a packet of one writer never interleaves with another's
            mv = memoryview(data)
            step = max(1, self.conn.maxdata)
            for i in range(0, len(data), step):
                while not self.can_write.wait(0.2):
                    if self.closed.is_set() or self.conn.dead.is_set():
                        raise Closed()
                if self.closed.is_set():
                    raise Closed()
                self.can_write.clear()
                self.conn.send(A_WRTE, self.local_id, self.remote_id, bytes(mv[i:i + step]))

    def close(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            self.can_write.set()
            try:
                self.conn.send(A_CLSE, self.local_id, self.remote_id)
            except OSError:
                pass
        self.conn.streams.pop(self.local_id, None)

    def _host_closed(self) -> None:
        self.closed.set()
        self.can_write.set()
        self.inbox.put(None)


class Connection:
    def __init__(self, device, sock: socket.socket):
        self.device, self.sock = device, sock
        self.slock = threading.Lock()
        self.streams: dict[int, Stream] = {}
        self.next_id = 1
        self.maxdata = MAXDATA
        self.online = False
        self.dead = threading.Event()

    def send(self, cmd: int, a0: int, a1: int, data: bytes = b"") -> None:
        with self.slock:
            self.sock.sendall(pack(cmd, a0, a1, data))

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return buf

    def serve(self) -> None:
        try:
            while True:
                cmd, a0, a1, length, _check, magic = struct.unpack("<6I", self._recv_exact(24))
                if magic != cmd ^ 0xFFFFFFFF:
                    raise Closed()
                data = self._recv_exact(length) if length else b""
                self._dispatch(cmd, a0, a1, data)
        except (Closed, OSError):
            pass
        finally:
            self.dead.set()
            for s in list(self.streams.values()):
                s._host_closed()
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, cmd: int, a0: int, a1: int, data: bytes) -> None:
        dev = self.device
        if cmd == A_CNXN:
            self.maxdata = min(a1 or MAXDATA, MAXDATA)
            if dev.profile.unauthorized:
                self.send(A_AUTH, 1, 0, os.urandom(20))  # TOKEN: the host must be approved on the phone
                return
            if dev.profile.never_answer:
                return  # stays "offline"/"connecting" for the host
            self.online = True
            self.send(A_CNXN, VERSION, MAXDATA, dev.banner().encode())
        elif cmd == A_AUTH:
            if a0 == 2:  # SIGNATURE: not accepted, ask again; the host then offers its public key
                self.send(A_AUTH, 1, 0, os.urandom(20))
            # RSAPUBLICKEY (3): the user never taps "allow"
        elif cmd == A_OPEN:
            if not self.online:
                return
            service = data.rstrip(b"\0").decode("utf-8", "replace")
            handler = dev.service_handler(service)
            if handler is None:
                self.send(A_CLSE, 0, a0)
                return
            lid = self.next_id
            self.next_id += 1
            st = Stream(self, lid, a0, service)
            self.streams[lid] = st
            self.send(A_OKAY, lid, a0)
            threading.Thread(target=self._run_service, args=(handler, st), daemon=True,
                             name=f"standin-{service[:20]}").start()
        elif cmd == A_WRTE:
            st = self.streams.get(a1)
            if st is None:
                self.send(A_CLSE, 0, a0)
                return
            st._deliver(data)
            self.send(A_OKAY, a1, a0)
        elif cmd == A_OKAY:
            st = self.streams.get(a1)
            if st is not None:
                st.can_write.set()
        elif cmd == A_CLSE:
            st = self.streams.pop(a1, None)
            if st is not None:
                st._host_closed()

    def _run_service(self, handler, st: Stream) -> None:
        try:
            handler(st)
        except (Closed, OSError):
            pass
        finally:
            st.close()


# --------------------------------------------------------------------------- services
def shell_service(device, st: Stream) -> None:
    head, _, cmd = st.service.partition(":")
    v2 = "v2" in head.split(",")
    lock = threading.Lock()

    def out(b: bytes, ident: int = 1) -> None:
        if not b:
            return
        with lock:
            st.write(struct.pack("<BI", ident, len(b)) + b if v2 else b)

    if v2:
        threading.Thread(target=_drain_stdin, args=(st,), daemon=True).start()
    rc = device.shell.run(cmd, out=lambda b: out(b, 1), err=lambda b: out(b, 2), cancel=st.closed)
    if v2:
        with lock:
            st.write(struct.pack("<BI", 3, 1) + bytes([rc & 0xFF]))


def _drain_stdin(st: Stream) -> None:
    # shell v2 stdin packets (0 stdin, 4 close-stdin, 5 window size): read and ignore them
    try:
        while True:
            hdr = st.read_exact(5)
            ident, n = struct.unpack("<BI", hdr)
            st.read_exact(n)
    except Closed:
        pass


def _stat_v2(ident: bytes, st_: os.stat_result | None, errno_: int = 0) -> bytes:
    if st_ is None:
        return ident + struct.pack("<IQQIIIIQqqq", errno_, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    return ident + struct.pack("<IQQIIIIQqqq", 0, st_.st_dev, st_.st_ino, st_.st_mode, st_.st_nlink, 2000, 2000,
                               st_.st_size, int(st_.st_atime), int(st_.st_mtime), int(st_.st_ctime))


def sync_service(device, st: Stream) -> None:
    fs = device.fs
    while True:
        try:
            ident, n = struct.unpack("<4sI", st.read_exact(8))
        except Closed:
            return
        if ident == b"QUIT":
            return
        path = st.read_exact(n).decode("utf-8", "replace") if n else ""
        device.log_sync(ident.decode("ascii", "replace"), path)
        if ident == b"STAT":
            s = fs.stat(path)
            st.write(b"STAT" + (struct.pack("<III", s.st_mode, s.st_size & 0xFFFFFFFF, int(s.st_mtime))
                                if s else struct.pack("<III", 0, 0, 0)))
        elif ident in (b"STA2", b"LST2"):
            s = fs.stat(path, follow=ident == b"STA2")
            st.write(_stat_v2(ident, s, 0 if s else 2))
        elif ident in (b"LIST", b"LIS2"):
            for name, s in fs.listdir_stat(path):
                nb = name.encode()
                if ident == b"LIST":
                    st.write(b"DENT" + struct.pack("<IIII", s.st_mode, s.st_size & 0xFFFFFFFF, int(s.st_mtime),
                                                   len(nb)) + nb)
                else:
                    st.write(_stat_v2(b"DNT2", s) + struct.pack("<I", len(nb)) + nb)
            st.write(b"DONE" + bytes(16 if ident == b"LIST" else 72))
        elif ident == b"SEND":
            _sync_send(device, st, path)
        elif ident == b"RECV":
            data = fs.read_bytes(path)
            if data is None:
                _fail(st, "open failed: No such file or directory")
                continue
            for i in range(0, len(data), SYNC_DATA_MAX):
                chunk = data[i:i + SYNC_DATA_MAX]
                st.write(b"DATA" + struct.pack("<I", len(chunk)) + chunk)
            st.write(b"DONE" + struct.pack("<I", 0))
        else:
            _fail(st, f"unknown sync request {ident!r}")
            return


def _fail(st: Stream, msg: str) -> None:
    b = msg.encode()
    st.write(b"FAIL" + struct.pack("<I", len(b)) + b)


def _sync_send(device, st: Stream, spec: str) -> None:
    path, _, mode_s = spec.rpartition(",")
    if not path:
        path, mode_s = spec, "33188"
    try:
        mode = int(mode_s)
    except ValueError:
        mode = 0o100644
    chunks = []
    size = 0
    while True:
        ident, n = struct.unpack("<4sI", st.read_exact(8))
        if ident == b"DATA":
            chunk = st.read_exact(n)
            chunks.append(chunk)
            size += len(chunk)
        elif ident == b"DONE":
            mtime = n
            break
        else:
            _fail(st, f"unexpected {ident!r} in SEND")
            return
    err = device.fs.write_pushed(path, b"".join(chunks), mode, mtime)
    if err:
        _fail(st, err)
    else:
        st.write(b"OKAY" + struct.pack("<I", 0))


# --------------------------------------------------------------------------- listener
class Listener:
    def __init__(self, device, port: int = 0):
        self.device = device
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[Connection] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True, name=f"standin-{self.port}")
        self.thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self.sock.accept()
            except OSError:
                return
            if self._stop.is_set():
                sock.close()
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Connection(self.device, sock)
            self.conns.append(conn)
            threading.Thread(target=conn.serve, daemon=True).start()

    def close(self) -> None:
        """Stop accepting and drop every live connection (a pulled cable)."""
        self._stop.set()
        _drop(self.sock)
        for c in self.conns:
            _drop(c.sock)
        deadline = time.time() + 2
        while time.time() < deadline and not all(c.dead.is_set() for c in self.conns):
            time.sleep(0.01)


__all__ = ["Listener", "shell_service", "sync_service", "pack"]


def _drop(sock: socket.socket) -> None:
    """Shut down and close a socket, ignoring one that is already gone."""
    for step in (lambda: sock.shutdown(socket.SHUT_RDWR), sock.close):
        try:
            step()
        except OSError:
            pass
