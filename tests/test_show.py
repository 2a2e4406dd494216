"""`medalpy show`: real PNG files of filters and reconstructions."""

import struct
import zlib

import numpy as np
from click.testing import CliRunner

from medalpy.cli import main
from medalpy.visualise import write_png


def read_png(path):
    """Decode an 8-bit grayscale PNG written by write_png (filter type 0 rows)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == \
            zlib.crc32(kind + body)
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    w, h = struct.unpack(">II", chunks[b"IHDR"][:8])
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(h, w + 1)
    assert not raw[:, 0].any()
    return raw[:, 1:]


def test_png_round_trip(tmp_path):
    image = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    write_png(tmp_path / "a.png", image, zoom=2)
    back = read_png(tmp_path / "a.png")
    np.testing.assert_array_equal(back[::2, ::2], image)
    assert back.shape == (6, 8)


def test_show_writes_filters_and_reconstructions(tmp_path):
    run = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "train", "mnist-sample", "--layers", "30,20", "--epochs-layer1", "1", "--budget", "1",
        "--train-size", "200", "--val-size", "50", "--quiet", "--out", str(run)])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["show", str(run / "model.h5"), "--count", "30",
                                       "--digits", "4", "--out", str(tmp_path / "pics")])
    assert result.exit_code == 0, result.output
    filters = read_png(tmp_path / "pics" / "filters.png")
    assert filters.shape == (2 * (3 * 29 + 1), 2 * (10 * 29 + 1))  # 30 filters, 10 a row
    recon = read_png(tmp_path / "pics" / "reconstructions.png")
    assert recon.shape == (2 * (4 * 29 + 1), 2 * (3 * 29 + 1))  # 4 digits x 3 panels
    assert recon.std() > 10  # not a blank picture
