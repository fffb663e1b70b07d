# W3's yardstick (issue 16): the pipeline shape as a plain asyncio loop, no framework, no
# persistence. N coroutines, each three sequential phases of one model call's latency, the
# middle one three calls wide. Run: python3 benches/w3_asyncio.py [N] [SECONDS_PER_CALL]
import asyncio, resource, sys, time

async def run(call):
    await asyncio.sleep(call)                                   # classify
    await asyncio.gather(*(asyncio.sleep(call) for _ in range(3)))  # research x3
    await asyncio.sleep(call)                                   # synthesize

async def main(n, call):
    started = time.perf_counter()
    await asyncio.gather(*(run(call) for _ in range(n)))
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"asyncio: {n} runs x 3 phases of {call * 1000:.0f} ms: wall {wall:.2f} s, peak RSS {peak:.1f} MiB")

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
call = float(sys.argv[2]) if len(sys.argv) > 2 else 0.1
asyncio.run(main(n, call))
