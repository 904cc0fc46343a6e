"""Named GPU cards and the memory a process on each can really use.

A card's figure is the total `nvidia-smi` reports for it (`memory.total`, MiB = 2^20 bytes), not
the name's marketing size: an "80 GB" H100 reports 81559 MiB (79.6 GiB), a "24 GB" L4 23034 MiB
(22.5 GiB). That total is the ceiling a training process's nvidia-smi figure (CUDA context +
what the caching allocator reserved: the quantity vram-ml predicts) must stay under; the driver's
own reserved area is already left out of it. What else runs on the card (a desktop, another job)
takes from it too: say so when a verdict is "tight".

Every figure is quoted from an nvidia-smi printout in a public thread, named in `source`; the
driver version can move it by a few MiB. Names keep the vendor's "GB"; every number vram-ml shows
is binary (GiB = 1024^3 bytes).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

MIB = 1024**2
GIB = 1024**3
_MODAL = ("nvidia-smi totals listed in modal-labs/modal-client#2797",
          "https://github.com/modal-labs/modal-client/pull/2797")


@dataclass(frozen=True)
class Card:
    """A GPU model and the memory nvidia-smi reports for it."""

    key: str  # stable id used in URLs and the API: "rtx-4090"
    name: str  # as people say it: "RTX 4090 24 GB"
    memory_total_mib: int  # nvidia-smi memory.total
    source: str  # where memory_total_mib was read
    source_url: str | None = None

    @property
    def memory_bytes(self) -> int:
        return self.memory_total_mib * MIB

    @property
    def memory_gib(self) -> float:
        return self.memory_total_mib / 1024

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "memory_bytes": self.memory_bytes, "memory_gib": self.memory_gib}


CARDS: tuple[Card, ...] = (
    Card("t4", "T4 16 GB", 15360, *_MODAL),
    Card("l4", "L4 24 GB", 23034, *_MODAL),
    Card("a10", "A10 / A10G 24 GB", 23028, *_MODAL),
    Card(
        "rtx-3090",
        "RTX 3090 24 GB",
        24576,
        "nvidia-smi in noonghunna/club-3090#1128, driver 595.84",
        "https://github.com/noonghunna/club-3090/issues/1128",
    ),
    Card(
        "rtx-4090",
        "RTX 4090 24 GB",
        24564,
        "nvidia-smi in RLinf/RLinf#255, driver 550.163.01",
        "https://github.com/RLinf/RLinf/issues/255",
    ),
    Card(
        "rtx-5090",
        "RTX 5090 32 GB",
        32607,
        "nvidia-smi in noonghunna/club-3090#1261, driver 610.57.04",
        "https://github.com/noonghunna/club-3090/issues/1261",
    ),
    Card("a100-40gb", "A100 40 GB", 40960, *_MODAL),
    Card("l40s", "L40S 48 GB", 46068, *_MODAL),
    Card("a100-80gb", "A100 80 GB", 81920, *_MODAL),
    Card("h100-80gb", "H100 80 GB (SXM, HBM3)", 81559, *_MODAL),
    Card(
        "h200",
        "H200 141 GB",
        143771,
        "nvidia-smi printouts of H200 SXM machines in several public repositories (drivers "
        "550-580 all print 143771 MiB); no single thread is cited",
        None,
    ),
)
CARDS_BY_KEY = {card.key: card for card in CARDS}
DEFAULT_FIT_CARD = "rtx-4090"


def find_card(key: str) -> Card:
    """The card with this key.

    Raises:
        ValueError: an unknown key (the message lists the known ones).
    """
    if key not in CARDS_BY_KEY:
        raise ValueError(f"card: unknown card {key!r} (known: {', '.join(CARDS_BY_KEY)})")
    return CARDS_BY_KEY[key]
