// Progressive enhancement only: the pages work without it.
// A countdown of the code's time left; the server rendered the starting value.
(function () {
  var el = document.querySelector("[data-expires]");
  if (!el) return;
  var end = Number(el.getAttribute("data-expires")) * 1000;
  function tick() {
    var s = Math.max(0, Math.round((end - Date.now()) / 1000));
    el.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    if (s > 0) setTimeout(tick, 1000);
  }
  tick();
})();
