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

