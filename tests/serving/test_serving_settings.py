"""Service settings: a misspelt keyword is an error; VIPARE_* variables neither class knows are left alone."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.config import ServiceSettings


@pytest.mark.parametrize("key", ["page_sise", "conf_treshold"])
def test_an_unknown_service_setting_is_an_error_naming_it(tmp_path: Path, key: str) -> None:
    with pytest.raises(ValidationError, match=rf"(?s){key}.*Extra inputs are not permitted"):
        ServiceSettings(data_dir=tmp_path, **{key: 5})  # type: ignore[arg-type]  # the unknown name is the point


def test_service_settings_take_the_librarys_and_their_own_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIPARE_SOMETHING_UNKNOWN", "1")  # known to neither class: not read, no error
    monkeypatch.setenv("VIPARE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VIPARE_CONF_THRESHOLD", "0.3")
    from_env = ServiceSettings()
    assert (from_env.data_dir, from_env.conf_threshold) == (tmp_path, 0.3)
    given = ServiceSettings(page_size=5, verdict_threshold=0.4)
    assert (given.page_size, given.verdict_threshold, given.data_dir) == (5, 0.4, tmp_path)
