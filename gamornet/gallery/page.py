"""The HTML of a gallery: one self-contained page (inline CSS, base64 PNG images, no script, nothing fetched).

Every text that comes from a table (ids, values, model and policy names)
goes through :func:`html.escape`, so a table can never inject markup.
Sections are ``<section class="gallery-section" id="KEY" data-count="N">``
(subsections ``<div class="gallery-subsection" ...>``) holding
``<figure class="thumb" data-id="ID">`` cards, so the page can be read by
programs too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

from gamornet.gallery.sections import Section

__all__ = ["card_html", "render_page"]

#: The page loads nothing and runs nothing: images only from data: URLs, styles only inline.
_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.5em; } h2 { font-size: 1.25em; margin-top: 1.6em; } h3 { font-size: 1.05em; }
table.summary { border-collapse: collapse; margin: 0.5em 0 1em 0; }
table.summary td, table.summary th { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
p.note { color: #555; margin: 0.2em 0 0.6em 0; }
div.grid { display: flex; flex-wrap: wrap; gap: 8px; }
figure.thumb { margin: 0; width: 136px; background: #fff; border: 1px solid #ddd; padding: 4px; }
figure.thumb img { width: 128px; height: 128px; image-rendering: pixelated; display: block; background: #000; }
figure.thumb div.missing { width: 128px; height: 128px; background: #eee; font-size: 0.7em; overflow: hidden; }
figcaption { font-size: 0.7em; line-height: 1.3; word-break: break-all; }
span.label { font-weight: bold; } span.wrong { color: #b00; font-weight: bold; }
"""


def card_html(image_id, probs: Sequence[float], label: str, truth: str | None, position: tuple | None,
              png: str | None, reason: str) -> str:
    """One thumbnail card: the image (or why it could not be read), id, probabilities, label, truth, RA / Dec."""
    text_id = escape(str(image_id), quote=True)
    if png is not None:
        picture = f'<img alt="{text_id}" src="data:image/png;base64,{png}">'
    else:
        picture = f'<div class="missing">image not shown: {escape(reason)}</div>'
    lines = [f'<span class="id">{text_id}</span>',
             "P disk / indeterminate / bulge", "{:.3f} / {:.3f} / {:.3f}".format(*probs),
             f'label <span class="label">{escape(label)}</span>']
    if truth is not None:
        style = "wrong" if truth != label else "label"
        lines.append(f'true <span class="{style}">{escape(truth)}</span>')
    if position is not None:
        lines.append(f"RA {escape(position[0])} Dec {escape(position[1])}")
    return (f'<figure class="thumb" data-id="{text_id}" data-label="{escape(label, quote=True)}">{picture}'
            f'<figcaption>{"<br>".join(lines)}</figcaption></figure>')


def _block(section: Section, cards: Mapping[int, str], tag: str, heading: str) -> str:
    shown = sum(len(leaf.rows) for leaf in section.leaves())
    head = (f"<{heading}>{escape(section.title)} <small>({section.count} galax{'y' if section.count == 1 else 'ies'}"
            f"; {shown} shown)</small></{heading}>")
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    grid = "" if section.children else f'<div class="grid">{"".join(cards[int(r)] for r in section.rows)}</div>'
    inner = "".join(_block(child, cards, "div", "h3") for child in section.children)
    kind = "gallery-section" if tag == "section" else "gallery-subsection"
    return (f'<{tag} class="{kind}" id="{escape(section.key, quote=True)}" data-count="{section.count}" '
            f'data-shown="{shown}">{head}{note}{grid}{inner}</{tag}>\n')


def render_page(title: str, summary: Sequence[tuple[str, str]], sections: Sequence[Section],
                cards: Mapping[int, str]) -> str:
    """The whole page: title, summary table, then every section with its cards (``cards[row]``)."""
    rows = "".join(f'<tr><th>{escape(str(k))}</th><td id="summary-{escape(str(k).replace(" ", "-"), quote=True)}">'
                   f"{escape(str(v))}</td></tr>" for k, v in summary)
    contents = " &middot; ".join(f'<a href="#{escape(s.key, quote=True)}">{escape(s.title)}</a>' for s in sections)
    body = "".join(_block(section, cards, "section", "h2") for section in sections)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{_POLICY}">'
            f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>\n<h1>{escape(title)}</h1>\n"
            f'<table class="summary">{rows}</table>\n<p>Sections: {contents}</p>\n{body}</body></html>\n')
