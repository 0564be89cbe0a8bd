"""A local emulator of the OpenAI Responses API and the Datalab Marker API.

Real HTTP on 127.0.0.1 with the real wire formats, rate limits, latency and fault
injection, so the library can be tested and demonstrated without keys or network.
"""

from .fault_kinds import FAULT_ENDPOINTS, FAULT_KINDS, is_fault_kind
from .faults import FaultPlan
from .server import Emulator, serve_forever
from .state import EmulatorConfig, Stats

__all__ = [
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "Emulator",
    "EmulatorConfig",
    "FaultPlan",
    "Stats",
    "is_fault_kind",
    "serve_forever",
]
