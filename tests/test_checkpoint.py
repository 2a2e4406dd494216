"""Checkpoint and model files: checksummed arrays, damaged files refused naming the file,
files of the previous format version still read."""

import h5py
import numpy as np
import pytest

from medalpy import checkpoint
from medalpy.errors import CheckpointError
from medalpy.network import Network


def _network():
    net = Network(12)
    rng = np.random.default_rng(0)
    net.add_encoder(8, rng)
    net.attach_decoder(rng, target_level=0)
    return net


def test_arrays_carry_checksums_and_a_damaged_one_is_refused(tmp_path):
    path = tmp_path / "model.h5"
    net = _network()
    checkpoint.save(path, net, {"lr": 0.1})
    with h5py.File(path, "r") as f:
        W = f["network/encoder.0/W"]
        assert W.fletcher32 and f["network/decoder/b"].fletcher32
        offset = W.id.get_chunk_info(0).byte_offset
    np.testing.assert_array_equal(checkpoint.load(path)["network"].encoders[0].W,
                                  net.encoders[0].W)
    raw = bytearray(path.read_bytes())
    raw[offset + 5] ^= 0xFF  # one bit pattern flipped inside the weights
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=f"{path}: damaged or incomplete"):
        checkpoint.load(path)


def test_files_of_the_previous_format_version_still_load(tmp_path, monkeypatch):
    path = tmp_path / "old.h5"
    net = _network()
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", 2)
    monkeypatch.setattr(checkpoint, "_array",
                        lambda group, name, data: group.create_dataset(name, data=data))
    checkpoint.save(path, net, {"lr": 0.1})
    monkeypatch.undo()
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2 and not f["network/encoder.0/W"].fletcher32
    loaded = checkpoint.load(path)["network"]
    for name, array in net.parameters().items():
        np.testing.assert_array_equal(loaded.parameters()[name], array)
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = 1
    with pytest.raises(CheckpointError, match="format version 1, this medalpy reads versions 2, 3"):
        checkpoint.load(path)
