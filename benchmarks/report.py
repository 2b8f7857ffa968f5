"""From the runs to the results: medians, ratios, the Markdown table and the chart."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .disk import SLOW_MS, Syncs
from .load import PACE_MS

# The receptors' names, as the table and the raw runs give them (benchmarks/servers.py names its receptors so).
SOAPRECEPTOR, NAIVE, BARE = "soapreceptor", "naive spyne", "bare limit"
RECEPTOR_ORDER = (SOAPRECEPTOR, NAIVE, BARE)
NO_DISPATCHER, NO_JOURNAL = "soapreceptor without dispatcher", "soapreceptor without journal"
DIAGNOSTIC_ORDER = (SOAPRECEPTOR, NO_DISPATCHER, NO_JOURNAL, NAIVE, BARE)
IN_MEMORY = "soapreceptor, journal in memory"


@dataclass(frozen=True)
class Run:
    """One receptor, one message size, one round: what wrk and /proc measured."""

    receptor: str
    events: int
    round: int
    kind: str  # "peak" (full speed) or "paced" (half of soapreceptor's peak)
    rate: float
    p50_ms: float
    p99_ms: float
    peak_rss_kib: int
    errors: int
    refused: int
    backlog: int | None = None  # soapreceptor: events not yet handed on when the load stopped
    delivered_rate: float | None = None  # soapreceptor: events handed to the hook per second during the run
    cpu_us: float | None = None  # CPU time of all the server's processes per message answered during the run
    # soapreceptor: messages committed to the journal during the run, and how many waited over disk.SLOW_MS for it
    # (the receptor's own histogram, read before and after the run).
    commits: int | None = None
    slow_commits: int | None = None
    # soapreceptor: the share of the run (0 to 1) during which the disk held one of its journal syncs past
    # 10 ms, averaged over its workers (harness.journal_stalled): messages due then could not be answered
    # within 10 ms by any receptor that syncs before answering.
    stalled_share: float | None = None
    # Paced: how late the requests left, behind their times on the schedule (see wrk.lua), and bounds on the
    # p99 counted from when each was due (load.due_p99). None at full speed.
    late_p99_ms: float | None = None
    due_p99_least_ms: float | None = None
    due_p99_most_ms: float | None = None

    @property
    def due_p99_ms(self) -> tuple[float, float] | None:
        """Paced: bounds (at least, at most) on the p99 counted from when each message was due.

        wrk's p99 counts from when a request left, as plain wrk does; a
        request held back for want of a free connection had waited before
        that, as MTurk's message would have (coordinated omission).
        """
        if self.due_p99_least_ms is None or self.due_p99_most_ms is None:
            return None
        return self.due_p99_least_ms, self.due_p99_most_ms

    @property
    def slow_commit_share(self) -> float | None:
        """The share of the run's messages whose journal commit took over disk.SLOW_MS (0 to 1)."""
        return self.slow_commits / self.commits if self.commits and self.slow_commits is not None else None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DiskRun:
    """The disk alone in one round: messages stored at the rate and size of that round's paced soapreceptor run."""

    events: int
    round: int
    rate: float  # messages a second, over all writers: the paced run's rate
    size: int  # bytes a message
    writers: int  # one file each, as each worker has a spool segment of its own
    syncs: Syncs

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Row:
    """The medians of one receptor at one message size."""

    receptor: str
    events: int
    rate: float
    p50_ms: float
    p99_ms: float
    paced_rate: float | None
    paced_p50_ms: float | None
    paced_p99_ms: float | None
    #: Run.due_p99_most_ms: the paced p99 as a sender on the schedule saw it, at most.
    paced_due_p99_ms: float | None
    peak_rss_mib: float
    cpu_us: float | None
    inprocess_us: float | None
    backlog: float | None
    delivered_rate: float | None
    #: soapreceptor's dispatcher alone, events per second (None for the peers).
    dispatcher_rate: float | None = None


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def rows(
    runs: Sequence[Run],
    inprocess: dict[str, dict[int, float]],
    dispatched: dict[int, float],
    order: Sequence[str] = RECEPTOR_ORDER,
) -> list[Row]:
    """One row per (receptor, events per message), in ``order``, medians over the rounds."""
    table = []
    for events in sorted({run.events for run in runs}):
        for receptor in order:
            peak = [r for r in runs if (r.receptor, r.events, r.kind) == (receptor, events, "peak")]
            paced = [r for r in runs if (r.receptor, r.events, r.kind) == (receptor, events, "paced")]
            if not peak:
                continue
            backlogs = [float(r.backlog) for r in peak if r.backlog is not None]
            delivered = [r.delivered_rate for r in peak if r.delivered_rate is not None]
            seconds = inprocess.get(receptor, {}).get(events)
            table.append(
                Row(
                    receptor=receptor,
                    events=events,
                    rate=statistics.median(r.rate for r in peak),
                    p50_ms=statistics.median(r.p50_ms for r in peak),
                    p99_ms=statistics.median(r.p99_ms for r in peak),
                    paced_rate=_median([r.rate for r in paced]),
                    paced_p50_ms=_median([r.p50_ms for r in paced]),
                    paced_p99_ms=_median([r.p99_ms for r in paced]),
                    paced_due_p99_ms=_median([r.due_p99_most_ms for r in paced if r.due_p99_most_ms is not None]),
                    peak_rss_mib=max(r.peak_rss_kib for r in [*peak, *paced]) / 1024,
                    cpu_us=_median([r.cpu_us for r in peak if r.cpu_us is not None]),
                    inprocess_us=None if seconds is None else seconds * 1e6,
                    backlog=_median(backlogs),
                    delivered_rate=_median(delivered),
                    dispatcher_rate=dispatched.get(events) if receptor == SOAPRECEPTOR else None,
                )
            )
    return table


def ratios(runs: Sequence[Run], peer: str, subject: str = SOAPRECEPTOR) -> dict[int, float]:
    """``subject``'s full-speed throughput over ``peer``'s, per message size: the median of the per-round ratios.

    Each round ran the receptors one after the other, so a ratio compares
    runs made within a minute of each other on the same machine.
    """
    return {events: statistics.median(values) for events, values in round_ratios(runs, peer, subject).items()}


def round_ratios(runs: Sequence[Run], peer: str, subject: str = SOAPRECEPTOR) -> dict[int, list[float]]:
    """``subject``'s full-speed throughput over ``peer``'s in each round, in round order, per message size."""
    found = {}
    for events in sorted({run.events for run in runs}):
        per_round = []
        for number in sorted({run.round for run in runs}):
            peak = {r.receptor: r.rate for r in runs if (r.events, r.round, r.kind) == (events, number, "peak")}
            if peak.get(subject) and peak.get(peer):
                per_round.append(peak[subject] / peak[peer])
        if per_round:
            found[events] = per_round
    return found


def _number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def markdown(table: Sequence[Row], runs: Sequence[Run], context: dict[str, str], disk: Sequence[DiskRun] = ()) -> str:
    """The results page: how it was run, the table, the ratios, the targets of issue 8, and the disk alone."""
    naive, bare = ratios(runs, NAIVE), ratios(runs, BARE)
    lines = [
        "# soapreceptor benchmark results",
        "",
        "Produced by `make bench` (`python -m benchmarks.harness`); every number below comes from the run",
        "described here. Ratios are what carries over to another machine; absolute numbers do not.",
        "",
        *(f"- {key}: {value}" for key, value in context.items()),
        "",
        "## Throughput and latency",
        "",
        "Full speed: wrk with keep-alive connections as fast as the receptor answers. Paced: the same",
        "message size offered at half of soapreceptor's full-speed rate, to every receptor, on a fixed schedule:",
        "each request leaves when it is due, on whichever connection is free, whether or not earlier answers",
        "have come, as MTurk sends (benchmarks/wrk.lua), with connections enough for each to send about",
        f"every {PACE_MS} ms. One that falls behind, every connection waiting, leaves as soon as one is free.",
        "The rate reached is in the table: a receptor slower than the schedule answers at its own full speed.",
        "Latency is wrk's, from sending a request to the end of its answer. Paced p99 from due: counted from",
        "when each message was due on the schedule, as a sender that does not wait (MTurk) sees it: a request",
        "held back for a free connection waited before wrk's clock started. wrk cannot pair each request's",
        "lateness with its latency, so this is an upper bound from the two parts' top percentiles: the least",
        "sum of the latency's percentile p and the lateness's percentile 199 - p, which at most 1 % of messages",
        "exceed. RSS is the largest peak resident set (VmHWM) of any gunicorn worker. CPU: user and system",
        "time of all the receptor's processes (gunicorn's master and workers, soapreceptor's dispatcher) during",
        "the full-speed run, per message answered; wrk's own and the kernel's work for loopback traffic charged",
        "to wrk are not in it. In-process: one message after another through the receptor's WSGI callable, no",
        "HTTP (soapreceptor's includes its fsync'd journal commit). Delivered: events soapreceptor's",
        "dispatcher handed to the (no-op) hook per second during the full-speed run, beside the events/s it",
        "accepted. Backlog: events journaled but not yet handed on when the load stopped; the dispatcher then",
        "delivers them. Dispatcher alone: events per second soapreceptor's dispatcher hands to the (no-op) hook",
        "with nothing else running, from a journal already holding them: how fast a backlog clears.",
        "",
        "| receptor | events/msg | msg/s | events/s | p50 ms | p99 ms | paced msg/s | paced p50 ms "
        "| paced p99 ms | paced p99 from due ms, at most | RSS MiB | CPU µs/msg | in-process µs/msg "
        "| delivered events/s | backlog | dispatcher alone events/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in table:
        lines.append(
            f"| {row.receptor} | {row.events} | {_number(row.rate)} | {_number(row.rate * row.events)} "
            f"| {_number(row.p50_ms, 1)} | {_number(row.p99_ms, 1)} | {_number(row.paced_rate)} "
            f"| {_number(row.paced_p50_ms, 1)} | {_number(row.paced_p99_ms, 1)} | {_number(row.paced_due_p99_ms, 1)} "
            f"| {_number(row.peak_rss_mib, 1)} "
            f"| {_number(row.cpu_us)} | {_number(row.inprocess_us)} | {_number(row.delivered_rate)} "
            f"| {_number(row.backlog)} | {_number(row.dispatcher_rate)} |"
        )
    lines += [
        "",
        "## Ratios (soapreceptor's full-speed throughput over the peer's, median of the per-round ratios)",
        "",
        "| events/msg | soapreceptor / naive spyne | soapreceptor / bare limit |",
        "|---:|---:|---:|",
    ]
    for events in sorted(set(naive) | set(bare)):
        lines.append(f"| {events} | {_number(naive.get(events), 2)} | {_number(bare.get(events), 2)} |")
    lines += ["", "## Targets (issue 8, 10-event messages)", ""]
    lines += _targets(table, runs, disk)
    lines += _disk(disk, runs)
    lines += _diagnosis(runs)
    lines.append("")
    return "\n".join(lines)


def _diagnosis(runs: Sequence[Run]) -> list[str]:
    """The diagnostic runs' section: soapreceptor with its dispatcher, then its journal write, taken away."""
    sizes = sorted({run.events for run in runs if run.receptor == NO_JOURNAL})
    if not sizes:
        return []
    events = sizes[0]
    lines = [
        "",
        f"## Where soapreceptor's time goes ({events}-event messages, full speed)",
        "",
        "Diagnostic runs, in the same rounds as the three above: soapreceptor without its embedded dispatcher",
        "(the journal write as shipped, nothing else competing for the CPUs), and also without its journal write",
        "(benchmarks/no_journal.py: the shipped Notify path, with the durable commit left out; it keeps nothing,",
        "so it is never a receptor to run). Ratios are of each row's throughput over the column's, median of the",
        "per-round ratios.",
        "",
        "| receptor | msg/s | p99 ms | CPU µs/msg | / soapreceptor | / naive spyne | / bare limit |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows([run for run in runs if run.events == events], {}, {}, order=DIAGNOSTIC_ORDER):
        over = [
            "-" if peer == row.receptor else _number(ratios(runs, peer, subject=row.receptor).get(events), 2)
            for peer in RECEPTOR_ORDER
        ]
        lines.append(
            f"| {row.receptor} | {_number(row.rate)} | {_number(row.p99_ms, 1)} | {_number(row.cpu_us)} "
            + "".join(f"| {cell} " for cell in over)
            + "|"
        )
    return lines


def _disk(disk: Sequence[DiskRun], runs: Sequence[Run]) -> list[str]:
    """The disk-alone section: each round's syncs, beside which the paced latency reads."""
    if not disk:
        return []
    first = disk[0]
    lines = [
        "",
        f"## The disk alone ({first.events}-event messages, half of peak)",
        "",
        "soapreceptor syncs each message to its worker's spool file before answering: no answer comes sooner",
        "than the disk syncs. In each round, after soapreceptor's paced run and with no receptor running, the",
        "harness stored messages as its workers had, and nothing else: the run's messages a second, each a",
        f"message's size ({first.size:,} bytes), over one preallocated file per worker ({first.writers}), those",
        "that arrive during a sync written and synced (`fdatasync`) together after it, as soapreceptor's group",
        "commit does. A message's latency runs from its arrival to the end of the sync that holds it: the least",
        f"any receptor that stores it first can answer in. Where over 1 % of them take more than {SLOW_MS:g} ms,",
        "no such receptor meets the latency target on this machine, whatever its code.",
        "",
        "The probe runs after soapreceptor's run, not during it (it would disturb what it explains), and this",
        "machine's disk stalls now and then: a stall in one need not come in the other. So the column \"during",
        'the run" is from soapreceptor itself, in its paced run: the share of its messages whose journal commit took',
        f"over {SLOW_MS:g} ms (from the group commit taking the message to the return of the sync that holds it,",
        "the wait for the sync before included; the receptor's own histogram, read before and after the run).",
        "That share leaves out the messages that arrive during a stall and wait for a thread before their commit",
        'starts. Hence the column "disk stalled": the share of the run during which one of its workers\' syncs',
        f"had been running over {SLOW_MS:g} ms (each worker's time past {SLOW_MS:g} ms in its syncs, over the run's",
        "length, averaged over the workers; the receptor's counter soapreceptor_journal_stalled_seconds). Linux",
        "sends a disk one cache flush at a time on each of its queues, so a message due during such a stall cannot",
        "be synced before the stall ends, whoever writes it: on a disk with one queue, that share of the messages",
        f"waits over {SLOW_MS:g} ms in any receptor that syncs before answering. Over 1 %, the latency target was",
        "out of reach in that run, whatever the code.",
        "",
        "And the code without the disk: right after the probe, soapreceptor as shipped, paced the same way, but",
        "with its spool and journal in memory (tmpfs, where a sync returns at once): every step of its path runs,",
        "and the p99 it reaches is its own, with no disk in it.",
        "",
        f"| round | messages/s | messages | syncs | p50 ms | p99 ms | slowest ms | over {SLOW_MS:g} ms "
        f"| during the run: commits over {SLOW_MS:g} ms | during the run: disk stalled | journal in memory: msg/s "
        "| journal in memory: p99 from due ms, at most |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    during = {(run.events, run.round): run for run in runs if (run.receptor, run.kind) == (SOAPRECEPTOR, "paced")}
    memory = {(run.events, run.round): run for run in runs if (run.receptor, run.kind) == (IN_MEMORY, "paced")}
    for run in sorted(disk, key=lambda run: run.round):
        syncs = run.syncs
        alone = memory.get((run.events, run.round))
        paced = during.get((run.events, run.round))
        lines.append(
            f"| {run.round + 1} | {_number(run.rate)} | {_number(syncs.count)} | {_number(syncs.syncs)} "
            f"| {_number(syncs.p50_ms, 2)} | {_number(syncs.p99_ms, 1)} | {_number(syncs.max_ms, 1)} "
            f"| {_number(syncs.slow)} | {_percent(paced.slow_commit_share if paced else None)} "
            f"| {_percent(paced.stalled_share if paced else None)} "
            f"| {_number(alone.rate if alone else None)} | {_number(alone.due_p99_most_ms if alone else None, 1)} |"
        )
    return lines


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


def _targets(table: Sequence[Row], runs: Sequence[Run], disk: Sequence[DiskRun] = ()) -> list[str]:
    """Each target of issue 8 with its verdict; for the measured ones, each round's value too.

    A verdict is on the median of the rounds, and one round may decide it on
    a noisy machine: the rounds show how near it was.
    """

    def spread(values: Sequence[float], digits: int) -> str:
        return f"; rounds: {', '.join(_number(value, digits) for value in values)}" if values else ""

    mine = {row.events: row.inprocess_us for row in table if row.receptor == SOAPRECEPTOR}
    ten_us, hundred_us = mine.get(10), mine.get(100)
    growth = hundred_us / ten_us if ten_us and hundred_us else None
    paced = sorted(
        (r for r in runs if (r.receptor, r.events, r.kind) == (SOAPRECEPTOR, 10, "paced")), key=lambda run: run.round
    )
    p99s = [run.p99_ms for run in paced]
    dues = [due for run in paced if (due := run.due_p99_ms) is not None]
    least, most = _median([low for low, _ in dues]), _median([high for _, high in dues])
    naive, bare = round_ratios(runs, NAIVE).get(10, []), round_ratios(runs, BARE).get(10, [])
    over_naive, over_bare = _median(naive), _median(bare)
    disk_p99s = [run.syncs.p99_ms for run in sorted(disk, key=lambda run: run.round) if run.events == 10]
    beside_disk = (
        f"; the disk alone, same rounds: p99 {_number(_median(disk_p99s), 1)} ms{spread(disk_p99s, 1)}"
        if disk_p99s
        else ""
    )
    in_memory = sorted(
        (r for r in runs if (r.receptor, r.events, r.kind) == (IN_MEMORY, 10, "paced")), key=lambda run: run.round
    )
    memory_p99s = [run.due_p99_most_ms for run in in_memory if run.due_p99_most_ms is not None]
    if memory_p99s:
        beside_disk += (
            "; soapreceptor with its journal in memory, same rounds: p99 from due at most "
            f"{_number(_median(memory_p99s), 1)} ms{spread(memory_p99s, 1)}"
        )
    shares = [share for run in paced if (share := run.slow_commit_share) is not None]
    if shares:
        # Over 1 %, these alone put the run's p99 over the bound: each waited that long before its answer could go.
        beside_disk += (
            f"; messages whose journal commit took over {SLOW_MS:g} ms during the run: {_percent(_median(shares))}; "
            f"rounds: {', '.join(_percent(share) for share in shares)}"
        )
    stalls = [share for run in paced if (share := run.stalled_share) is not None]
    if stalls:
        # The disk's part, bounded below: over 1 % of the run stalled, no receptor that syncs first meets the target.
        out_of_reach = sum(share > 0.01 for share in stalls)
        beside_disk += (
            f"; the disk held a journal sync over {SLOW_MS:g} ms for {_percent(_median(stalls))} of the run; rounds: "
            f"{', '.join(_percent(share) for share in stalls)}; over 1 %, out of reach for any receptor that syncs "
            f"before answering, in {out_of_reach} of {len(stalls)} rounds"
        )
    return [
        f"- soapreceptor / naive spyne >= 3: {_number(over_naive, 2)} "
        f"({_verdict(None if over_naive is None else over_naive >= 3)}{spread(naive, 2)})",
        f"- soapreceptor / bare limit >= 0.5: {_number(over_bare, 2)} "
        f"({_verdict(None if over_bare is None else over_bare >= 0.5)}{spread(bare, 2)})",
        f"- p99 at half of peak <= 10 ms, counted from when each message was due: at most {_number(most, 1)} ms, "
        f"at least {_number(least, 1)} ms ({_bounded_verdict(least, most, 10)}"
        f"{'; rounds: ' + ', '.join(f'{low:.1f}-{high:.1f}' for low, high in dues) if dues else ''}; "
        f"from when each request left, as wrk counts: {_number(_median(p99s), 1)} ms{spread(p99s, 1)}{beside_disk})",
        f"- time per message at most linear in events (in-process, 100 events / 10 events <= 10): "
        f"{_number(growth, 2)} ({_verdict(None if growth is None else growth <= 10)})",
    ]


def _bounded_verdict(least: float | None, most: float | None, bound: float) -> str:
    """Whether a value known only to lie between ``least`` and ``most`` is at most ``bound``."""
    if least is None or most is None:
        return _verdict(None)
    if most <= bound or least > bound:
        return _verdict(most <= bound)
    return f"**not shown** either way: {bound:g} ms lies between the two"


def _verdict(ok: bool | None) -> str:
    """A target's verdict, as the results say it."""
    return "not measured" if ok is None else ("met" if ok else "**not met**")


def chart(table: Sequence[Row], path: Path) -> Path:
    """A PNG of full-speed throughput (messages and events per second) against events per message."""
    import matplotlib  # noqa: PLC0415 (only the harness needs it)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    figure, (messages, events) = plt.subplots(1, 2, figsize=(11, 4.2))
    for receptor, marker in zip(RECEPTOR_ORDER, ("o", "s", "^"), strict=True):
        mine = sorted((row.events, row.rate) for row in table if row.receptor == receptor)
        if not mine:
            continue
        sizes = [size for size, _ in mine]
        messages.plot(sizes, [rate for _, rate in mine], marker=marker, label=receptor)
        events.plot(sizes, [rate * size for size, rate in mine], marker=marker, label=receptor)
    for axes, unit in ((messages, "messages per second"), (events, "events per second")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("events per message")
        axes.set_ylabel(unit)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle("Throughput at full speed (2 gunicorn workers, same settings for all three)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
