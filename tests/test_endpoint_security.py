"""An API key never travels in clear text to another machine: the teacher and the judge refuse a
remote plain-http endpoint when a key is set, unless their `allow_insecure_http` says so."""
import pytest

from components.config import JudgeConfig, TeacherConfig
from components.distill.backends import make_backend
from components.distill.backends.openai_chat import check_endpoint
from components.evaluate.judge import judge_rationales

KEY_ENV = "TEST_ENDPOINT_KEY"


@pytest.mark.parametrize("url, has_key, allowed", [
    ("https://api.example.com/v1", True, False),
    ("http://127.0.0.1:8000/v1", True, False),
    ("http://localhost:11434/v1", True, False),
    ("http://[::1]:8000/v1", True, False),
    ("http://api.example.com/v1", False, False),   # no key: nothing to leak
    ("http://10.0.0.5:8000/v1", True, True),       # explicitly allowed
])
def test_endpoints_that_are_accepted(url, has_key, allowed):
    assert check_endpoint(url, has_key, allowed, "x.allow_insecure_http") is None


@pytest.mark.parametrize("url", ["http://api.example.com/v1", "http://10.0.0.5:8000/v1",
                                 "HTTP://API.Example.com/v1"])
def test_a_key_over_remote_plain_http_is_refused(url):
    with pytest.raises(ValueError, match=r"x\.allow_insecure_http"):
        check_endpoint(url, True, False, "x.allow_insecure_http")


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-test")


def teacher_config(url: str, allow: bool = False) -> TeacherConfig:
    return TeacherConfig(openai_base_url=url, openai_api_key_env=KEY_ENV,
                         allow_insecure_http=allow)


def test_the_teacher_refuses_a_key_over_remote_http(key):
    with pytest.raises(ValueError, match=r"distill\.teacher\.allow_insecure_http"):
        make_backend("openai", teacher_config("http://api.example.com/v1"), seed=0)
    for url in ("https://api.example.com/v1", "http://127.0.0.1:8000/v1",
                "http://localhost:8000/v1"):
        assert make_backend("openai", teacher_config(url), seed=0).config()["base_url"] == url
    allowed = make_backend("openai", teacher_config("http://api.example.com/v1", allow=True),
                           seed=0)
    assert allowed.config()["base_url"] == "http://api.example.com/v1"


def test_the_judge_refuses_a_key_over_remote_http(key):
    cfg = JudgeConfig(enabled=True, base_url="http://judge.example.com/v1", api_key_env=KEY_ENV)
    with pytest.raises(ValueError, match=r"evaluate\.judge\.allow_insecure_http"):
        judge_rationales(cfg, [])
    for url in ("https://judge.example.com/v1", "http://127.0.0.1:8000/v1"):
        assert judge_rationales(JudgeConfig(base_url=url, api_key_env=KEY_ENV), []) == []
    allowed = JudgeConfig(base_url="http://judge.example.com/v1", api_key_env=KEY_ENV,
                          allow_insecure_http=True)
    assert judge_rationales(allowed, []) == []
