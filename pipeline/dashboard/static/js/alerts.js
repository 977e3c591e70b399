// The alerts page is rendered on the server; this only wires the resolve buttons (workflow.js the others).
"use strict";

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button.resolve");
  if (!button) return;
  button.disabled = true;
  const result = await Dash.resolveAlert(button.dataset.alertId);
  Dash.showMessage(result.message, !result.ok);
  if (result.ok) {
    setTimeout(() => window.location.reload(), 600);
  } else {
    button.disabled = false;
  }
});

// After an acknowledge, snooze or unsnooze (workflow.js): show the page as the server now sees it.
document.addEventListener("alerts-changed", () => setTimeout(() => window.location.reload(), 600));
