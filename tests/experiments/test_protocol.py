"""atesd.experiments.protocol: a protocol by name as `atesd eval` settings."""

import pytest

from atesd.experiments.protocol import TOY_PROTOCOL, protocol_eval_settings


def test_a_protocol_sets_its_sampling_and_problems_and_defaults_the_data_to_its_split():
    settings = protocol_eval_settings("toy-avg8", {"model": "toy:toy-1m"})
    assert settings == {"model": "toy:toy-1m", "data": "toy:test", "limit": 500, "k": 8, "seed": 1234,
                        "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_new_tokens": 128, "batch_size": 256}
    assert protocol_eval_settings("toy-large-avg16", {})["data"] == "toy:test-large"
    assert protocol_eval_settings("toy-avg8", {"limit": 32})["limit"] == 32  # its first 32 problems


def test_a_setting_the_protocol_fixes_or_an_unknown_name_is_an_error_naming_it():
    with pytest.raises(ValueError, match="--protocol toy-avg8 fixes --k, --max-new-tokens"):
        protocol_eval_settings("toy-avg8", {"k": 4, "max_new_tokens": 64})
    with pytest.raises(ValueError, match="--limit 501: protocol toy-avg8 evaluates 500 problems"):
        protocol_eval_settings("toy-avg8", {"limit": 501})
    with pytest.raises(ValueError, match="unknown protocol; choose one of toy-avg8, toy-large-avg16"):
        protocol_eval_settings("toy-avg9", {})
    assert TOY_PROTOCOL.eval_settings()["limit"] == TOY_PROTOCOL.n_problems
