// addonfs admin UI: the one script. Every page works without it; it only adds upload progress
// and loading a metadata file into the form. No innerHTML: text from the server is set as text.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var form = document.getElementById("upload-form");
  if (!form) return;
  var metafile = document.getElementById("metafile");
  var metadata = document.getElementById("metadata");
  var progress = document.getElementById("progress");
  var result = document.getElementById("result");
  var button = document.getElementById("upload");
  metafile.addEventListener("change", function () {
    var f = metafile.files[0];
    if (!f) return;
    var r = new FileReader();
    r.onload = function () { metadata.value = r.result; };
    r.readAsText(f);
  });
  function say(ok, text, link) {
    result.textContent = "";
    var p = document.createElement("p");
    p.className = "flash " + (ok ? "ok" : "error");
    p.id = ok ? "upload-ok" : "upload-error";
    p.textContent = text;
    if (link) {
      var a = document.createElement("a");
      a.href = link.href;
      a.textContent = link.text;
      p.appendChild(document.createTextNode(" "));
      p.appendChild(a);
    }
    result.appendChild(p);
  }
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var data = new FormData();
    // The metadata part first: the server checks its rules before the tarball streams in.
    data.append("metadata", new Blob([metadata.value], { type: "application/json" }), "metadata.json");
    data.append("tarball", document.getElementById("tarball").files[0]);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/ui/upload");
    xhr.setRequestHeader("X-Addonfs-UI", "xhr");
    xhr.upload.onprogress = function (e) {
      if (e.lengthComputable) progress.value = Math.round((100 * e.loaded) / e.total);
    };
    xhr.onload = function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      button.disabled = false;
      if (xhr.status === 200 && body && body.identifier) {
        progress.value = 100;
        say(true, "Registered " + body.identifier + " (" + body.status + ").",
          { href: "/ui/addons/" + encodeURIComponent(body.identifier), text: "Open it" });
      } else if (body && body.message !== undefined) {
        say(false, "Error (code " + body.code + "): " + body.message);
      } else {
        say(false, "Error: HTTP " + xhr.status);
      }
    };
    xhr.onerror = function () { button.disabled = false; say(false, "Error: the upload broke off."); };
    button.disabled = true;
    result.textContent = "Uploading…";
    xhr.send(data);
  });
});
