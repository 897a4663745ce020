"""Settings read from the environment: defaults, and a clear error naming a bad variable."""

from __future__ import annotations

import pytest

from streams.config import ConfigError, load_settings


def test_state_cache_entries_default_off_and_bad_values() -> None:
    assert load_settings({}).state_cache_entries == 8192
    assert load_settings({"STREAMS_STATE_CACHE_ENTRIES": "0"}).state_cache_entries == 0
    for bad in ("-1", "lots", "1e4"):
        with pytest.raises(ConfigError, match="STREAMS_STATE_CACHE_ENTRIES"):
            load_settings({"STREAMS_STATE_CACHE_ENTRIES": bad})
