from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stream(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_UNSPECIFIED: _ClassVar[Stream]
    STREAM_STDOUT: _ClassVar[Stream]
    STREAM_STDERR: _ClassVar[Stream]

class StepOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STEP_OUTCOME_UNSPECIFIED: _ClassVar[StepOutcome]
    STEP_OUTCOME_EXITED: _ClassVar[StepOutcome]
    STEP_OUTCOME_TIMED_OUT: _ClassVar[StepOutcome]
    STEP_OUTCOME_CANCELLED: _ClassVar[StepOutcome]
    STEP_OUTCOME_ERROR: _ClassVar[StepOutcome]
STREAM_UNSPECIFIED: Stream
STREAM_STDOUT: Stream
STREAM_STDERR: Stream
STEP_OUTCOME_UNSPECIFIED: StepOutcome
STEP_OUTCOME_EXITED: StepOutcome
STEP_OUTCOME_TIMED_OUT: StepOutcome
STEP_OUTCOME_CANCELLED: StepOutcome
STEP_OUTCOME_ERROR: StepOutcome

class TaskSpec(_message.Message):
    __slots__ = ("name", "needs", "image")
    NAME_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    needs: _containers.RepeatedScalarFieldContainer[str]
    image: str
    def __init__(self, name: _Optional[str] = ..., needs: _Optional[_Iterable[str]] = ..., image: _Optional[str] = ...) -> None: ...

class DeclarePlanRequest(_message.Message):
    __slots__ = ("pipeline", "tasks", "max_duration_seconds", "fail_fast", "egress_allowlist")
    PIPELINE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FAIL_FAST_FIELD_NUMBER: _ClassVar[int]
    EGRESS_ALLOWLIST_FIELD_NUMBER: _ClassVar[int]
    pipeline: str
    tasks: _containers.RepeatedCompositeFieldContainer[TaskSpec]
    max_duration_seconds: int
    fail_fast: bool
    egress_allowlist: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, pipeline: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[TaskSpec, _Mapping]]] = ..., max_duration_seconds: _Optional[int] = ..., fail_fast: _Optional[bool] = ..., egress_allowlist: _Optional[_Iterable[str]] = ...) -> None: ...

class DeclarePlanResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WatchScheduleRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ScheduleEvent(_message.Message):
    __slots__ = ("start_task",)
    START_TASK_FIELD_NUMBER: _ClassVar[int]
    start_task: str
    def __init__(self, start_task: _Optional[str] = ...) -> None: ...

class RunStepRequest(_message.Message):
    __slots__ = ("task", "name", "command", "image", "env", "timeout_seconds", "capture")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CAPTURE_FIELD_NUMBER: _ClassVar[int]
    task: str
    name: str
    command: str
    image: str
    env: _containers.ScalarMap[str, str]
    timeout_seconds: float
    capture: bool
    def __init__(self, task: _Optional[str] = ..., name: _Optional[str] = ..., command: _Optional[str] = ..., image: _Optional[str] = ..., env: _Optional[_Mapping[str, str]] = ..., timeout_seconds: _Optional[float] = ..., capture: _Optional[bool] = ...) -> None: ...

class OutputChunk(_message.Message):
    __slots__ = ("stream", "data")
    STREAM_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream: Stream
    data: bytes
    def __init__(self, stream: _Optional[_Union[Stream, str]] = ..., data: _Optional[bytes] = ...) -> None: ...

class StepExit(_message.Message):
    __slots__ = ("outcome", "exit_code", "message")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    outcome: StepOutcome
    exit_code: int
    message: str
    def __init__(self, outcome: _Optional[_Union[StepOutcome, str]] = ..., exit_code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class RunStepEvent(_message.Message):
    __slots__ = ("output", "exit")
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    EXIT_FIELD_NUMBER: _ClassVar[int]
    output: OutputChunk
    exit: StepExit
    def __init__(self, output: _Optional[_Union[OutputChunk, _Mapping]] = ..., exit: _Optional[_Union[StepExit, _Mapping]] = ...) -> None: ...

class GetSecretRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetSecretResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: str
    def __init__(self, value: _Optional[str] = ...) -> None: ...

class ArtifactHeader(_message.Message):
    __slots__ = ("name", "kind", "source_path", "task")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ArtifactHeader.Kind]
        KIND_FILE: _ClassVar[ArtifactHeader.Kind]
        KIND_DIRECTORY: _ClassVar[ArtifactHeader.Kind]
    KIND_UNSPECIFIED: ArtifactHeader.Kind
    KIND_FILE: ArtifactHeader.Kind
    KIND_DIRECTORY: ArtifactHeader.Kind
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PATH_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: ArtifactHeader.Kind
    source_path: str
    task: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[ArtifactHeader.Kind, str]] = ..., source_path: _Optional[str] = ..., task: _Optional[str] = ...) -> None: ...

class UploadArtifactRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: ArtifactHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[ArtifactHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class UploadArtifactResponse(_message.Message):
    __slots__ = ("size_bytes", "sha256")
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    size_bytes: int
    sha256: str
    def __init__(self, size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class TaskStarted(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: str
    def __init__(self, task: _Optional[str] = ...) -> None: ...

class TaskFinished(_message.Message):
    __slots__ = ("task", "success", "error")
    TASK_FIELD_NUMBER: _ClassVar[int]
    SUCCESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task: str
    success: bool
    error: str
    def __init__(self, task: _Optional[str] = ..., success: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class LoadError(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ScriptError(_message.Message):
    __slots__ = ("message",)
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: str
    def __init__(self, message: _Optional[str] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("task_started", "task_finished", "load_error", "script_error")
    TASK_STARTED_FIELD_NUMBER: _ClassVar[int]
    TASK_FINISHED_FIELD_NUMBER: _ClassVar[int]
    LOAD_ERROR_FIELD_NUMBER: _ClassVar[int]
    SCRIPT_ERROR_FIELD_NUMBER: _ClassVar[int]
    task_started: TaskStarted
    task_finished: TaskFinished
    load_error: LoadError
    script_error: ScriptError
    def __init__(self, task_started: _Optional[_Union[TaskStarted, _Mapping]] = ..., task_finished: _Optional[_Union[TaskFinished, _Mapping]] = ..., load_error: _Optional[_Union[LoadError, _Mapping]] = ..., script_error: _Optional[_Union[ScriptError, _Mapping]] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
