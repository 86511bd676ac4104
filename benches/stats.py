"""Helpers the load scripts' report steps share (imported with PYTHONPATH=benches)."""

def ms(value):
    """wrk's and h2load's durations ("812.00us", "3.41ms", "1.2s") in milliseconds."""
    if value.endswith("us"):
        return float(value[:-2]) / 1000
    if value.endswith("ms"):
        return float(value[:-2])
    if value.endswith("s"):
        return float(value[:-1]) * 1000
    return float(value)


def oha_row(text):
    """oha's JSON summary as "REQ/S P50ms P99ms [errors=N]" (wrk's units)."""
    import json
    d = json.loads(text)
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    bad = sum(v for k, v in codes.items() if k != "200") + sum(d.get("errorDistribution", {}).values())
    row = f"{s['requestsPerSec']:.1f} {p['p50'] * 1000:.3f}ms {p['p99'] * 1000:.3f}ms"
    return row + (f" errors={bad}" if bad else "")


if __name__ == "__main__":
    import sys
    if sys.argv[1:] == ["oha-row"]:
        print(oha_row(sys.stdin.read()))
