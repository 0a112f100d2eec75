"""The report's blocks written as Markdown, and as HTML through it."""


def _cell_md(c) -> str:
  return f"[{c[1]}]({c[2]})" if isinstance(c, tuple) else str(c)


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
  """The Markdown above, rendered as a standalone HTML page by Python-Markdown."""
  import markdown as python_markdown

  body = python_markdown.markdown(markdown(blocks), extensions=["tables"])
  return (
      "<!doctype html><meta charset='utf-8'><title>synthjax report</title>\n"
      "<style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
      "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px}</style>\n"
      + body
      + "\n"
  )
