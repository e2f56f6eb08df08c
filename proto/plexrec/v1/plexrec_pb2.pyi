# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Encoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENCODING_FLOAT32: _ClassVar[Encoding]
    ENCODING_STORED: _ClassVar[Encoding]

class Entity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITY_UNSPECIFIED: _ClassVar[Entity]
    USER: _ClassVar[Entity]
    ITEM: _ClassVar[Entity]
ENCODING_FLOAT32: Encoding
ENCODING_STORED: Encoding
ENTITY_UNSPECIFIED: Entity
USER: Entity
ITEM: Entity

class GetEmbeddingsRequest(_message.Message):
    __slots__ = ("entity", "ids", "version", "encoding", "width")
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    entity: Entity
    ids: _containers.RepeatedScalarFieldContainer[int]
    version: str
    encoding: Encoding
    width: int
    def __init__(self, entity: _Optional[_Union[Entity, str]] = ..., ids: _Optional[_Iterable[int]] = ..., version: _Optional[str] = ..., encoding: _Optional[_Union[Encoding, str]] = ..., width: _Optional[int] = ...) -> None: ...

class GetEmbeddingsResponse(_message.Message):
    __slots__ = ("version", "width", "vectors", "found_ids", "missing_ids", "dtype", "scales", "rotated")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    FOUND_IDS_FIELD_NUMBER: _ClassVar[int]
    MISSING_IDS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SCALES_FIELD_NUMBER: _ClassVar[int]
    ROTATED_FIELD_NUMBER: _ClassVar[int]
    version: str
    width: int
    vectors: bytes
    found_ids: _containers.RepeatedScalarFieldContainer[int]
    missing_ids: _containers.RepeatedScalarFieldContainer[int]
    dtype: str
    scales: bytes
    rotated: bool
    def __init__(self, version: _Optional[str] = ..., width: _Optional[int] = ..., vectors: _Optional[bytes] = ..., found_ids: _Optional[_Iterable[int]] = ..., missing_ids: _Optional[_Iterable[int]] = ..., dtype: _Optional[str] = ..., scales: _Optional[bytes] = ..., rotated: _Optional[bool] = ...) -> None: ...

class UserFeatures(_message.Message):
    __slots__ = ("values",)
    class ValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.ScalarMap[str, str]
    def __init__(self, values: _Optional[_Mapping[str, str]] = ...) -> None: ...

class QueryVector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("user_id", "user_features", "query_vector", "k", "exclude_item_ids", "version", "width")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FEATURES_FIELD_NUMBER: _ClassVar[int]
    QUERY_VECTOR_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    user_features: UserFeatures
    query_vector: QueryVector
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[int]
    version: str
    width: int
    def __init__(self, user_id: _Optional[int] = ..., user_features: _Optional[_Union[UserFeatures, _Mapping]] = ..., query_vector: _Optional[_Union[QueryVector, _Mapping]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[int]] = ..., version: _Optional[str] = ..., width: _Optional[int] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("version", "item_ids", "scores")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    version: str
    item_ids: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, version: _Optional[str] = ..., item_ids: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: str
    def __init__(self, version: _Optional[str] = ...) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("version", "width", "user_count", "item_count", "run_id", "index_kind", "partitions", "metrics", "has_user_tower", "loaded_versions", "dtype", "rotation")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    USER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ITEM_COUNT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    HAS_USER_TOWER_FIELD_NUMBER: _ClassVar[int]
    LOADED_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    version: str
    width: int
    user_count: int
    item_count: int
    run_id: str
    index_kind: str
    partitions: int
    metrics: _containers.ScalarMap[str, float]
    has_user_tower: bool
    loaded_versions: _containers.RepeatedScalarFieldContainer[str]
    dtype: str
    rotation: bytes
    def __init__(self, version: _Optional[str] = ..., width: _Optional[int] = ..., user_count: _Optional[int] = ..., item_count: _Optional[int] = ..., run_id: _Optional[str] = ..., index_kind: _Optional[str] = ..., partitions: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., has_user_tower: _Optional[bool] = ..., loaded_versions: _Optional[_Iterable[str]] = ..., dtype: _Optional[str] = ..., rotation: _Optional[bytes] = ...) -> None: ...
