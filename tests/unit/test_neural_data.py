"""Loading and validating user recordings (.npz, NetCDF): round trips and every clear error."""

import sys

import numpy as np
import pytest
from scipy.io import netcdf_file

from ngrad.analysis.neural_data import NeuralDataError, load_neural_data, validate_recording
from ngrad.errors import NgradError


def _arrays(n=40, sites=5, repetitions=3, seed=0):
    rng = np.random.default_rng(seed)
    objects = np.array([f"object{i % 4}" for i in range(n)])
    return rng.random((n, 8, 8)), rng.normal(size=(n, sites, repetitions)), objects


def test_npz_round_trip(tmp_path):
    stimuli, responses, objects = _arrays()
    path = tmp_path / "it.npz"
    np.savez(path, stimuli=stimuli, responses=responses, object=objects)
    recording = load_neural_data(path)
    assert (recording.n_stimuli, recording.n_sites, recording.n_repetitions) == (40, 5, 3)
    assert recording.stimuli.dtype == np.float32 and recording.stimuli.shape == (40, 8, 8)
    assert np.array_equal(recording.responses, responses)
    assert recording.objects.tolist() == objects.tolist()
    np.savez(tmp_path / "plain.npz", stimuli=stimuli, responses=responses)
    assert load_neural_data(tmp_path / "plain.npz").objects is None


def test_netcdf3_round_trip_with_character_labels(tmp_path):
    stimuli, responses, objects = _arrays()
    path = tmp_path / "it.nc"
    with netcdf_file(path, "w") as dataset:
        for name, size in [("stimulus", 40), ("y", 8), ("x", 8), ("site", 5), ("repetition", 3)]:
            dataset.createDimension(name, size)
        dataset.createDimension("characters", 7)
        dataset.createVariable("stimuli", "f4", ("stimulus", "y", "x"))[:] = stimuli
        dataset.createVariable("responses", "f8", ("stimulus", "site", "repetition"))[:] = responses
        labels = np.array([list(name) for name in objects], dtype="S1")
        dataset.createVariable("object", "c", ("stimulus", "characters"))[:] = labels
    recording = load_neural_data(path)
    assert np.allclose(recording.responses, responses)
    assert np.allclose(recording.stimuli, stimuli, atol=1e-6)
    assert recording.objects.tolist() == objects.tolist()


def test_netcdf4_without_xarray_names_the_packages(tmp_path, monkeypatch):
    path = tmp_path / "it.nc"
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(64))  # an HDF5 (NetCDF-4) signature
    monkeypatch.setitem(sys.modules, "xarray", None)  # import xarray -> ImportError
    with pytest.raises(NeuralDataError, match=r"pip install xarray netCDF4"):
        load_neural_data(path)


def _save(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("change", "fragments"),
    [
        (lambda s, r, o: {"stimuli": s, "object": o}, ["missing 'responses'"]),
        (lambda s, r, o: {"stimuli": s, "responses": r[:, :, 0]}, ["stimuli x sites x rep"]),
        (lambda s, r, o: {"stimuli": s, "responses": r[:, :, :1]}, ["1 repetition", "at least 2"]),
        (lambda s, r, o: {"stimuli": s[:30], "responses": r}, ["30 stimuli", "40"]),
        (
            lambda s, r, o: {"stimuli": s, "responses": np.where(r > 2.5, np.nan, r)},
            ["NaN", "first at index"],
        ),
        (lambda s, r, o: {"stimuli": s, "responses": r, "object": o[:39]}, ["one label per"]),
        (
            lambda s, r, o: {"stimuli": s, "responses": r, "object": np.append(o[:-1], "lonely")},
            ["'lonely'", "single stimulus"],
        ),
        (
            lambda s, r, o: {"stimuli": s, "responses": r, "object": np.arange(40) % 20},
            ["20 objects", "held-out"],
        ),
        (lambda s, r, o: {"stimuli": s, "responses": r, "object": o, "objects": o}, ["once"]),
        (lambda s, r, o: {"stimuli": s[:20], "responses": r[:20]}, ["too few"]),
        (lambda s, r, o: {"stimuli": s.astype(str), "responses": r}, ["numeric"]),
    ],
)
def test_malformed_recordings_fail_with_a_clear_message(tmp_path, change, fragments):
    stimuli, responses, objects = _arrays()
    responses[7, 2, 1] = 3.0  # at least one value the NaN case replaces
    path = _save(tmp_path, **change(stimuli, responses, objects))
    with pytest.raises(NeuralDataError) as failure:
        load_neural_data(path)
    message = str(failure.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_unreadable_files(tmp_path):
    stimuli, responses, objects = _arrays()
    with pytest.raises(NeuralDataError, match="does not exist"):
        load_neural_data(tmp_path / "absent.npz")
    (tmp_path / "it.mat").write_bytes(b"MATLAB")
    with pytest.raises(NeuralDataError, match=r"unknown format '\.mat'"):
        load_neural_data(tmp_path / "it.mat")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(NeuralDataError, match=r"not a readable \.npz"):
        load_neural_data(tmp_path / "broken.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, stimuli=stimuli, responses=responses, object=objects.astype(object))
    with pytest.raises(NeuralDataError, match="pickled"):
        load_neural_data(pickled)
    assert issubclass(NeuralDataError, NgradError)  # the CLI reports it on one line, exit 1


def test_validate_recording_accepts_integer_labels_and_flat_stimuli():
    stimuli, responses, _ = _arrays()
    recording = validate_recording(stimuli.reshape(40, 64), responses, np.arange(40) % 4)
    assert recording.stimuli.shape == (40, 64) and recording.objects.dtype.kind == "i"


def test_damaged_and_hostile_archives_are_refused_before_reading(tmp_path):
    """A zip signature over garbage, and an .npy header declaring far more than the archive
    holds (numpy would try to allocate it): each a NeuralDataError naming the file."""
    import io
    import zipfile

    fake = tmp_path / "fake.npz"
    fake.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    with pytest.raises(NeuralDataError, match=r"fake\.npz: not a readable \.npz"):
        load_neural_data(fake)
    stimuli = _arrays()[0]
    header = io.BytesIO()
    declared = {"descr": "<f8", "fortran_order": False, "shape": (100_000_000_000,)}
    np.lib.format.write_array_header_1_0(header, declared)
    genuine = io.BytesIO()
    np.save(genuine, stimuli)
    huge = tmp_path / "huge.npz"
    with zipfile.ZipFile(huge, "w") as archive:
        archive.writestr("responses.npy", header.getvalue() + bytes(16))
        archive.writestr("stimuli.npy", genuine.getvalue())
    with pytest.raises(NeuralDataError, match=r"'responses' declares .*745 GiB.* 16 bytes"):
        load_neural_data(huge)


def test_constant_responses_are_refused():
    stimuli, responses, _ = _arrays()
    with pytest.raises(NeuralDataError, match="the same for every stimulus"):
        validate_recording(stimuli, np.ones_like(responses))
    varying = responses.copy()
    varying[:, 1:, :] = 2.0  # one site varies: accepted
    assert validate_recording(stimuli, varying).n_sites == 5
