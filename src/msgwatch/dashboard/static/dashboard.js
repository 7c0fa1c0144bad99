// msgwatch dashboard: the only script of the pages (no library, no inline script).
// - PNG export: a chart's inline <svg> is drawn on a canvas and downloaded as a PNG whose file name
//   carries the view (data-name of the button).
// - The filters form leaves its empty fields out of the URL, so that a permalink holds only the
//   filters set.
// - Heatmap tooltips: a heatmap's cells carry their figures as data-* attributes and no <title>
//   (thousands of them made the page slow); on the first hover the cell gets a <title> written
//   from them, as text, which the browser shows as the tooltip.
"use strict";

(function () {
  function download(blob, name) {
    var url = URL.createObjectURL(blob);
    var link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(url); }, 1000);
  }

  function exportPng(button) {
    var figure = button.closest("figure.chart");
    var svg = figure && figure.querySelector("svg");
    if (!svg) { return; }
    var width = parseFloat(svg.getAttribute("width")) || svg.getBoundingClientRect().width;
    var height = parseFloat(svg.getAttribute("height")) || svg.getBoundingClientRect().height;
    var text = new XMLSerializer().serializeToString(svg);
    if (text.indexOf("xmlns=") < 0) {
      text = text.replace("<svg", '<svg xmlns="http://www.w3.org/2000/svg"');
    }
    var source = URL.createObjectURL(new Blob([text], { type: "image/svg+xml" }));
    var image = new Image();
    image.onload = function () {
      var scale = 2;
      var canvas = document.createElement("canvas");
      canvas.width = Math.ceil(width * scale);
      canvas.height = Math.ceil(height * scale);
      var context = canvas.getContext("2d");
      context.fillStyle = "#ffffff";
      context.fillRect(0, 0, canvas.width, canvas.height);
      context.drawImage(image, 0, 0, canvas.width, canvas.height);
      URL.revokeObjectURL(source);
      canvas.toBlob(function (blob) {
        if (blob) { download(blob, (button.dataset.name || "msgwatch-chart") + ".png"); }
      }, "image/png");
    };
    image.onerror = function () { URL.revokeObjectURL(source); };
    image.src = source;
  }

  function dropEmptyFields(form) {
    form.addEventListener("submit", function () {
      Array.prototype.forEach.call(form.elements, function (field) {
        if (field.name && field.value === "") { field.disabled = true; }
      });
    });
    window.addEventListener("pageshow", function () {
      Array.prototype.forEach.call(form.elements, function (field) { field.disabled = false; });
    });
  }

  function cellTip(mark) {
    var row = mark.closest("g.row");
    var data = mark.dataset;
    var share = data.share === "" ? "n/a" : Math.round(parseFloat(data.share) * 100) + " %";
    var name = row ? row.dataset.service + " \u00b7 " + row.dataset.function + " \u00b7 " : "";
    var tip = document.createElementNS("http://www.w3.org/2000/svg", "title");
    tip.textContent = name + data.bucket + " UTC \u00b7 " + data.state + " \u00b7 " + share +
      " failing \u00b7 n = " + data.n + " measurements (" + data.failing + " failing, " +
      data.ok + " ok)";
    mark.appendChild(tip);
  }

  document.addEventListener("mouseover", function (event) {
    var mark = event.target.closest && event.target.closest("svg.msgwatch-heatmap .mark");
    if (mark && !mark.querySelector("title")) { cellTip(mark); }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest('button[data-export="png"]');
    if (button) { exportPng(button); }
  });
  var form = document.getElementById("filters");
  if (form) { dropEmptyFields(form); }
})();
