"""What every endpoint of one emulator reads and records: its settings, counters, faults, RNG.

Handed to each API emulation in place of the `Emulator` itself, so no endpoint module
imports the server that builds it (and the server's imports go one way only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .faults import FaultPlan
from .state import EmulatorConfig, Stats


@dataclass
class Shared:
    """The one `EmulatorConfig`, `Stats`, `FaultPlan` and seeded RNG of an emulator."""

    config: EmulatorConfig
    stats: Stats = field(default_factory=Stats)
    faults: FaultPlan = field(init=False)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.faults = FaultPlan(self.config)
        self.rng = random.Random(self.config.seed)
