"""The benchmark suite: `rally bench [SCENARIO ...]` / `python -m benchmarks`.

A simulated streaming network (gateway.simulator) drives Rallypoint over loopback from
separate load-generator processes, open-loop and seeded; the same traffic goes through two
plain aiohttp baselines (naive and pipelined) on the same redis-server. Modules: loadgen
(the generator processes), wire (raw HTTP/WebSocket clients), target (rally serve and the
baselines as processes), baselines, procs (CPU/RSS), bench (one measured run), scenarios,
report (tables, results.json, plots, RESULTS.md).
"""
