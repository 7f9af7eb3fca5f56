"""Graph dumps: a table to read, JSON to diff and parse, a networkx graph (and DOT / GraphML) to draw.

Every format is deterministic text built from :func:`fxq.debug.graph_records.node_records` (no addresses, fixed key
order, floats to 6 significant digits), so dumps can be golden files.

JSON schema, version 1::

    {"schema": "fxq.graph", "version": 1,
     "nodes": [{"index": 0, "name": "x", "op": "placeholder", "target": "x", "scope": "", "scope_type": "M",
                "inputs": [], "dtype": "float32", "shape": [1, 4], "qconfig": null, "quant": null}, ...]}

``quant`` is ``{"dtype", "min", "max", "scale", "zero_point"}`` (see fxq.debug.graph_records for each key); edges
are each node's ``inputs``. A change to the schema bumps ``version``.

Example::

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> gm = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.ones(1, 2),))
    >>> print(fxq.dump(gm).splitlines()[2][:12])
    0    input_1
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import networkx as nx
from tabulate import tabulate
from torch import fx

from fxq.debug.graph_records import RECORD_KEYS, SCHEMA_VERSION, node_records

FORMATS = ("table", "json", "dot", "graphml")
_TABLE_HEADERS = ("#", "name", "op", "target", "scope", "value", "qconfig", "min/max", "scale", "zp", "qdtype")


def dump(gm: fx.GraphModule, format: str = "table", path: Union[str, Path, None] = None,
         example_inputs: Optional[tuple] = None) -> str:
    """The graph of ``gm`` as text in ``format`` ("table", "json", "dot" or "graphml"); also written to ``path``.

    ``example_inputs`` (optional) runs the graph once so the value column shows the actual output dtypes,
    e.g. quint8 in a converted model; without it the values are those recorded by prepare_fx.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> gm = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.ones(1, 2),))
    >>> fxq.dump(gm, "json").count('"op": "call_module"')
    3
    """
    if format not in FORMATS:
        raise ValueError(f"fxq.dump: unknown format {format!r}; use one of {', '.join(FORMATS)}")
    records = node_records(gm, example_inputs)
    if format == "table":
        text = format_table(records)
    elif format == "json":
        text = json.dumps({"schema": "fxq.graph", "version": SCHEMA_VERSION, "nodes": records}, indent=1) + "\n"
    elif format == "dot":
        text = _dot(records)
    else:
        text = "\n".join(nx.generate_graphml(_graph(records))) + "\n"
    if path is not None:
        Path(path).write_text(text)
    return text


def to_networkx(gm: fx.GraphModule, example_inputs: Optional[tuple] = None) -> nx.DiGraph:
    """A ``networkx.DiGraph``: one vertex per node (keyed by name) with the record's fields as attributes,
    an edge from each input to its user. Missing values are left out, lists become text, so GraphML holds it.

    >>> import torch, fxq
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 2)).eval()
    >>> gm = fxq.prepare_fx(model, fxq.get_default_qconfig_mapping(), (torch.ones(1, 2),))
    >>> g = fxq.to_networkx(gm)
    >>> g.nodes["_0"]["op"], list(g.successors("_0"))
    ('call_module', ['activation_post_process_1'])
    """
    return _graph(node_records(gm, example_inputs))


def format_table(records: list[dict]) -> str:
    """The table ``dump(gm, "table")`` prints, from records."""
    rows = [_table_row(r) for r in records]
    return tabulate(rows, headers=_TABLE_HEADERS, tablefmt="simple", disable_numparse=True) + "\n"


def _table_row(record: dict) -> list:
    quant = record["quant"] or {}
    value = ""
    if record["dtype"] is not None:
        shape = "x".join(str(d) for d in record["shape"] or [])
        value = f"{record['dtype']}[{shape}]"
    low, high = quant.get("min"), quant.get("max")
    range_text = _range_text(low, high)
    return [record["index"], record["name"], record["op"], record["target"], record["scope"] or "<root>", value,
            _short_qconfig(record["qconfig"]), range_text, _text(quant.get("scale")), _text(quant.get("zero_point")),
            quant.get("dtype", "")]


def _range_text(low, high) -> str:
    if low is None or high is None:
        return ""
    if isinstance(low, list):  # a per-channel observer (e.g. F.linear's weight): the extremes over channels
        return f"[{len(low)}] {min(low):.4g}..{max(high):.4g}"
    return f"{low:.4g}..{high:.4g}"


def _short_qconfig(qconfig: Optional[str]) -> str:
    if qconfig is None:
        return ""
    if qconfig.startswith("QConfig(") and qconfig.endswith(")"):
        qconfig = qconfig[len("QConfig("):-1]
    for long, short in (("Observer", ""), ("per_channel_", "pc_"), ("per_tensor_", "pt_"), ("reduce_range=True", "rr")):
        qconfig = qconfig.replace(long, short)
    return qconfig


def _text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):  # per channel: the count and the range keep the table narrow
        return f"[{len(value)}] {min(value):.4g}..{max(value):.4g}"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _flat_attributes(record: dict) -> dict:
    flat = {key: record[key] for key in RECORD_KEYS if key not in ("inputs", "quant", "name")}
    flat["shape"] = "x".join(str(d) for d in record["shape"]) if record["shape"] is not None else None
    for key, value in (record["quant"] or {}).items():
        flat[f"q_{key}"] = _text(value) if isinstance(value, list) else value
    return {key: value for key, value in flat.items() if value is not None}


def _graph(records: list[dict]) -> nx.DiGraph:
    graph = nx.DiGraph(schema="fxq.graph", version=SCHEMA_VERSION)
    for record in records:
        graph.add_node(record["name"], **_flat_attributes(record))
    for record in records:
        for source in record["inputs"]:
            graph.add_edge(source, record["name"])
    return graph


def _dot(records: list[dict]) -> str:
    lines = ["digraph fxq {", "  node [shape=box, fontname=monospace];"]
    for record in records:
        label = f"{record['name']}\\n{record['op']} {record['target']}"
        if record["quant"] and record["quant"].get("scale") is not None:
            label += f"\\nscale={_text(record['quant']['scale'])} zp={_text(record['quant']['zero_point'])}"
        lines.append(f'  "{record["name"]}" [label="{_escape(label)}"];')
    for record in records:
        lines.extend(f'  "{source}" -> "{record["name"]}";' for source in record["inputs"])
    return "\n".join(lines + ["}"]) + "\n"


def _escape(text: str) -> str:
    return text.replace('"', '\\"')
