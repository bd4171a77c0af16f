"""Settings: a misspelt keyword is an error; VIPARE_* variables the library does not know are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from vipare.settings import Settings


@pytest.mark.parametrize("key", ["conf_treshold", "data_dir"])
def test_an_unknown_keyword_is_an_error_naming_it(key: str) -> None:
    with pytest.raises(ValidationError, match=rf"(?s){key}.*Extra inputs are not permitted"):
        Settings(**{key: 0.9})  # type: ignore[arg-type]  # the unknown name is the point


def test_known_keywords_are_applied() -> None:
    settings = Settings(conf_threshold=0.9, model_path=Path("m.onnx"))
    assert (settings.conf_threshold, settings.model_path) == (0.9, Path("m.onnx"))


def test_unknown_environment_variables_do_not_stop_start_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIPARE_SOMETHING_UNKNOWN", "1")
    monkeypatch.setenv("VIPARE_DATA_DIR", "/srv/vipare")  # the service's, not the library's
    monkeypatch.setenv("VIPARE_CONF_THRESHOLD", "0.3")
    settings = Settings()
    assert settings.conf_threshold == 0.3
    assert not hasattr(settings, "data_dir") and not hasattr(settings, "something_unknown")


def test_a_bad_value_in_the_environment_is_still_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIPARE_CONF_THRESHOLD", "1.5")
    with pytest.raises(ValidationError, match="conf_threshold"):
        Settings()
