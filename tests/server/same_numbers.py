#!/usr/bin/env python3
"""Checks that two printouts say the same thing up to float rounding.

Usage: same_numbers.py [--ranked] [--tolerance T] EXPECTED ACTUAL

Each printout is lines of tab- or space-separated fields. Fields that parse as
numbers must agree within T (absolute); every other field must match exactly.
Two processes that compute the same model with different intra-op thread
counts or kernel families (AVX2, AVX-512) sum in another order, so the last
printed digit of a %.6f can differ (measured: 1e-6 between 1 and 2 threads).
A string comparison of such numbers holds only by luck of rounding.

With --ranked, lines are rankings (best first, by the first number): they are
matched by their text, and each printout must itself be sorted; two lines
whose scores are within T may come in either order.
"""
import argparse
import sys


def split_fields(line):
    return line.replace("\t", " ").split(" ")


def as_number(field):
    try:
        return float(field)
    except ValueError:
        return None


def text_key(line):
    """The non-numeric fields of a line: what a ranking line is about."""
    return tuple(f for f in split_fields(line) if as_number(f) is None)


def compare_lines(expected, actual, tolerance):
    """An error message, or None when the lines agree."""
    a, b = split_fields(expected), split_fields(actual)
    if len(a) != len(b):
        return f"field counts differ: {expected!r} vs {actual!r}"
    for x, y in zip(a, b):
        nx, ny = as_number(x), as_number(y)
        if nx is None or ny is None:
            if x != y:
                return f"{x!r} != {y!r} in {expected!r} vs {actual!r}"
        elif abs(nx - ny) > tolerance:
            return f"{nx} and {ny} differ by {abs(nx - ny):.3g} > {tolerance} in {expected!r} vs {actual!r}"
    return None


def check_sorted(lines, tolerance, name):
    scores = [as_number(split_fields(line)[0]) for line in lines]
    for i in range(1, len(scores)):
        if scores[i] is None or scores[i - 1] is None or scores[i] > scores[i - 1] + tolerance:
            return f"{name} is not ranked best first: {lines}"
    return None


def compare(expected, actual, tolerance, ranked):
    a = [line for line in expected.splitlines() if line.strip()]
    b = [line for line in actual.splitlines() if line.strip()]
    if len(a) != len(b):
        return f"{len(a)} lines vs {len(b)} lines:\n{expected}\n---\n{actual}"
    if ranked:
        for lines, name in ((a, "expected"), (b, "actual")):
            error = check_sorted(lines, tolerance, name)
            if error:
                return error
        a, b = sorted(a, key=text_key), sorted(b, key=text_key)
    for x, y in zip(a, b):
        error = compare_lines(x, y, tolerance)
        if error:
            return error
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranked", action="store_true")
    # 100x the differences measured between thread counts and kernel families
    # on the tiny fixtures (server.retrieval_rank), far below any real disagreement.
    parser.add_argument("--tolerance", type=float, default=1e-4)
    parser.add_argument("expected")
    parser.add_argument("actual")
    args = parser.parse_args()
    error = compare(args.expected, args.actual, args.tolerance, args.ranked)
    if error:
        print(f"same_numbers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
