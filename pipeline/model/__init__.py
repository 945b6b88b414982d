"""Event model: the envelope types and their canonical codec (pure; no I/O)."""

from pipeline.model.codec import decode, decode_dict, encode, to_dict, with_observed_time
from pipeline.model.event import (
    LINK_TYPES,
    Actor,
    Event,
    Target,
    event_id,
    format_time,
    from_micros,
    to_micros,
)

__all__ = [
    "LINK_TYPES",
    "Actor",
    "Event",
    "Target",
    "decode",
    "decode_dict",
    "encode",
    "event_id",
    "format_time",
    "from_micros",
    "to_dict",
    "to_micros",
    "with_observed_time",
]
