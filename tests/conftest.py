import os
from pathlib import Path

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
