"""Self-contained HTML reports: one per run (beside its outputs) and one per sweep (in its folder),
each also logged to its MLflow run as `report.html`.

A report opens without a network or a server: figures are inline SVG drawn by matplotlib, the
styles are in the page, and it reads on a phone's screen (figures scale to the width, wide tables
scroll on their own). Nothing in a run's report depends on when or where it was written, so the
pipeline's report is reproduced byte for byte like its other outputs.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Mapping

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

REPORT_FILE = "report.html"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; padding: 1rem; max-width: 1100px; color: #222; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
table.ranked tbody tr:first-child { background: #eef6ee; font-weight: 600; }
figure { margin: 1rem 0; } figure svg, figure img { max-width: 100%; height: auto; }
p.note { color: #555; }
"""


def svg(figure: Figure) -> str:
    """The figure as inline SVG, the same bytes for the same figure (no date, fixed element ids)."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "mnist-np", "svg.fonttype": "none"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and doctype: the SVG sits inside HTML


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn once: logged to MLflow as an image and shown in the report."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def table(frame: pd.DataFrame, ranked: bool = False) -> str:
    """A DataFrame as an HTML table (index left out; the first row stands out when the rows are
    `ranked`), wrapped so that a narrow screen scrolls it rather than the page."""
    classes = "ranked" if ranked else None
    body = frame.to_html(index=False, float_format="{:.4f}".format, na_rep="", border=0, classes=classes)
    return f'<div class="scroll">{body}</div>'


def key_values(values: Mapping[str, object]) -> str:
    """A two-column table of names and values."""
    return table(pd.DataFrame({"name": list(values), "value": [str(v) for v in values.values()]}))


def _html(content: str | Figure | bytes) -> str:
    if isinstance(content, Figure):
        return f"<figure>{svg(content)}</figure>"
    if isinstance(content, bytes):
        return f'<figure><img alt="" src="data:image/png;base64,{base64.b64encode(content).decode()}"></figure>'
    return content


def page(title: str, summary: str, sections: Iterable[tuple[str, str | Figure | bytes]]) -> str:
    """The whole document: a title, a one-paragraph summary, then (heading, content) sections; the
    content is HTML, a Figure (drawn as SVG) or PNG bytes (inlined as an image)."""
    body = "\n".join(
        f"<section><h2>{html.escape(heading)}</h2>\n{_html(content)}</section>" for heading, content in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{summary}</p>\n{body}\n</body>\n</html>\n"
    )
