"""The report's blocks written as Markdown and as HTML."""

import html


def _cell_md(c) -> str:
  return f"[{c[1]}]({c[2]})" if isinstance(c, tuple) else str(c)


def _cell_html(c) -> str:
  if isinstance(c, tuple):
    return f"<a href='{html.escape(c[2])}'>{html.escape(c[1])}</a>"
  return html.escape(str(c))


def markdown(blocks) -> str:
  out = []
  for b in blocks:
    if b[0] == "h1":
      out.append(f"# {b[1]}\n")
    elif b[0] in ("h2", "h3"):
      out.append(f"{'#' * int(b[0][1])} {b[1]}\n")
    elif b[0] == "p":
      out.append(b[1] + "\n")
    elif b[0] == "list":
      out.append("\n".join(f"- {_cell_md(x)}" for x in b[1]) + "\n")
    elif b[0] == "table":
      head, rows = b[1], b[2]
      out.append("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
      out.extend("| " + " | ".join(_cell_md(c) for c in row) + " |" for row in rows)
      out.append("")
    elif b[0] == "img":
      out.append(f"![{b[2]}]({b[1]})\n")
  return "\n".join(out) + "\n"


def to_html(blocks) -> str:
  e = html.escape
  out = [
      "<!doctype html><meta charset='utf-8'><title>synthjax report</title>",
      "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>",
  ]
  for b in blocks:
    if b[0] in ("h1", "h2", "h3"):
      out.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
    elif b[0] == "p":
      out.append(f"<p>{e(b[1])}</p>")
    elif b[0] == "list":
      out.append("<ul>" + "".join(f"<li>{_cell_html(x)}</li>" for x in b[1]) + "</ul>")
    elif b[0] == "table":
      out.append(
          "<table><tr>"
          + "".join(f"<th>{e(h)}</th>" for h in b[1])
          + "</tr>"
          + "".join(
              "<tr>" + "".join(f"<td>{_cell_html(c)}</td>" for c in row) + "</tr>" for row in b[2]
          )
          + "</table>"
      )
    elif b[0] == "img":
      out.append(f"<p><img src='{e(b[1])}' alt='{e(b[2])}'></p>")
  return "\n".join(out) + "\n"
