"""Shared test settings: an isolated MLflow store, offline libraries, the real-data folder."""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytest_plugins = ["tests.sft_fixture"]


def shared_data_dir() -> Path:
    """Real corpora: $EMOREASON_SHARED_DATA, else ../shared/data beside the repository."""
    return Path(os.environ.get("EMOREASON_SHARED_DATA", REPO.parent / "shared" / "data"))


def require_shared(name: str) -> Path:
    """The real-data subfolder `name`, or skip the test with the reason."""
    path = shared_data_dir() / name
    if not path.is_dir():
        pytest.skip(f"real data {name} not found under {shared_data_dir()} "
                    "(set EMOREASON_SHARED_DATA)")
    return path


@pytest.fixture(scope="session", autouse=True)
def _isolated_services(tmp_path_factory):
    """Every test logs to a throwaway MLflow store (and stage times to a throwaway log) and
    never calls home."""
    store = tmp_path_factory.mktemp("mlflow")
    saved = dict(os.environ)
    os.environ.update({
        "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
        "RAY_AUTH_MODE": "disabled",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "EMOREASON_STAGE_TIMES": str(store / "stage_times.jsonl"),
    })
    os.environ.pop("EMOREASON_PARENT_RUN_ID", None)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
def stub():
    """A local OpenAI-compatible chat server (tests.openai_stub), stopped after the test."""
    from tests.openai_stub import StubChatServer

    server = StubChatServer()
    server.start()
    yield server
    server.stop()
