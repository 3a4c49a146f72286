"""Integer arithmetic with explicit errors."""


def add(left: int, right: int) -> int:
    """Return the sum of two integers."""
    return left + right


def divide(dividend: int, divisor: int) -> int:
    """Return the floor quotient; raise ValueError for a zero divisor."""
    if divisor == 0:
        raise ValueError("division by zero")
    return dividend // divisor


def mean(values: list) -> float:
    """Return the arithmetic mean; raise ValueError for an empty list."""
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)
