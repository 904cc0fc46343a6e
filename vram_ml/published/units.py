"""Units of published memory figures, and the one conversion of a published number to bytes.

A published value keeps its digits as written ("31777.5", "6.7"); `value_bytes` is that number
times the unit's factor, computed exactly with Decimal and rounded to the nearest byte (half to
even) only when the product is fractional (e.g. 31.2 GiB). `GB` and `MB` are SI (10^9, 10^6):
a source that writes "GB" is read as it is written, and where its code shows binary units the
row's caveats say so. Cards are nominal: an "80GB" card is 80 x 2^30 bytes.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

UNIT_FACTORS: dict[str, int] = {
    "bytes": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "MB": 10**6,
    "GB": 10**9,
}
GIB = 2**30
MIB = 2**20


def parse_number(text: object) -> Decimal | None:
    """The exact number a published string holds ("2.00E-05", "31777.5"), or None."""
    if text is None:
        return None
    try:
        number = Decimal(str(text).strip())
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def value_bytes(value: object, unit: str | None) -> int | None:
    """`value` x the unit's factor, to the nearest byte; None when either is missing.

    Raises:
        KeyError: an unknown unit (a parser bug, never user input).
    """
    number = parse_number(value)
    if number is None or unit is None:
        return None
    product = number * UNIT_FACTORS[unit]
    return int(product.to_integral_value(rounding=ROUND_HALF_EVEN))


def is_exact_bytes(value: object, unit: str) -> bool:
    """Whether value x unit is a whole number of bytes (no rounding was needed)."""
    number = parse_number(value)
    return number is not None and (number * UNIT_FACTORS[unit]) % 1 == 0


def card_bytes(nominal_gb: object) -> int | None:
    """A card's nominal memory ("80" for an 80GB card) in bytes: N x 2^30."""
    number = parse_number(nominal_gb)
    return None if number is None else int(number * GIB)


def normalised_number(text: object) -> str:
    """A numeric cell in one spelling, for comparison keys ('2.00E-05' == '2e-5' == '0.00002')."""
    number = parse_number(text)
    if number is None:
        return str(text or "").strip()
    number = number.normalize()
    return format(number, "f")
