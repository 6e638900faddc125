"""The pipeline's exceptions: a shallow tree whose members carry data.

Driver exceptions are mapped to these at the sink boundary, so the consumer
loop decides on kind (retry, dead-letter, stop) and never on driver types.
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class ConfigurationError(PipelineError):
    """The settings or the environment are wrong; retrying cannot help."""


class RetryableError(PipelineError):
    """A dependency is unavailable for now (connection lost, restart, deadlock).

    The batch in hand was not written; the caller backs off and tries again.
    """

    def __init__(self, service: str, cause: BaseException) -> None:
        super().__init__(f"{service} unavailable: {type(cause).__name__}: {cause}")
        self.service = service
        self.cause = cause


class RejectedByDatabase(PipelineError):
    """The database refused some rows of a batch that passed validation (a value
    a column, constraint or index cannot hold). The sink has isolated them and
    taken them out of its buffer; the caller dead-letters them and flushes again,
    which writes the rest. Retrying the same rows would fail for ever."""

    def __init__(self, refused: list[tuple[int, int, str]]) -> None:
        super().__init__(f"the database refused {len(refused)} row(s)")
        #: ``(kafka_partition, kafka_offset, the server's message)`` of each refused row.
        self.refused = refused


class FencedError(PipelineError):
    """Another consumer claimed a partition this one was writing; the batch was
    rolled back and must be discarded, not retried."""

    def __init__(
        self, partitions: list[tuple[str, int]], generations: dict[tuple[str, int], int] | None = None
    ) -> None:
        super().__init__(f"fenced out of {', '.join(f'{t}[{p}]' for t, p in partitions)}")
        self.partitions = partitions
        #: The claim generation the failed batch used per partition (absent: none held).
        self.generations = generations or {}
