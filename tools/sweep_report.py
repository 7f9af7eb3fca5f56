"""The sweep's table (terminal or README markdown) and its list of missed goals."""
import re
from pathlib import Path
from typing import List

from tabulate import tabulate

from tools.sweep_cases import BATCH


def _number(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _qdq(result) -> str:
    return "-" if result is None or not result.ok else f"{result.quantize}/{result.dequantize}"


def _status(result, width: int = 70) -> str:
    """The status on one short line: a PassError keeps the pass's name and the error under it."""
    if result is None:
        return "n/a (no torch.ao)"
    status = re.sub(r"PassError: pass '(\w+)' failed \(after \[.*?\]\): ", r"(pass \1) ", result.status)
    return status if len(status) <= width else status[:width - 3] + "..."


def _ratio(latency: dict, name: str) -> str:
    return f"{latency[name] / latency['fp32']:.2f}" if name in latency and "fp32" in latency else "-"


def _goals(result) -> str:
    missed = [goal for goal, met in result.goals().items() if met is False]
    return "ok" if not missed else "MISSED " + ",".join(missed)


def cpu_flags() -> str:
    """The int8-relevant ISA flags of this CPU, printed beside latencies (they decide int8 speed)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "cpu flags unknown"
    return "cpu: " + " ".join(f for f in ("avx2", "avx512f", "avx512_vnni", "amx_int8") if f in flags)


def format_table(results: List, markdown: bool = False) -> str:
    """One row per case. ``markdown``: the README's columns (model, statuses, SQNR, q/dq counts, notes)."""
    if markdown:
        rows = [[r.case.name, _status(r.fxq), _number(r.fxq.sqnr), _number(r.torch_ao and r.torch_ao.sqnr),
                 _qdq(r.fxq), _qdq(r.torch_ao), _note(r)] for r in results]
        headers = ["model", "fxq status", "SQNR fxq", "SQNR torch.ao", "q/dq fxq", "q/dq torch.ao", "notes"]
        return tabulate(rows, headers, tablefmt="github")
    rows = [[r.case.name, _status(r.fxq), _status(r.torch_ao), _number(r.fxq.sqnr),
             _number(r.torch_ao and r.torch_ao.sqnr), _qdq(r.fxq), _qdq(r.torch_ao), _ratio(r.latency_ms, "fxq"),
             _ratio(r.latency_ms, "torch.ao"), len(r.fxq.warnings), "yes" if r.fxq.unchanged else "NO", _goals(r)]
            for r in results]
    headers = ["model", "fxq", "torch.ao", "SQNR fxq", "SQNR ao", "q/dq fxq", "q/dq ao", "int8/fp32 fxq",
               "int8/fp32 ao", "warn fxq", "unchanged", "goals"]
    return tabulate(rows, headers) + f"\n(latency: medians of alternating calls, 1 thread, batch {BATCH}; {cpu_flags()})"


def _note(result) -> str:
    theirs = result.torch_ao
    note = result.case.note
    if theirs is not None and not theirs.ok:
        note += f"; torch.ao fails at {_status(theirs, 60)}"
    return note.replace("|", "/")


def goal_misses(results: List) -> List[str]:
    """One line per missed goal, naming the case and the numbers behind it."""
    lines = []
    for result in results:
        for goal, met in result.goals().items():
            if met is False:
                theirs = result.torch_ao
                lines.append(f"{result.case.name}: {goal} missed (fxq {result.fxq.status}, sqnr {_number(result.fxq.sqnr)}, "
                             f"q/dq {_qdq(result.fxq)}, unchanged {result.fxq.unchanged}; torch.ao "
                             f"{_status(theirs)}, sqnr {_number(theirs and theirs.sqnr)}, q/dq {_qdq(theirs)})")
    return lines


def summary(results: List) -> str:
    """One line of totals: how many cases each implementation converts and runs, and how many meet every goal."""
    fxq_ok = sum(r.fxq.ok for r in results)
    torch_ao_ok = sum(r.torch_ao is not None and r.torch_ao.ok for r in results)
    only_fxq = sum(r.fxq.ok and r.torch_ao is not None and not r.torch_ao.ok for r in results)
    met = sum(not any(m is False for m in r.goals().values()) for r in results)
    return (f"{len(results)} cases: fxq runs {fxq_ok}, torch.ao runs {torch_ao_ok} ({only_fxq} only fxq); "
            f"every goal met on {met}")
