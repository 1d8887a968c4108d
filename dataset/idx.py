"""The IDX file format (LeCun's MNIST files; Zalando's Fashion-MNIST uses it too), read and checked.

An IDX file is a header and raw bytes:

    bytes 0-1   0, 0
    byte  2     the element type: 0x08 unsigned byte (the only one these files use)
    byte  3     the number of dimensions d (3 for images: N, rows, cols; 1 for labels: N)
    4 d bytes   each dimension's size, a big-endian uint32
    the rest    prod(sizes) elements, row-major

so an image file begins 00 00 08 03 (magic 2051) and a label file 00 00 08 01 (magic 2049).
Files may be gzipped (.gz), as Zalando and Debian ship them; read_idx opens either.
"""
import gzip
import os

import numpy as np

IMAGES, LABELS = 2051, 2049          # the magic numbers: 0x00000803 and 0x00000801


class IDXError(ValueError):
    """An IDX file that is missing, unreadable, of the wrong kind, or truncated."""


def read_bytes(path):
    """The file's bytes, gunzipped when it is gzipped (by its first two bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as err:
        raise IDXError(f"cannot read {path} ({err.strerror or err})") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IDXError(f"{path}: a damaged gzip file ({err})") from None
    return raw


def parse_idx(raw, path="<bytes>", magic=None):
    """raw IDX bytes -> uint8 array of the header's shape. magic: IMAGES or LABELS to insist on."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IDXError(f"{path} is not an IDX file (it does not begin with two zero bytes)")
    if raw[2] != 0x08:
        raise IDXError(f"{path}: element type 0x{raw[2]:02x}, expected 0x08 (unsigned bytes)")
    ndim = raw[3]
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        want = {IMAGES: "an image file (magic 2051, 3 dimensions)",
                LABELS: "a label file (magic 2049, 1 dimension)"}[magic]
        raise IDXError(f"{path}: magic number {found}, expected {want}")
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise IDXError(f"{path}: truncated header ({len(raw)} bytes for {ndim} dimensions)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(shape, dtype=np.int64))
    if len(raw) - head != size:
        raise IDXError(f"{path}: the header says {' x '.join(map(str, shape))} = {size} bytes of data, "
                       f"the file holds {len(raw) - head}"
                       + (" (truncated)" if len(raw) - head < size else ""))
    return np.frombuffer(raw, dtype=np.uint8, offset=head).reshape(shape)


def read_idx(path, magic=None):
    """The array an IDX file (gzipped or not) holds; IDXError says what is wrong with a bad one."""
    if os.path.isdir(path):
        raise IDXError(f"{path} is a directory, not an IDX file")
    if not os.path.exists(path):
        raise IDXError(f"{path}: no such file")
    return parse_idx(read_bytes(path), path, magic)


def idx_bytes(array):
    """uint8 array -> the bytes of an IDX file holding it (tests and the classify command's round trip)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in a.shape)
    return head + a.tobytes()
