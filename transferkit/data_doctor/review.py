"""The doctor's review page: one static HTML file, thumbnails embedded, no server.

Each flagged image is shown with its issue, ranked within its kind, next to examples of
its given and its suggested class (a duplicate beside its twin). Per image: keep,
relabel (to the suggestion or any class) or exclude. "Save fixes.csv" writes the
decisions where the browser can write files (the File System Access API); "Download
fixes.csv" works in every browser, from file:// too. The file is what
`transferkit train --fixes` reads (see `data.fixes`).
"""

import base64
import html
import io

from transferkit.core.files import write_text
from transferkit.data.fixes import ACTIONS

THUMB = 112  # px, longest side
TITLES = {"leak": "Leaks across splits (near-duplicates in two splits)",
          "label": "Likely wrong labels", "near_duplicate": "Near-duplicates",
          "outlier": "Outliers (unlike any class)",
          "class_imbalance": "Class imbalance", "label_next": "What to label next"}


def thumbnail(path, size=THUMB):
    """A data: URI of a JPEG thumbnail of the image at `path` (EXIF-rotated), or of a
    grey square when it cannot be read (the page must still load)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((size, size))
    except (OSError, ValueError):
        image = Image.new("RGB", (size, size), (128, 128, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_review(path, rows, class_names, examples, proposed=()):
    """Write the review page for `rows` (data_issues rows) to `path`, atomically.

    examples: {class name: [a few image paths]} shown beside each flagged image.
    proposed: (path, action, label) fixes the controls start from (default: keep).
    """
    start = {p: (action, label) for p, action, label in proposed}
    thumbs = {}

    def img(p, cls="thumb"):
        if p not in thumbs:
            thumbs[p] = thumbnail(p)
        return f'<img class="{cls}" src="{thumbs[p]}" alt="{html.escape(p)}" title="{html.escape(p)}">'

    sections = []
    kinds = [k for k in TITLES if any(r["kind"] == k for r in rows)]
    for kind in kinds:
        cards = [_card(r, img, class_names, examples, start)
                 for r in rows if r["kind"] == kind]
        sections.append(f'<section id="{kind}"><h2>{TITLES[kind]} ({len(cards)})</h2>'
                        + "".join(cards) + "</section>")
    counts = " · ".join(f'<a href="#{k}">{TITLES[k]}: '
                        f'{sum(r["kind"] == k for r in rows)}</a>' for k in kinds)
    page = PAGE.format(counts=counts or "no issues found", sections="".join(sections))
    write_text(path, page)
    return path


def _card(row, img, class_names, examples, start):
    path = row["path"]
    if path is None:  # a class-level finding: no image to decide on
        shown = "".join(img(p, "example") for p in examples.get(row["given_label"], ())[:4])
        return (f'<div class="card"><div class="info"><b>{html.escape(row["given_label"])}'
                f'</b>: {row.get("count", "?")} images, score {row["score"]:.2f}</div>'
                f'<div class="examples">{shown}</div></div>')
    action, label = start.get(path, ("keep", ""))
    label = label or row["suggested_label"] or row["given_label"] or ""
    images = img(path) + (img(row["other"]) if row.get("other") else "")
    context = ""
    for title, name in (("given", row["given_label"]), ("suggested", row["suggested_label"])):
        if name and (title == "given" or name != row["given_label"]):
            context += (f'<div class="examples"><span>{title}: {html.escape(name)}</span>'
                        + "".join(img(p, "example") for p in examples.get(name, ())[:3]
                                  if p != path) + "</div>")
    options = "".join(f'<option{" selected" if c == label else ""}>{html.escape(c)}</option>'
                      for c in class_names)
    radios = "".join(
        f'<label><input type="radio" name="{html.escape(path)}#{id(row)}" value="{a}"'
        f'{" checked" if a == action else ""}> {a}</label>' for a in ACTIONS)
    other = (f'<div class="path">twin: {html.escape(row["other"])}</div>'
             if row.get("other") else "")
    return (f'<div class="card" data-path="{html.escape(path)}">'
            f'<div class="images">{images}</div><div class="info">'
            f'<div class="path">{html.escape(path)}</div>{other}'
            f'<div>split {html.escape(str(row["split"]))} · given '
            f'<b>{html.escape(str(row["given_label"]))}</b>'
            + (f' · suggested <b>{html.escape(row["suggested_label"])}</b>'
               if row["suggested_label"] else "")
            + f' · score {row["score"]:.2f}</div>'
            f'<div class="controls">{radios} <select>{options}</select></div>'
            f'</div>{context}</div>')


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>transferkit doctor: review</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}
.card {{ display: flex; gap: 1em; align-items: flex-start; border-top: 1px solid #ddd;
         padding: .6em 0; flex-wrap: wrap; }}
.thumb {{ width: 112px; height: 112px; object-fit: contain; background: #eee;
          margin-right: 4px; }}
.example {{ width: 56px; height: 56px; object-fit: contain; background: #eee;
            margin: 1px; }}
.examples span {{ display: block; font-size: 80%; color: #666; }}
.path {{ font-family: monospace; font-size: 85%; word-break: break-all; }}
.info {{ max-width: 40em; }}
.controls label {{ margin-right: .8em; }}
#bar {{ position: sticky; top: 0; background: #fff; padding: .5em 0;
        border-bottom: 2px solid #444; }}
</style></head><body>
<div id="bar"><b>transferkit doctor</b> · {counts}<br>
<button id="save" hidden>Save fixes.csv…</button>
<button id="download">Download fixes.csv</button>
<span id="status"></span>
<span> Then: <code>transferkit train --data … --fixes fixes.csv</code></span></div>
{sections}
<script>
"use strict";
function decisions() {{
  // Cards of one file agree (see follow): the first one speaks for it.
  const out = new Map();
  for (const card of document.querySelectorAll(".card[data-path]")) {{
    const checked = card.querySelector("input[type=radio]:checked");
    const action = checked ? checked.value : "keep";
    const label = action === "relabel" ? card.querySelector("select").value : "";
    const path = card.dataset.path;
    if (!out.has(path)) out.set(path, [action, label]);
  }}
  return out;
}}
function csvCell(text) {{
  return /[",\\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}}
function fixesCsv() {{
  let text = "path,action,label\\n";
  for (const [path, [action, label]] of decisions())
    text += [path, action, label].map(csvCell).join(",") + "\\n";
  return text;
}}
function status(text) {{ document.getElementById("status").textContent = text; }}
function download() {{
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([fixesCsv()], {{type: "text/csv"}}));
  link.download = "fixes.csv";
  document.body.appendChild(link);
  link.click();
  link.remove();
  status("downloaded fixes.csv");
}}
async function save() {{
  try {{
    const handle = await window.showSaveFilePicker({{suggestedName: "fixes.csv"}});
    const writable = await handle.createWritable();
    await writable.write(fixesCsv());
    await writable.close();
    status("saved " + handle.name);
  }} catch (error) {{
    if (error.name !== "AbortError") download();
  }}
}}
// Choosing a class means relabelling to it; a file shown on several cards (say a
// label issue that is also an outlier) gets one decision, the one made last.
const cards = [...document.querySelectorAll(".card[data-path]")];
function follow(from) {{
  const action = from.querySelector("input[type=radio]:checked").value;
  const label = from.querySelector("select").value;
  for (const card of cards) {{
    if (card === from || card.dataset.path !== from.dataset.path) continue;
    card.querySelector(`input[value=${{action}}]`).checked = true;
    card.querySelector("select").value = label;
  }}
}}
for (const card of cards) {{
  card.querySelector("select").addEventListener("change", () => {{
    card.querySelector("input[value=relabel]").checked = true;
    follow(card);
  }});
  for (const radio of card.querySelectorAll("input[type=radio]"))
    radio.addEventListener("change", () => follow(card));
}}
if (window.showSaveFilePicker) {{
  const button = document.getElementById("save");
  button.hidden = false;
  button.addEventListener("click", save);
}}
document.getElementById("download").addEventListener("click", download);
</script></body></html>
"""
