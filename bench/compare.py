"""Writes docs/backends.md from the JSON files bench/compare.sh left in a results directory.

    python3 bench/compare.py bench/results/<date>/compare docs/backends.md

Measured cells come from the JSON files; the cells that a test demonstrates name the test. Every
figure is the raw output's: nothing here is typed in by hand.
"""

import json
import os
import sys

ORDER = ["embedded", "embedded-always", "redis", "kafka", "rabbitmq", "sqs"]
TITLES = {
    "embedded": "Embedded file log",
    "embedded-always": "Embedded, fsync=always",
    "redis": "Redis Streams",
    "kafka": "Kafka",
    "rabbitmq": "RabbitMQ streams",
    "sqs": "SQS + S3",
}
README = "../README.md"
FLEET = "../crates/waitroom/tests/fleet.rs"
CONFORMANCE = "../crates/waitroom-log/src/testkit/conformance.rs"

# What tests demonstrate, per backend (not measured here: each names its test).
ORDERING = {
    "embedded": "one file, one writer: total order",
    "redis": "a stream per room: total order per room",
    "kafka": "rooms keyed to partitions: total order per room (idempotent producer)",
    "rabbitmq": "one stream: total order",
    "sqs": "a FIFO message group per group of rooms, stamped with sequence numbers in S3",
}
DELIVERY = {
    "embedded": "read from the file: exactly the frames written",
    "redis": "at least once (consumer group); repeats skipped by position",
    "kafka": "at least once; repeats skipped by offset",
    "rabbitmq": "at least once (a reconnect re-reads a chunk); repeats skipped by offset",
    "sqs": "at least once (visibility timeout); a batch received twice keeps its sequence numbers (S3 conditional write), repeats skipped by sequence",
}
BROKER_RESTART = {
    "embedded": "no broker; a node killed with SIGKILL recovers its file (torn tail dropped)",
    "redis": "nodes turn unready, retry, resume from their last entry (fleet test: Redis killed and restarted mid-run, no acknowledged join lost)",
    "kafka": "nodes turn unready, retry, resume from their offsets (fleet test: tansu killed and restarted mid-run, no acknowledged join lost)",
    "rabbitmq": "nodes turn unready, reconnect, resume from their offsets (fleet test: RabbitMQ killed and restarted mid-run, no acknowledged join lost)",
    "sqs": "managed by AWS; against moto the fleet test restarts nodes, not moto (moto keeps no state across a restart)",
}
CRASH_LOSS = {
    "embedded": "a process crash: nothing; a power loss: up to one fsync interval (5 ms)",
    "redis": "nothing with AOF `appendfsync always`; about 1 s with `everysec`; a failover can lose the latest writes",
    "kafka": "nothing with replication 3 and `min.insync.replicas=2`; one replica: the last joins on a machine crash",
    "rabbitmq": "a process crash: nothing confirmed; a power loss of a single node: the latest joins (run 3 nodes)",
    "sqs": "nothing acknowledged (SQS and S3 store redundantly)",
}
SERVERS = {
    "embedded": "none",
    "redis": "Redis (with AOF)",
    "kafka": "Kafka brokers (here tansu)",
    "rabbitmq": "RabbitMQ with the stream plugin",
    "sqs": "none to run (AWS); an S3 bucket",
}


for table in (ORDERING, DELIVERY, BROKER_RESTART, SERVERS):
    table["embedded-always"] = table["embedded"]
CRASH_LOSS["embedded-always"] = "nothing: acknowledged after fdatasync"


def fmt(value, digits=0, unit=""):
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}{unit}".replace(",", "\u202f")
    return f"{value:,.{digits}f}{unit}".replace(",", "\u202f")


def cost(billed):
    if not billed:
        return "— (billed by server: see the CPU-s rows)"
    return (f"SQS {billed['sqs']:.3f}, S3 put+list {billed['s3PutList']:.4f}, S3 get {billed['s3Get']:.4f}: "
            f"${billed['dollarsPerMillion']:.2f}")


def ratio(a, b):
    return f"{a / b:.2f}" if a and b else "—"


def main(results, out):
    runs = {}
    for name in ORDER:
        path = os.path.join(results, f"{name}.json")
        if os.path.exists(path):
            runs[name] = json.load(open(path))
    if not runs:
        sys.exit(f"no results in {results}")
    commit = open(os.path.join(results, "commit")).read().strip()
    names = [n for n in ORDER if n in runs]
    first = runs[names[0]]
    rel = os.path.relpath(results, os.path.dirname(out))
    embedded = runs.get("embedded", {}).get("joins1")
    prices = runs.get("sqs", {}).get("prices") or "AWS list prices"
    embedded_always = runs.get("embedded-always", {}).get("joins1")

    rows = []

    def row(label, cell):
        rows.append("| " + label + " | " + " | ".join(cell(n, runs[n]) for n in names) + " |")

    row("Broker", lambda n, r: r["broker"])
    row("Servers to run", lambda n, r: SERVERS[n])
    row("Ordering", lambda n, r: ORDERING[n])
    row("FIFO inversions observed (the load run's admitted sessions)",
        lambda n, r: f"{fmt(r['fifoInversions'])} among {fmt(r['fifoSessions'])}" if r.get("fifoInversions") is not None else "—")
    row("Delivery", lambda n, r: DELIVERY[n])
    row("Delivered again / duplicate records seen (all nodes, the whole run)",
        lambda n, r: f"{fmt(r['redelivered'])} entries delivered again (skipped) / {fmt(r['duplicates'])} duplicates (no effect)"
        if r.get("redelivered") is not None else "—")
    row("Joins/s, 1 node", lambda n, r: fmt(r["joins1"]))
    row("Joins/s, 3 nodes", lambda n, r: fmt(r["joins3"]))
    row("Status polls/s, 1 node", lambda n, r: fmt(r["polls1"]))
    row("Status polls/s, 3 nodes", lambda n, r: fmt(r["polls3"]))
    row("Joins, 1 node ÷ embedded (default fsync)", lambda n, r: ratio(r["joins1"], embedded))
    row("Joins, 1 node ÷ embedded (fsync=always)", lambda n, r: ratio(r["joins1"], embedded_always))
    row("Broker's raw write rate", lambda n, r: f"{fmt(r['raw'])}/s ({r['rawWhat']})" if r["raw"] else "—")
    row("Joins, 1 node ÷ raw", lambda n, r: ratio(r["joins1"], r["raw"]))
    row("Broker's raw round trip (written, then delivered to a subscriber)",
        lambda n, r: f"{fmt(r['rawRoundTrip'])}/s" if r.get("rawRoundTrip") else "—")
    row("Joins, 1 node ÷ raw round trip", lambda n, r: ratio(r["joins1"], r.get("rawRoundTrip")))
    row("Refill latency p50 / p99 (upper bound)",
        lambda n, r: f"{fmt(r['refillP50Ms'], 1)} / {fmt(r['refillP99Ms'], 1)} ms ({r['refilled']} of {r['freed']} refilled)"
        if r["refillP50Ms"] is not None else "—")
    row("Capacity overshoot seen by clients", lambda n, r: fmt(r["overshoot"]))
    row("Node killed (SIGKILL) and started: ready in",
        lambda n, r: fmt(r["restartReadyMs"] / 1000, 1, " s") if r["restartReadyMs"] is not None else "not within the wait")
    row("Broker start (until ready)", lambda n, r: fmt(r["brokerStartMs"] / 1000, 1, " s") if not n.startswith("embedded") else "—")
    row("Broker memory at the end", lambda n, r: fmt(r["brokerRssMib"], 0, " MiB"))
    row("Nodes' CPU-s per million joins (every node applies every join)", lambda n, r: fmt(r["nodeCpuSecondsPerMillionJoins"]))
    row("Broker CPU-s per million joins", lambda n, r: fmt(r["brokerCpuSecondsPerMillionJoins"]))
    row("Append requests per join", lambda n, r: fmt(r["appendRequestsPerJoin"], 3))
    row("Heartbeats/s, every node", lambda n, r: fmt(r.get("heartbeats")))
    row("Append requests per heartbeat", lambda n, r: fmt(r.get("appendRequestsPerHeartbeat"), 4))
    row("Billed requests per join (SQS + S3) and dollars per million joins", lambda n, r: cost(r.get("billedPerJoin")))
    row("Billed requests per heartbeat and dollars per million heartbeats", lambda n, r: cost(r.get("billedPerHeartbeat")))
    row("A broker restart", lambda n, r: BROKER_RESTART[n])
    row("A crash of the broker loses (recommended settings)", lambda n, r: CRASH_LOSS[n])

    header = "| | " + " | ".join(TITLES[n] for n in names) + " |"
    rule = "|---|" + "---|" * len(names)
    text = f"""# The backends compared

Generated by `bench/compare.sh` (this file is its output: rerun it to regenerate) on
{first['machine']}, commit `{commit}`, from the raw outputs in [`{rel}`]({rel}). Each backend ran
alone, one after the other: its broker on loopback, three waitroom nodes on it (one for the
embedded log), `wrk {first['wrk']}`, then the same `waitroom load` scenario on the last node
({first['loadUsers']} users over {first['rampSeconds']} s into a room of capacity {first['loadCapacity']}, each holding a slot 1 to 3 s), then that node
killed with SIGKILL and started again. The load average at the start of each backend's run is in
its `.txt` file. Everything shares the machine's cores: the broker, the nodes and `wrk`, so the
figures compare the backends with each other on this machine, not with production hardware. moto
stands in for SQS: its rates say what one Python process serves, not what AWS would; its request
counts (`waitroom_log_requests_total`, counted by the nodes) do not depend on moto, but for
receives that come back empty, left out here (against moto the nodes short-poll). SQS's dollars
are at {prices}.

{header}
{rule}
""" + "\n".join(rows) + f"""

Rows that name a test are demonstrated there, not measured here: ordering, delivery and restarts
by the conformance suite every backend passes ([`conformance.rs`]({CONFORMANCE})) and by the fleet
test ([`fleet.rs`]({FLEET}): three nodes, 1 000 concurrent joins, exact capacity and positions
whichever node answers, a node killed and restored from a snapshot, the broker killed and
restarted); what a crash loses at other settings is in each backend's section of the
[README]({README}#backends).

**Reading the figures.** A join is answered once its node has read the record back from the log
and applied it, so a join costs the broker a write *and* a delivery to every node; the broker's
raw write rate counts the write only. Polls never touch the broker. "Delivered again" counts log
entries a node read a second time (a reconnect, a redelivery) and skipped by position;
"duplicates" counts records a room applied with no effect (an append retried after an unclear
answer: the same record id or session id). "Append requests per join"
below 1 is the node's group commit: concurrent joins share an append. A shared backend is
compared with the embedded log at matching durability: Redis with `appendfsync always`, like
`fsync=always`, syncs every write; the others count on replication and compare with the default.
"""
    open(out, "w").write(text)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
