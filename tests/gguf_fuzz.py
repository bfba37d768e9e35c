"""Seeded random mutations of a GGUF file's header, each parsed with fastcpu.gguf and every tensor's
bytes touched. Run as a child process by test_gguf.py so that a crash shows up as a signal.

usage: gguf_fuzz.py SAMPLE.gguf N SEED   -> prints "summary OK BAD", exit 1 on any other exception
"""
import os
import random
import struct
import sys
import tempfile
import traceback

from fastcpu.gguf import GGUFFile, ModelFormatError

EXTREMES = [0, 1, 2, 3, 31, 32, 63, 64, 255, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
            2 ** 62, 2 ** 63 - 1, 2 ** 63, 2 ** 64 - 1]


def mutate(rng: random.Random, data: bytes, header_end: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        hi = min(header_end, len(b)) or 1
        pos = rng.randrange(hi)
        op = rng.randrange(7)
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos] = rng.randrange(256)
        elif op == 2 and pos + 4 <= len(b):
            struct.pack_into("<I", b, pos, rng.choice(EXTREMES) & 0xFFFFFFFF)
        elif op == 3 and pos + 8 <= len(b):
            struct.pack_into("<Q", b, pos, rng.choice(EXTREMES + [rng.getrandbits(64)]))
        elif op == 4:
            del b[pos:pos + rng.randrange(1, 16)]
        elif op == 5:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        else:
            b = b[:pos]
    return bytes(b)


def touch(g: GGUFFile, size: int) -> int:
    """Reads everything an accepted file offers and checks the reader's promises about it."""
    s = 0
    for k, v in g.metadata.items():
        s += len(k) + (len(v) if isinstance(v, (str, list)) else 0)
    a = g.alignment
    assert a > 0 and a & (a - 1) == 0, a
    assert g.data_offset % a == 0
    end = 0
    for t in sorted(g.tensors.values(), key=lambda t: t.offset):
        assert t.offset >= max(end, g.data_offset) and t.offset + t.nbytes <= size, t
        assert (t.offset - g.data_offset) % a == 0, t
        assert 1 <= len(t.ne) <= 4 and all(d > 0 for d in t.ne) and t.shape == t.ne[::-1], t
        end = t.offset + t.nbytes
        r = g.raw(t.name)
        assert r.nbytes == t.nbytes and r.shape[0] == t.rows, t
        s += int(r.sum())
        if t.qtype_name in ("F32", "F16", "BF16"):
            s += g.array(t.name).size
    return s


def main() -> int:
    path, n, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    data = open(path, "rb").read()
    with GGUFFile(path) as g:
        header_end = g.data_offset
    rng = random.Random(seed)
    ok = bad = 0
    fd, tmp = tempfile.mkstemp(suffix=".gguf")
    os.close(fd)
    try:
        for i in range(n):
            m = mutate(rng, data, header_end)
            with open(tmp, "wb") as f:
                f.write(m)
            try:
                with GGUFFile(tmp) as g:
                    touch(g, len(m))
                ok += 1
            except ModelFormatError:
                bad += 1
            except Exception:
                print(f"mutation {i}: unexpected exception", flush=True)
                traceback.print_exc()
                return 1
    finally:
        os.unlink(tmp)
    print(f"summary {ok} {bad}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
