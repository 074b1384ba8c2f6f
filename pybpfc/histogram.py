"""log2 histograms rendered as bars, in the layout bcc's print_log2_hist made familiar."""
from __future__ import annotations


def format_log2_hist(buckets: list[int], val_type: str = "value", width: int = 40) -> str:
    """buckets[i] counts values v with floor(log2(v)) + 1 == i (bucket 0 holds v == 0)."""
    while buckets and buckets[-1] == 0:
        buckets = buckets[:-1]
    if not buckets:
        return f"{'':>10}{val_type:<14}: count    distribution\n(no values)"
    peak = max(buckets)
    lines = [f"{val_type:>24} : count     distribution"]
    for i, n in enumerate(buckets):
        lo, hi = (0, 0) if i == 0 else (1 << (i - 1), (1 << i) - 1)
        bar = "*" * (n * width // peak if peak else 0)
        lines.append(f"{lo:>10} -> {hi:<10}: {n:<9} |{bar:<{width}}|")
    return "\n".join(lines)
