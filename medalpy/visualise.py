"""MEDAL's pictures of what a DAE learnt: first-layer filters and reconstructions, as PNG.

The PNG writer is a few lines of zlib (8-bit grayscale), so pictures need no plotting library.
"""

import struct
import zlib

import numpy as np


def write_png(path, image, zoom=1):
    """Write a 2-D uint8 array as an 8-bit grayscale PNG, each pixel ``zoom`` x ``zoom``."""
    image = np.asarray(image, dtype=np.uint8)
    image = np.ascontiguousarray(np.repeat(np.repeat(image, zoom, axis=0), zoom, axis=1))
    h, w = image.shape
    raw = b"".join(b"\x00" + image[row].tobytes() for row in range(h))  # filter 0 per row

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)


def tile(images, columns, pad=1, background=255):
    """Lay (n, h, w) uint8 images out on a grid with ``pad`` pixels between them."""
    n, h, w = images.shape
    rows = -(-n // columns)
    out = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), background, np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, columns)
        out[pad + r * (h + pad):pad + r * (h + pad) + h,
            pad + c * (w + pad):pad + c * (w + pad) + w] = img
    return out


def to_uint8(x):
    """Floats in [0, 1] to uint8."""
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def filters_image(W, image_shape, count=100, columns=10):
    """First-layer filters: column j of ``W`` (D, n_units) as an image, each scaled to its
    own range (MEDAL's visualisation); ``image_shape`` is (h, w) or (channels, h, w), of
    which the first channel is shown."""
    count = min(count, W.shape[1])
    h, w = image_shape[-2:]
    plane = h * w
    F = np.asarray(W[:plane, :count], dtype=np.float64).T  # (count, h*w), first channel
    lo, hi = F.min(axis=1, keepdims=True), F.max(axis=1, keepdims=True)
    F = (F - lo) / np.where(hi > lo, hi - lo, 1.0)
    return tile(to_uint8(F).reshape(count, h, w), columns, background=0)


def reconstructions_image(clean, corrupted, reconstructed, image_shape):
    """Rows of (clean, corrupted, reconstruction) triples, one test digit per row."""
    h, w = image_shape[-2:]
    n = clean.shape[0]
    triples = np.stack([clean, corrupted, reconstructed], axis=1)[:, :, :h * w]
    return tile(to_uint8(triples.reshape(3 * n, h, w)), 3)
