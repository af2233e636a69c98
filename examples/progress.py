"""A page that starts a long task and shows its live progress bar, pushed by the server.

    python examples/progress.py        # serves http://127.0.0.1:8000
    uvicorn examples.progress:app      # the same

The form starts ``build_report``, which reports its progress with
``current_task().set_progress(done, total, message)``. The page opens the task's event
stream (Server-Sent Events, ``app.include_task_events()``) at a URL signed for that one
task (``handle.events_url(app)``), and moves the bar on every event: no polling. The
Cancel button cancels the task (``handle.cancel()``): the stream then ends ``cancelled``.

``REPORT_STEP_SECONDS`` sets how long each step takes (0.2 s by default).
"""

from __future__ import annotations

import asyncio
import os

from starlette.responses import HTMLResponse

from pacificpy import PacificPy
from pacificpy.background import background, current_task, get_handle
from pacificpy.routing import Request

STEP_SECONDS = float(os.environ.get("REPORT_STEP_SECONDS", "0.2"))
MAX_STEPS = 200

app = PacificPy()
# Streams open to a URL signed for one task. The signing secret comes from secret=..., or
# PACIFICPY_SECRET_KEY; without either, a random one of this process (fine for one process).
app.include_task_events()


@background
async def build_report(steps: int) -> str:
    ctx = current_task()
    assert ctx is not None
    for i in range(1, steps + 1):
        await asyncio.sleep(STEP_SECONDS)  # one section of real work
        ctx.set_progress(i, steps, f"section {i} of {steps}")
    return f"report with {steps} sections"


@app.post("/reports")
async def start_report(request: Request) -> dict[str, str]:
    body = await request.json()
    steps = body.get("steps") if isinstance(body, dict) else None
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        return {"error": f"steps must be a whole number from 1 to {MAX_STEPS}"}
    handle = await build_report.delay(steps)
    return {"task_id": handle.id, "events": handle.events_url(app, expires_in=600)}


@app.post("/reports/{task_id}/cancel")
async def cancel_report(request: Request) -> dict[str, bool]:
    return {"cancelled": await get_handle(request.path_params["task_id"]).cancel()}


@app.get("/")
async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Report builder</title>
<style>
  body { font: 15px/1.5 system-ui, sans-serif; max-width: 560px; margin: 48px auto;
         color: #1d2430; }
  form { display: flex; gap: 8px; align-items: center; }
  input { width: 70px; padding: 3px 6px; }
  button { padding: 4px 12px; }
  #bar { height: 18px; background: #e3e6eb; border-radius: 9px; overflow: hidden;
         margin: 18px 0 6px; }
  #fill { height: 100%; width: 0; background: #2f6fdb; transition: width .15s; }
  #bar[data-status="completed"] #fill { background: #1f9d55; }
  #bar[data-status="cancelled"] #fill, #bar[data-status="failed"] #fill {
    background: #d64545; }
  #text { color: #6b7485; }
</style>
</head>
<body>
<h1>Report builder</h1>
<form id="start">
  <label>Sections <input id="steps" type="number" min="1" max="200" value="10"></label>
  <button type="submit">Build report</button>
  <button type="button" id="cancel" disabled>Cancel</button>
</form>
<div id="bar" data-progress="0" data-status=""><div id="fill"></div></div>
<div id="text">Not started.</div>
<script>
"use strict";
let taskId = null, source = null;
const bar = document.getElementById("bar"), fill = document.getElementById("fill");
const text = document.getElementById("text"), cancel = document.getElementById("cancel");

function show(ev) {
  const pct = ev.total ? Math.round(100 * ev.done / ev.total) : 0;
  fill.style.width = pct + "%";
  bar.dataset.progress = String(pct);
  bar.dataset.status = ev.status || "";
  text.textContent = (ev.status || "waiting") + " · " + pct + "%" +
    (ev.message ? " · " + ev.message : "");
}

document.getElementById("start").addEventListener("submit", async (e) => {
  e.preventDefault();
  if (source) source.close();
  const steps = parseInt(document.getElementById("steps").value, 10);
  const resp = await fetch("/reports", { method: "POST", body: JSON.stringify({ steps }) });
  const started = await resp.json();
  if (started.error) { text.textContent = started.error; return; }
  taskId = started.task_id;
  show({ status: "queued", done: 0, total: steps });
  cancel.disabled = false;
  source = new EventSource(started.events);
  source.addEventListener("task", (m) => show(JSON.parse(m.data)));
  source.addEventListener("end", (m) => {
    show(JSON.parse(m.data));
    source.close();
    cancel.disabled = true;
  });
});
cancel.addEventListener("click", () => {
  if (taskId) fetch("/reports/" + taskId + "/cancel", { method: "POST" });
});
</script>
</body>
</html>
"""

if __name__ == "__main__":
    app.run()
