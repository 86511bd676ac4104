"""The peer for benches/stream_load.sh: the NATS project's Python client (nats-py)
publishing COUNT messages of SIZE bytes to a JetStream stream with acknowledgements, WINDOW
in flight, as the capture sink does. Prints messages/s and MB/s acknowledged.

    pip install nats-py
    python3 benches/nats_peer.py nats://127.0.0.1:4222 STREAM COUNT SIZE [WINDOW]
    REPLICAS=3 python3 benches/nats_peer.py …     (a stream of 3 copies, on a cluster)
"""
import asyncio
import os
import sys
import time

import nats


async def main():
    url, stream, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    window = int(sys.argv[5]) if len(sys.argv) > 5 else 32
    nc = await nats.connect(url)
    js = nc.jetstream()
    try:
        await js.add_stream(name=stream, subjects=[f"peer.{stream}.>"],
                            num_replicas=int(os.environ.get("REPLICAS", "1")))
    except Exception:
        pass
    # Compressed tape blocks look random to the wire: random bytes, not zeros.
    payload = os.urandom(size)
    started = time.perf_counter()
    sent = 0
    while sent < count:
        n = min(window, count - sent)
        await asyncio.gather(*(js.publish(f"peer.{stream}.bench", payload) for _ in range(n)))
        sent += n
    secs = time.perf_counter() - started
    print(f"{count} messages of {size} B acknowledged in {secs:.2f} s: {count / secs:.0f} messages/s, "
          f"{count * size / secs / 1e6:.1f} MB/s")
    await nc.close()


asyncio.run(main())
