"""Operator status pages: one HTML view and one JSON document of the same facts, for any service.

The host, the relay and the sync consumer each answer ``/`` with a status
page for the person running them. What differs between them is only the
facts; this module is the part they share, so that all of them escape the
same way, send the same security headers and refresh the same way:

* a service describes its page once (:class:`StatusPage`: sections of
  :class:`Fact` rows, each naming a dotted key of the JSON document and how to
  display it, and :class:`Table` s, each naming a list in the document and
  its :class:`Column` s) and supplies a coroutine that collects the document;
* :func:`add_status_routes` serves ``/`` (HTML to a browser, a short text to
  anything else: curl and SDKs poke ``/`` too), ``/status.json`` (the
  document, for scripts) and the page's static assets.

**Why the script is a separate file.** The page carries a strict
``Content-Security-Policy`` (``default-src 'none'``; scripts, styles and
fetches from this origin only, no inline code), so an injected value that
somehow reached the markup still could not run. The HTML is fully rendered on
the server, so the page works with JavaScript off; with it on,
``/status.js`` re-reads ``/status.json`` every few seconds and writes each
value with ``textContent`` (never as markup); a table's body is rebuilt
from its list, row by row, each cell again by ``textContent``. Both sides format values by the
same rules (:func:`format_value` and its twin in ``STATUS_JS``), so a
refreshed value looks like the server-rendered one.

**What must never appear:** secrets. The document is whatever the service's
collector returns, so collectors list their facts one by one rather than
dumping a configuration object; :func:`public_url` strips credentials from
URLs an operator may have configured with them.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from aiohttp import web

__all__ = [
    "CSP",
    "SECURITY_HEADERS",
    "STATUS_CSS",
    "STATUS_JS",
    "STATUS_SVG",
    "Column",
    "Fact",
    "FactKind",
    "Item",
    "StatusPage",
    "Table",
    "add_status_routes",
    "format_value",
    "lookup",
    "prefers_html",
    "public_url",
    "render_html",
]

#: How a value is displayed. ``text``: as is; ``count``: an integer with thousands separators;
#: ``duration``: seconds as ``1d 2h 3m 4s``; ``list``: items joined by commas (``none`` when
#: empty); ``counts``: a name -> number mapping as ``name: n, …`` (``none`` when empty).
FactKind = Literal["text", "count", "duration", "list", "counts"]

#: The policy of every status response: nothing but this origin's script, style, icon and JSON.
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

#: Sent with every status response (page, JSON and assets alike).
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}

#: Shown for a missing value (``null`` in the document).
MISSING: Final = "\u2014"


@dataclass(frozen=True, slots=True)
class Fact:
    """One row of a status page: its label, where its value is in the JSON document, how to show it.

    ``key`` is a dotted path (``"events.headSeq"``); ``unit`` is appended after
    a space (``"h"`` for hours) unless the value is missing.
    """

    label: str
    key: str
    kind: FactKind = "text"
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`Table`: its heading, the dotted key of its value in each row, its display."""

    label: str
    key: str
    kind: FactKind = "text"
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Table:
    """A list of the JSON document shown as a table: one row per item, one cell per :class:`Column`.

    ``key`` is the dotted path of the list (``"hosts.list"``); a missing or
    empty list shows one row saying ``empty``. Rows are rendered on the server
    like facts; the page's script rebuilds the body from each refreshed list
    (cells written with ``textContent``), so rows come and go without a reload.
    A service that may hold many items caps the list in its collector: the
    page shows what the document holds.
    """

    key: str
    columns: Sequence[Column]
    empty: str = "none"


#: What a section holds: key-value rows and tables, shown in the order given.
Item = Fact | Table


@dataclass(frozen=True, slots=True)
class StatusPage:
    """The fixed shape of a service's status page; the values come from its JSON document.

    ``sections`` is a list of (heading, items), an item being a :class:`Fact`
    or a :class:`Table` (consecutive facts share one list). ``wide`` lets the
    page use a wider column, for tables of many columns. ``text`` is the answer to
    clients that do not prefer HTML. ``links`` are (label, path) pairs shown
    at the foot of the page (the JSON document, ``/metrics``). ``refresh_s``
    is how often the page's script re-reads the document.
    """

    title: str
    sections: Sequence[tuple[str, Sequence[Item]]]
    text: str
    links: Sequence[tuple[str, str]] = ()
    refresh_s: float = 5.0
    json_path: str = "/status.json"
    asset_prefix: str = "/status"
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    wide: bool = False

    def facts(self) -> list[Fact]:
        """Every fact of every section, in page order."""
        return [item for _, items in self.sections for item in items if isinstance(item, Fact)]

    def tables(self) -> list[Table]:
        """Every table of every section, in page order."""
        return [item for _, items in self.sections for item in items if isinstance(item, Table)]


# --- values ------------------------------------------------------------------------------------


def lookup(doc: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` in ``doc``; None if any step is missing."""
    value: Any = doc
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _scalar(value: Any) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    return str(value)


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return _scalar(seconds)
    left = max(0, int(seconds))
    parts: list[str] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if left >= size or parts:
            parts.append(f"{left // size}{unit}")
            left %= size
    parts.append(f"{left}s")
    return " ".join(parts)


def format_value(value: Any, kind: FactKind = "text", unit: str = "") -> str:
    """A value as the page shows it (``STATUS_JS`` formats refreshed values by the same rules)."""
    if value is None:
        return MISSING
    if kind == "count" and isinstance(value, int) and not isinstance(value, bool):
        out = f"{value:,}"
    elif kind == "duration":
        out = _duration(value)
    elif kind == "list" and isinstance(value, list | tuple):
        out = ", ".join(_scalar(v) for v in value) if value else "none"
    elif kind == "counts" and isinstance(value, Mapping):
        out = ", ".join(f"{k}: {_count(v)}" for k, v in value.items()) if value else "none"
    else:
        out = _scalar(value)
    return f"{out} {unit}" if unit else out


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _scalar(value)


def public_url(url: str) -> str:
    """``url`` without user name, password, query or fragment: safe to show on a status page."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(invalid URL)"
    if not parts.scheme or not parts.hostname:
        return url if "@" not in url else "(URL hidden)"
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc = f"{netloc}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# --- negotiation -------------------------------------------------------------------------------


def _accept_q(accept: str, wanted: str) -> tuple[float, bool]:
    """The q of ``wanted`` (``type/subtype``) in ``accept`` by the most specific range, and if it is named."""
    kind = wanted.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)
    for item in accept.split(","):
        params = item.strip().split(";")
        media = params[0].strip().lower()
        q = 1.0
        for param in params[1:]:
            name, _, raw = param.strip().partition("=")
            if name.strip().lower() == "q":
                try:
                    q = min(1.0, max(0.0, float(raw.strip())))
                except ValueError:
                    q = 0.0
        if media == wanted:
            specificity = 2
        elif media == f"{kind}/*":
            specificity = 1
        elif media == "*/*":
            specificity = 0
        else:
            continue
        if specificity > best[0] or (specificity == best[0] and q > best[1]):
            best = (specificity, q)
    return best[1], best[0] == 2


def prefers_html(accept: str | None) -> bool:
    """Whether an ``Accept`` header names ``text/html`` and ranks it at least as high as ``text/plain``.

    Browsers send ``text/html,…,*/*;q=0.8``; curl sends ``*/*`` and SDKs
    ``application/json`` or nothing: only the first get the page. HTML must be
    named, not merely matched by ``*/*``, so that a client that accepts
    anything keeps the short text answer it had before.
    """
    if not accept:
        return False
    html_q, named = _accept_q(accept, "text/html")
    text_q, _ = _accept_q(accept, "text/plain")
    return named and html_q > 0 and html_q >= text_q


# --- rendering ---------------------------------------------------------------------------------


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def render_html(page: StatusPage, doc: Mapping[str, Any], *, now: float | None = None) -> str:
    """The page's first view, every value escaped; ``doc`` is what ``/status.json`` would send now."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if now is None else now))
    prefix = page.asset_prefix
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="robots" content="noindex">',
        f"<title>{_e(page.title)}</title>",
        f'<link rel="icon" href="{_e(prefix)}.svg" type="image/svg+xml">',
        f'<link rel="stylesheet" href="{_e(prefix)}.css">',
        f'<script src="{_e(prefix)}.js" defer></script>',
        "</head>",
        f'<body data-source="{_e(page.json_path)}" data-refresh="{_e(_scalar(float(page.refresh_s)))}"'
        + (' class="wide">' if page.wide else ">"),
        "<header>",
        f"<h1>{_e(page.title)}</h1>",
        f'<p id="status-state" class="state" aria-live="polite">As of {_e(stamp)}.</p>',
        "</header>",
        "<main>",
    ]
    for number, (heading, items) in enumerate(page.sections):
        out.append(f'<section aria-labelledby="section-{number}">')
        out.append(f'<h2 id="section-{number}">{_e(heading)}</h2>')
        in_list = False
        for item in items:
            if isinstance(item, Table):
                if in_list:
                    out.append("</dl>")
                    in_list = False
                out.extend(_render_table(item, lookup(doc, item.key)))
                continue
            if not in_list:
                out.append("<dl>")
                in_list = True
            value = format_value(lookup(doc, item.key), item.kind, item.unit)
            out.append(
                f'<div class="row"><dt>{_e(item.label)}</dt>'
                f'<dd data-key="{_e(item.key)}" data-kind="{_e(item.kind)}" data-unit="{_e(item.unit)}">'
                f"{_e(value)}</dd></div>"
            )
        if in_list:
            out.append("</dl>")
        out.append("</section>")
    out.append("</main>")
    if page.links:
        links = " · ".join(f'<a href="{_e(href)}">{_e(label)}</a>' for label, href in page.links)
        out.append(f"<footer>{links}</footer>")
    out.append("</body>")
    out.append("</html>")
    return "\n".join(out) + "\n"


def _render_table(table: Table, rows: Any) -> list[str]:
    """A table's markup: the columns (which the script reads to rebuild the body) and its rows now."""
    out = [
        '<div class="table-wrap">',
        f'<table data-table="{_e(table.key)}" data-empty="{_e(table.empty)}">',
        "<thead><tr>",
    ]
    for column in table.columns:
        out.append(
            f'<th scope="col" data-col="{_e(column.key)}" data-kind="{_e(column.kind)}" '
            f'data-unit="{_e(column.unit)}">{_e(column.label)}</th>'
        )
    out.append("</tr></thead>")
    out.append("<tbody>")
    items = rows if isinstance(rows, list | tuple) else []
    if not items:
        out.append(f'<tr class="empty"><td colspan="{len(table.columns)}">{_e(table.empty)}</td></tr>')
    for row in items:
        values = [lookup(row, c.key) if isinstance(row, Mapping) else None for c in table.columns]
        cells = "".join(
            f"<td>{_e(format_value(value, c.kind, c.unit))}</td>"
            for value, c in zip(values, table.columns, strict=True)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</tbody>")
    out.append("</table>")
    out.append("</div>")
    return out


# --- assets ------------------------------------------------------------------------------------

#: The refresher: re-reads the JSON document and rewrites each ``[data-key]`` cell as text.
STATUS_JS: Final = r"""'use strict';
(function () {
  var MISSING = '\u2014';
  function scalar(v) {
    if (v === null || v === undefined) { return MISSING; }
    if (typeof v === 'boolean') { return v ? 'yes' : 'no'; }
    return String(v);
  }
  function isInt(v) { return typeof v === 'number' && Number.isInteger(v); }
  function count(v) { return isInt(v) ? v.toLocaleString('en-US') : scalar(v); }
  function duration(v) {
    if (typeof v !== 'number') { return scalar(v); }
    var left = Math.max(0, Math.floor(v)), parts = [];
    [[86400, 'd'], [3600, 'h'], [60, 'm']].forEach(function (u) {
      if (left >= u[0] || parts.length) {
        parts.push(Math.floor(left / u[0]) + u[1]);
        left = left % u[0];
      }
    });
    parts.push(left + 's');
    return parts.join(' ');
  }
  function format(v, kind, unit) {
    if (v === null || v === undefined) { return MISSING; }
    var out;
    if (kind === 'count' && isInt(v)) {
      out = count(v);
    } else if (kind === 'duration') {
      out = duration(v);
    } else if (kind === 'list' && Array.isArray(v)) {
      out = v.length ? v.map(scalar).join(', ') : 'none';
    } else if (kind === 'counts' && typeof v === 'object' && !Array.isArray(v)) {
      var keys = Object.keys(v);
      out = keys.length ? keys.map(function (k) { return k + ': ' + count(v[k]); }).join(', ') : 'none';
    } else {
      out = scalar(v);
    }
    return unit ? out + ' ' + unit : out;
  }
  function lookup(doc, key) {
    var value = doc, parts = key.split('.');
    for (var i = 0; i < parts.length; i++) {
      if (value === null || typeof value !== 'object' || Array.isArray(value) ||
          !Object.prototype.hasOwnProperty.call(value, parts[i])) { return null; }
      value = value[parts[i]];
    }
    return value;
  }
  function fillTable(table, rows) {
    var heads = table.querySelectorAll('th[data-col]'), body = table.tBodies[0];
    if (!body) { return; }
    var texts = [];
    if (Array.isArray(rows)) {
      for (var r = 0; r < rows.length; r++) {
        var row = rows[r], line = [];
        for (var c = 0; c < heads.length; c++) {
          var key = heads[c].getAttribute('data-col');
          var value = row !== null && typeof row === 'object' ? lookup(row, key) : null;
          line.push(format(value, heads[c].getAttribute('data-kind'), heads[c].getAttribute('data-unit')));
        }
        texts.push(line);
      }
    }
    var now = [];
    for (var i = 0; i < body.rows.length; i++) {
      var cells = [];
      for (var j = 0; j < body.rows[i].cells.length; j++) { cells.push(body.rows[i].cells[j].textContent); }
      now.push(cells);
    }
    var wanted = texts.length ? texts : [[table.getAttribute('data-empty') || 'none']];
    if (JSON.stringify(now) === JSON.stringify(wanted)) { return; }
    while (body.firstChild) { body.removeChild(body.firstChild); }
    if (!texts.length) {
      var tr = document.createElement('tr'), td = document.createElement('td');
      tr.className = 'empty';
      td.colSpan = heads.length;
      td.textContent = wanted[0][0];
      tr.appendChild(td);
      body.appendChild(tr);
      return;
    }
    for (var k = 0; k < texts.length; k++) {
      var line2 = document.createElement('tr');
      for (var m = 0; m < texts[k].length; m++) {
        var cell = document.createElement('td');
        cell.textContent = texts[k][m];
        line2.appendChild(cell);
      }
      body.appendChild(line2);
    }
  }
  function start() {
    var body = document.body;
    var source = body.getAttribute('data-source');
    var every = parseFloat(body.getAttribute('data-refresh')) * 1000;
    var state = document.getElementById('status-state');
    var refreshes = 0;
    if (!source || !(every > 0)) { return; }
    function apply(doc) {
      var cells = document.querySelectorAll('[data-key]');
      for (var i = 0; i < cells.length; i++) {
        var cell = cells[i];
        var text = format(lookup(doc, cell.getAttribute('data-key')),
                          cell.getAttribute('data-kind'), cell.getAttribute('data-unit'));
        if (cell.textContent !== text) { cell.textContent = text; }
      }
      var tables = document.querySelectorAll('table[data-table]');
      for (var t = 0; t < tables.length; t++) {
        fillTable(tables[t], lookup(doc, tables[t].getAttribute('data-table')));
      }
      refreshes += 1;
      body.setAttribute('data-refreshed', String(refreshes));
      if (state) {
        state.textContent = 'Live: refreshed at ' + new Date().toISOString().replace('T', ' ').slice(0, 19) +
          ' UTC, every ' + every / 1000 + ' s.';
        state.className = 'state live';
      }
    }
    function failed(why) {
      if (state) {
        state.textContent = 'Refresh failed (' + why + '); showing older values. Retrying.';
        state.className = 'state stale';
      }
    }
    function tick() {
      fetch(source, {cache: 'no-store', credentials: 'same-origin', headers: {'Accept': 'application/json'}})
        .then(function (resp) {
          if (!resp.ok) { throw new Error('HTTP ' + resp.status); }
          return resp.json();
        })
        .then(apply)
        .catch(function (err) { failed(err && err.message ? err.message : 'error'); })
        .then(function () { window.setTimeout(tick, every); });
    }
    window.setTimeout(tick, every);
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', start);
  } else {
    start();
  }
})();
"""

#: Plain, readable in light and dark, no web fonts (the policy would refuse them anyway).
STATUS_CSS: Final = """:root { color-scheme: light dark; --muted: #666; --line: #ddd; --ok: #1a7f37;
        --bad: #b42318; }
@media (prefers-color-scheme: dark) {
  :root { --muted: #9a9a9a; --line: #333; --ok: #4ac26b; --bad: #f47067; }
}
body { font: 15px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; }
h1 { font-size: 1.4rem; margin: 0 0 .25rem; }
h2 { font-size: 1rem; margin: 1.5rem 0 .25rem; text-transform: uppercase; letter-spacing: .05em;
     color: var(--muted); }
.state { color: var(--muted); margin: 0; font-size: .9rem; }
.state.live { color: var(--ok); }
.state.stale { color: var(--bad); }
dl { margin: 0; }
.row { display: grid; grid-template-columns: 16rem 1fr; gap: 1rem; padding: .3rem 0;
       border-bottom: 1px solid var(--line); }
dt { color: var(--muted); }
dd { margin: 0; font-family: ui-monospace, monospace; overflow-wrap: anywhere; }
body.wide { max-width: 90rem; }
.table-wrap { overflow-x: auto; margin: .25rem 0 1rem; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th { text-align: left; color: var(--muted); font-weight: 600; padding: .3rem .6rem .3rem 0;
     border-bottom: 1px solid var(--line); white-space: nowrap; }
td { padding: .3rem .6rem .3rem 0; border-bottom: 1px solid var(--line); vertical-align: top;
     font-family: ui-monospace, monospace; overflow-wrap: break-word; word-break: break-word; }
tr.empty td { color: var(--muted); font-family: inherit; }
footer { margin-top: 2rem; color: var(--muted); font-size: .9rem; }
@media (max-width: 36rem) { .row { grid-template-columns: 1fr; gap: 0; } }
"""

#: The tab icon (served, so that the browser's favicon request does not end in a 404).
STATUS_SVG: Final = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<circle cx="8" cy="8" r="6" fill="#1a7f37"/></svg>\n'
)


# --- routes ------------------------------------------------------------------------------------


def add_status_routes(
    app: web.Application,
    page: StatusPage,
    collect: Callable[[], Awaitable[Mapping[str, Any]]],
    *,
    path: str = "/",
) -> None:
    """Serve ``page`` at ``path``, its document at ``page.json_path`` and its assets beside them.

    ``collect`` returns the JSON document (the same facts for both views); it
    is called once per request of either, so it should be cheap or cache.
    ``path`` answers HTML to clients that prefer it and ``page.text`` to the
    rest (``Vary: Accept`` tells caches the two apart).
    """
    headers = {**SECURITY_HEADERS, **page.extra_headers}

    async def status(request: web.Request) -> web.Response:
        if not prefers_html(request.headers.get("Accept")):
            response = web.Response(text=page.text, content_type="text/plain", headers=headers)
            response.headers["Vary"] = "Accept"
            return response
        doc = await collect()
        response = web.Response(text=render_html(page, doc), content_type="text/html", headers=headers)
        response.headers["Vary"] = "Accept"
        return response

    async def status_json(request: web.Request) -> web.Response:
        doc = await collect()
        body = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
        return web.Response(text=body, content_type="application/json", headers=headers)

    def asset(body: str, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return web.Response(text=body, content_type=content_type, headers=headers)

        return handle

    app.router.add_get(path, status)
    app.router.add_get(page.json_path, status_json)
    app.router.add_get(f"{page.asset_prefix}.js", asset(STATUS_JS, "text/javascript"))
    app.router.add_get(f"{page.asset_prefix}.css", asset(STATUS_CSS, "text/css"))
    app.router.add_get(f"{page.asset_prefix}.svg", asset(STATUS_SVG, "image/svg+xml"))
