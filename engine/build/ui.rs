//! Builds the `ui/` crate to WebAssembly and lays out the files that
//! `danube serve` embeds (`$OUT_DIR/ui`).
//!
//! A nested `cargo build` compiles the app for `wasm32-unknown-unknown`
//! into its own target directory (so it never waits on the outer build's
//! lock), then the `wasm-bindgen` library generates the JavaScript glue.
//! Both come from crates, so no tool binary is downloaded. Without the
//! wasm32 target the binary gets a page saying how to add it, unless
//! `DANUBE_UI_REQUIRED=1` makes that an error (CI sets it).

use std::env;
use std::error::Error;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-unknown-unknown";
const PROFILE: &str = "ui-release";
/// The generated files are `danube_ui.js` and `danube_ui_bg.wasm`.
const OUT_NAME: &str = "danube_ui";

pub fn build() -> Result<(), Box<dyn Error>> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest.parent().ok_or("engine/ has no parent")?.to_owned();
    let ui = root.join("ui");
    for watched in ["src", "style", "static", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", ui.join(watched).display());
    }
    println!(
        "cargo:rerun-if-changed={}",
        root.join("Cargo.lock").display()
    );
    println!("cargo:rerun-if-env-changed=DANUBE_UI_REQUIRED");

    let out = PathBuf::from(env::var("OUT_DIR")?).join("ui");
    if out.exists() {
        fs::remove_dir_all(&out)?;
    }
    fs::create_dir_all(&out)?;
    copy_static(&ui, &out)?;

    if !wasm_target_installed() {
        if env::var("DANUBE_UI_REQUIRED").is_ok_and(|value| value == "1") {
            return Err(format!(
                "DANUBE_UI_REQUIRED=1 but the {WASM_TARGET} target is missing; \
                 run `rustup target add {WASM_TARGET}`"
            )
            .into());
        }
        println!(
            "cargo:warning=the web UI is not built: run `rustup target add {WASM_TARGET}` and build again"
        );
        fs::write(out.join(format!("{OUT_NAME}.js")), MISSING_UI_SCRIPT)?;
        return Ok(());
    }

    let wasm = compile_wasm(&root)?;
    wasm_bindgen_cli_support::Bindgen::new()
        .input_path(&wasm)
        .web(true)?
        .typescript(false)
        .out_name(OUT_NAME)
        .generate(&out)?;
    for name in [
        format!("{OUT_NAME}.js"),
        format!("{OUT_NAME}_bg.wasm"),
        "style.css".to_owned(),
    ] {
        gzip(&out.join(name))?;
    }
    Ok(())
}

/// Copies `ui/static/*` and joins `ui/style/*.css` (by name) into
/// `style.css`.
fn copy_static(ui: &Path, out: &Path) -> Result<(), Box<dyn Error>> {
    for entry in fs::read_dir(ui.join("static"))? {
        let entry = entry?;
        fs::copy(entry.path(), out.join(entry.file_name()))?;
    }

    let mut sheets: Vec<PathBuf> = fs::read_dir(ui.join("style"))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<Result<_, _>>()?;
    sheets.retain(|path| path.extension().is_some_and(|ext| ext == "css"));
    sheets.sort();
    let mut style = String::new();
    for sheet in sheets {
        style.push_str(&fs::read_to_string(&sheet)?);
        style.push('\n');
    }
    fs::write(out.join("style.css"), style)?;
    Ok(())
}

fn wasm_target_installed() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .output();
    let Ok(output) = libdir else {
        return false;
    };
    let path = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    output.status.success() && fs::read_dir(&path).is_ok_and(|mut entries| entries.next().is_some())
}

/// Runs `cargo build` for the UI crate and returns the `.wasm` it made.
fn compile_wasm(root: &Path) -> Result<PathBuf, Box<dyn Error>> {
    let target_dir = outer_target_dir(root).join("ui");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["build", "--package", "danube-ui", "--lib"])
        .args(["--target", WASM_TARGET, "--profile", PROFILE])
        .arg("--target-dir")
        .arg(&target_dir);
    // Flags and wrappers meant for the outer build (clippy's driver, host
    // RUSTFLAGS) do not apply to the wasm build.
    for name in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        command.env_remove(name);
    }
    let status = command.status()?;
    if !status.success() {
        return Err(format!("building the web UI failed ({status}); see the errors above").into());
    }
    Ok(target_dir
        .join(WASM_TARGET)
        .join(PROFILE)
        .join("danube_ui.wasm"))
}

/// The target directory of the outer build: the nearest ancestor of
/// `OUT_DIR` that holds Cargo's `CACHEDIR.TAG`.
fn outer_target_dir(root: &Path) -> PathBuf {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    out.ancestors()
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map_or_else(|| root.join("target"), Path::to_path_buf)
}

fn gzip(path: &Path) -> Result<(), Box<dyn Error>> {
    let bytes = fs::read(path)?;
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    let file = fs::File::create(PathBuf::from(name))?;
    let mut encoder = flate2::write::GzEncoder::new(file, flate2::Compression::best());
    encoder.write_all(&bytes)?;
    encoder.finish()?;
    Ok(())
}

/// Stands in for the app when the wasm32 target was missing at build time.
const MISSING_UI_SCRIPT: &str = r#"export default async function init() {
  document.getElementById("boot").textContent =
    "This danube binary was built without its web UI: run `rustup target add wasm32-unknown-unknown`, " +
    "then build danube again. The HTTP API under /api/v1 works.";
}
"#;
