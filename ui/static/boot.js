// Loads the WebAssembly app; its start function mounts the UI and removes
// the loading note.
import init from "/assets/danube_ui.js";

init({ module_or_path: "/assets/danube_ui_bg.wasm" }).catch((error) => {
  const boot = document.getElementById("boot");
  boot.textContent = "Danube's web UI failed to start: " + error +
    ". Reload the page; if it keeps failing, this browser may lack WebAssembly.";
  boot.classList.add("boot-failed");
});
