"""Reports to share (pure: answers in, self-contained HTML out; no I/O, no store).

- :mod:`~pipeline.report.html`: the page shell, styles and chain graphs (inline SVG);
- :func:`why_html`: the incident report of a ``why`` answer;
- :mod:`~pipeline.report.accountability`: the figures of ``causelog report`` (:func:`build`),
  rendered by :func:`accountability_html`.
"""

from pipeline.report.accountability import build as build_accountability
from pipeline.report.html import accountability_html, chain_graph, why_html

__all__ = ["accountability_html", "build_accountability", "chain_graph", "why_html"]
