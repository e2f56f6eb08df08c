from __future__ import annotations

import pytest

from plexrec.serving.user_encoder import UserEncoder, UserFeatureError


def _encoder() -> UserEncoder:
    return UserEncoder({"sparse": [
        {"name": "signup_hour", "kind": "categorical", "vocab": {"0": 1, "13": 2},
         "derive": {"kind": "hour", "from": "yymmddhh"}},
        {"name": "zip3", "kind": "categorical", "hash_size": 97,
         "derive": {"kind": "slice", "start": 0, "stop": 3}},
        {"name": "city", "kind": "categorical", "vocab": {"paris": 1}}], "dense": []})


def test_derived_user_features_are_derived_as_in_preparation() -> None:
    from plexrec.features.encode import encode_categorical
    from plexrec.features.schema import Feature

    sparse, _ = _encoder().encode({"signup_hour": "14102113", "zip3": "02139", "city": "paris"})
    zip3 = encode_categorical(Feature("zip3", "categorical", hash_size=97), ["021"])[0]
    assert sparse.tolist() == [2, zip3, 1]
    assert _encoder().encode({"signup_hour": "14102105"})[0].tolist() == [0, 0, 0]


def test_underivable_request_value_names_the_feature() -> None:
    with pytest.raises(UserFeatureError, match="signup_hour.*cannot derive hour.*'yesterday'"):
        _encoder().encode({"signup_hour": "yesterday"})
