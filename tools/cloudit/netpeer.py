"""The far end of a guest NIC, outside the guest: QEMU's `-netdev dgram` sends every Ethernet frame the guest
transmits as one UDP datagram to this peer, and delivers every datagram the peer sends as one received frame.
QEMU binds an ephemeral local port; the peer learns it from the guest's first frame.

exchange() is the peer side of test/qemu/dev's "net" mode (frames checked byte for byte both ways);
flood()/sink() drive the frames-per-second benchmark."""

import socket
import time

PEER_MAC = bytes([0x02, 0, 0, 0, 0, 0x01])
TYPE_GUEST, TYPE_PEER, TYPE_ECHO, TYPE_STOP = 0x88B5, 0x88B6, 0x88B7, 0x88B8
FRAMES = 32


def frame_length(seq):
    """The length of frame `seq` in both directions (test/qemu/dev/main.cpp has the same)."""
    return 60 if seq == 0 else 1514 if seq == 1 else 60 + (seq * 389) % (1514 - 60)


def guest_frame_ok(frame, seq, guest_mac):
    """Does `frame` carry what the guest's frame `seq` must?"""
    n = frame_length(seq)
    want = PEER_MAC + guest_mac + TYPE_GUEST.to_bytes(2, "big") + bytes([seq & 0xFF])
    want += bytes((seq * 7 + k) & 0xFF for k in range(15, n))
    return frame == want


def peer_frame(seq, guest_mac):
    n = frame_length(seq)
    head = guest_mac + PEER_MAC + TYPE_PEER.to_bytes(2, "big") + bytes([seq & 0xFF])
    return head + bytes((seq * 13 + k * 3) & 0xFF for k in range(15, n))


def echo_of(frame, guest_mac):
    """What the guest must answer to `frame`: addresses swapped, type 0x88b7, every payload byte inverted."""
    return PEER_MAC + guest_mac + TYPE_ECHO.to_bytes(2, "big") + bytes(b ^ 0xFF for b in frame[14:])


class Peer:
    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:  # past net.core.rmem_max (root): a burst of the guest's frames must not overflow it
            self.sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.qemu = None  # QEMU's address, from its first datagram

    def netdev(self, netdev_id):
        return ["-netdev", f"dgram,id={netdev_id},local.type=inet,local.host=127.0.0.1,local.port=0,"
                f"remote.type=inet,remote.host=127.0.0.1,remote.port={self.port}"]

    def recv(self, timeout):
        self.sock.settimeout(timeout)
        data, addr = self.sock.recvfrom(65536)
        self.qemu = addr
        return data

    def send(self, frame):
        self.sock.sendto(frame, self.qemu)

    def close(self):
        self.sock.close()

    def exchange(self, guest_mac, timeout=60.0):
        """The peer's side of the "net" mode. Returns a list of problems (empty: every byte checked)."""
        problems = []
        deadline = time.monotonic() + timeout
        got = 0
        try:
            while got < FRAMES:
                frame = self.recv(max(0.1, deadline - time.monotonic()))
                if len(frame) < 15 or int.from_bytes(frame[12:14], "big") != TYPE_GUEST:
                    continue  # something else the guest sent: not ours to judge
                if not guest_frame_ok(frame, got, guest_mac):
                    problems.append(f"guest frame {got} ({len(frame)} bytes, {frame_length(got)} expected) "
                                    f"differs: {frame[:20].hex()}...")
                got += 1
            for seq in range(FRAMES):
                out = peer_frame(seq, guest_mac)
                if seq < 4:
                    # Let the guest go to sleep first: these frames must wake it through the NIC's interrupt
                    # (the guest checks that some did), however slow or fast the guest is.
                    time.sleep(0.05)
                self.send(out)
                while True:
                    back = self.recv(max(0.1, deadline - time.monotonic()))
                    if len(back) >= 14 and int.from_bytes(back[12:14], "big") == TYPE_ECHO:
                        break
                if back != echo_of(out, guest_mac):
                    problems.append(f"echo of peer frame {seq} ({len(out)} bytes) differs ({len(back)} bytes)")
            self.send(guest_mac + PEER_MAC + TYPE_STOP.to_bytes(2, "big") + bytes(46))  # every echo came
        except socket.timeout:
            problems.append(f"the peer waited in vain: {got} of {FRAMES} guest frames, then no answer")
        except OSError as e:
            problems.append(f"peer socket: {e}")
        return problems


# ---- the frames-per-second benchmark -------------------------------------------------------------------

BENCH_TX_FRAMES = 20000


def small_frame(guest_mac, seq, ethertype=TYPE_PEER):
    return guest_mac + PEER_MAC + ethertype.to_bytes(2, "big") + seq.to_bytes(2, "big") + bytes(44)


def count_frames(peer, want, idle=2.0, timeout=120.0):
    """Counts the guest's frames until `want` came or none for `idle` seconds. Returns (count, seconds from
    the first to the last)."""
    n, first, last = 0, None, None
    deadline = time.monotonic() + timeout
    try:
        while n < want and time.monotonic() < deadline:
            frame = peer.recv(idle if first else timeout)
            if len(frame) >= 14 and int.from_bytes(frame[12:14], "big") == TYPE_GUEST:
                last = time.monotonic()
                first = first or last
                n += 1
    except socket.timeout:
        pass
    return n, (last - first) if first and last else 0.0


def echo_rate(send, recv, make, seconds=3.0, window=32):
    """Keeps `window` frames in flight, one more for each echo; echoes per second over `seconds`."""
    seq = 0
    for _ in range(window):
        send(make(seq))
        seq += 1
    n, start = 0, time.monotonic()
    end = start + seconds
    while time.monotonic() < end:
        try:
            back = recv(5.0)
        except socket.timeout:
            break
        if len(back) >= 14 and int.from_bytes(back[12:14], "big") == TYPE_ECHO:
            n += 1
            send(make(seq & 0xFFFF))
            seq += 1
    return n / (time.monotonic() - start)


def guest_bench(peer, guest_mac, seconds=3.0, window=32):
    """The peer's side of test/qemu/dev's netbench: the guest's transmit rate, then the echo rate."""
    n, span = count_frames(peer, BENCH_TX_FRAMES)
    tx = n / span if span > 0 else 0.0
    if peer.qemu is None:
        return {"tx_frames": n, "tx_fps": tx, "echo_fps": 0.0}
    echo = echo_rate(peer.send, peer.recv, lambda s: small_frame(guest_mac, s), seconds, window)
    peer.send(small_frame(guest_mac, 0, TYPE_STOP))
    return {"tx_frames": n, "tx_fps": tx, "echo_fps": echo}


HOST_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1], flush=True)
while True:
    f, a = s.recvfrom(65536)
    if f[12:14] == b"\x88\xb8":
        break
    if f[12:14] == b"\x88\xb5":
        for seq in range(int.from_bytes(f[14:16], "big")):
            s.sendto(f[6:12] + f[0:6] + f[12:14] + seq.to_bytes(2, "big") + bytes(44), a)
        continue
    s.sendto(f[6:12] + f[0:6] + b"\x88\xb7" + f[14:], a)
"""


def host_bench(seconds=3.0, window=32):
    """The same two measurements against a host process in the guest's place (Python, UDP over loopback):
    what the peer and the host's loopback manage without a guest or QEMU in between."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, "-c", HOST_ECHO], stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        peer = Peer()
        peer.qemu = ("127.0.0.1", port)
        mac = bytes([0x52, 0x54, 0, 0, 0, 1])
        # Ask the host process for BENCH_TX_FRAMES frames (the count rides where the sequence number goes).
        peer.send(mac + PEER_MAC + TYPE_GUEST.to_bytes(2, "big") + BENCH_TX_FRAMES.to_bytes(2, "big") + bytes(44))
        n, span = count_frames(peer, BENCH_TX_FRAMES)
        echo = echo_rate(peer.send, peer.recv, lambda s: small_frame(mac, s), seconds, window)
        peer.send(small_frame(mac, 0, TYPE_STOP))
        peer.close()
        return {"tx_frames": n, "tx_fps": n / span if span > 0 else 0.0, "echo_fps": echo}
    finally:
        proc.wait(10)

