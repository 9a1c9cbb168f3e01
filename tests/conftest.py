import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The offline benchmark data (../shared/data beside the repository), if present."""
    candidate = Path(os.environ.get("NGRAD_TEST_SHARED_DATA", REPO.parent / "shared" / "data"))
    return candidate if (candidate / "mnist").is_dir() else None


# The networks in the tests are tiny: one thread is fastest, and it keeps the suite from fighting
# over cores with anything else on the machine (oversubscribed intra-op threads spin).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory) -> Path:
    """CIFAR-10 in its real file format, 40 random images per batch (160 train, 40 val and 40
    test once N_VAL is 40, as the ``cifar`` fixture sets it)."""
    from ngrad.data.cifar import TEST_BATCH, TRAIN_BATCHES

    root = tmp_path_factory.mktemp("cifar")
    directory = root / "cifar-10-batches-py"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for name in (*TRAIN_BATCHES, TEST_BATCH):
        batch = {
            b"labels": [int(v) for v in rng.integers(0, 10, 40)],
            b"data": rng.integers(0, 256, (40, 3072), dtype=np.uint8),
        }
        (directory / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


@pytest.fixture
def cifar(cifar_dir, monkeypatch) -> list[str]:
    """The command-line arguments that train on :func:`cifar_dir`'s images (validation: 40)."""
    from ngrad.data import catalog as data_catalog

    monkeypatch.setattr(data_catalog, "N_VAL", 40)
    return ["--data", "cifar10", "--data-dir", str(cifar_dir)]
