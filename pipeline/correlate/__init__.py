"""Correlation (DESIGN.md §3): events sharing a strong link key form chains.

Pure logic -- no Kafka, Faust or ClickHouse, no clock (``now`` is injected)::

    state = State(CorrelationConfig())
    state, emissions = step(state, event, now)   # mutates ``state`` in place and returns it
    blob = encode_state(state)                    # e.g. into a Faust table / changelog
    state = decode_state(blob, config)            # after a restart

See :mod:`pipeline.correlate.reducer` for the algorithm and the emission order,
:mod:`pipeline.correlate.state` for the state layout, its wire format and how to split it per key,
:mod:`pipeline.correlate.emissions` for what each emission means and how readers fold them.
"""

from pipeline.correlate.config import DEFAULT_TTLS, CorrelationConfig, key_type
from pipeline.correlate.emissions import (
    Alias,
    ChainView,
    Edge,
    EdgeRemoved,
    Emission,
    Expired,
    Member,
    decode_emissions,
    encode_emissions,
    resolve,
)
from pipeline.correlate.offline import components, key_edges
from pipeline.correlate.reducer import Correlatable, compact, expire, step, step_raw
from pipeline.correlate.state import State, decode_state, encode_state

__all__ = [
    "DEFAULT_TTLS",
    "Alias",
    "ChainView",
    "Correlatable",
    "CorrelationConfig",
    "Edge",
    "EdgeRemoved",
    "Emission",
    "Expired",
    "Member",
    "State",
    "compact",
    "components",
    "decode_emissions",
    "decode_state",
    "encode_emissions",
    "encode_state",
    "expire",
    "key_edges",
    "key_type",
    "resolve",
    "step",
    "step_raw",
]
