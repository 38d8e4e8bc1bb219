// New locks appear in the list without reloading (server-sent events from /live). The pages
// work without this script; it only adds rows.
"use strict";
(function () {
  const table = document.getElementById("locked");
  if (!table || !window.EventSource) return;
  const body = table.querySelector("tbody");
  const live = document.getElementById("live");
  const source = new EventSource("/live");
  source.addEventListener("ready", function () { table.dataset.live = "on"; });
  source.addEventListener("locked", function (e) {
    const n = JSON.parse(e.data);
    const row = document.createElement("tr");
    row.className = "new";
    const link = document.createElement("a");
    link.href = "/user?u=" + encodeURIComponent(n.user);
    link.textContent = n.user;
    const cells = [link, n.locked_at, "", "", ""];
    for (const c of cells) {
      const td = document.createElement("td");
      if (typeof c === "string") td.textContent = c; else td.appendChild(c);
      row.appendChild(td);
    }
    body.insertBefore(row, body.firstChild);
    live.textContent = n.user + " was just locked: " + n.message;
  });
})();
